"""Wire formats that are not I/O (WSJF mapping, CFX envelopes, serial line protocols)."""
