"""Fuzzing of the parsers that read outside input (hypothesis). Shared strategies live in ``strategies.py``."""
