"""The topics and JSON payloads fixture-agent's MQTT ingest reads (the agent's docs/mqtt.md, the seed's topic plan).

Counters are absolute, so a message lost or repeated cannot skew them. Every payload carries the time it was made
(when the clock is set): a message sent late from the buffer keeps the time it happened.
"""
import json

from clock import utc_iso


def topic(family, device_id, kind):
    return "%s/%s/%s" % (family, device_id, kind)


def _doc(body):
    ts = utc_iso()
    if ts:
        body["timestamp"] = ts
    return json.dumps(body)


def counters(running, total):
    return _doc({"running_count": running, "total_count": total})


def status(word, **extra):
    """Status is retained and never stamped: it is the device's state now, not an event in its history."""
    body = {"status": word}
    body.update(extra)
    return json.dumps(body)


def environment(readings, units):
    return _doc({"environment": readings, "units": units})


def selftest(result, duration_ms, steps):
    """steps: dicts with name, value, unit, low, high; the agent judges each value against its limits itself."""
    return _doc({"result": result, "duration_ms": duration_ms, "steps": steps})
