"""Sinks: durable subscribers that forward events to the outside (WATS, MQTT, CFX)."""
