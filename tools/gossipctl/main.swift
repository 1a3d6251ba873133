print("gossipctl")
