"""Sources: outside signal → normalized Event. Each is one module and one config section."""
