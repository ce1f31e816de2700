"""MicroPython's name for struct (umqtt.simple imports it)."""
from struct import *  # noqa: F401,F403
