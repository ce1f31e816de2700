"""Connections: one broker link each, shared by the source and the sink of a protocol (MQTT: paho; AMQP 1.0 for
CFX: a proton container on its own thread), and the config sections that say how to reach the broker. The
``*_config`` modules import only msgspec (config parsing never pays for paho or proton); the connections import
their library, and only when a section that needs it is configured."""
