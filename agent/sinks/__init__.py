"""Sinks: the journal's events → a far end. Each declares itself in ``<name>_plugin.py`` (its config section, its
needs, its build, its status); this table is the one place that lists them, in the order of ``[sinks]``'s keys."""

PLUGINS: dict[str, str] = {
    "wats": "agent.sinks.wats_plugin",
    "mqtt": "agent.sinks.mqtt_plugin",
    "cfx": "agent.sinks.cfx_plugin",
}
