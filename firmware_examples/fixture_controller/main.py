# Runs at boot. Settings are in config.json; see README.md.
import json

from controller import Controller

with open("config.json") as f:
    Controller(json.load(f)).run()
