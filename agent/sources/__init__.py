"""Sources: outside signal → normalized Event. Each declares itself in ``<name>_plugin.py`` (its config section,
its needs, its build); this table is the one place that lists them, in the order of ``[sources]``'s keys."""

PLUGINS: dict[str, str] = {
    "simulated": "agent.sources.simulated_plugin",
    "serial": "agent.sources.serial_plugin",
    "gpio": "agent.sources.gpio_plugin",
    "mqtt": "agent.sources.mqtt_plugin",
    "cfx": "agent.sources.cfx_plugin",
}
