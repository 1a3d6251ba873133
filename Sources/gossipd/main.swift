print("gossipd")
