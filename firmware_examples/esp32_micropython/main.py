# Runs at boot (after boot.py). Settings are in config.json; see README.md.
import json

from device import Device

with open("config.json") as f:
    Device(json.load(f)).run()
