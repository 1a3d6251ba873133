print("framedump")
