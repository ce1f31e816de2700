"""MicroPython's name for binascii (umqtt.simple imports it)."""
from binascii import *  # noqa: F401,F403
