"""The MQTT source's decisions without a broker: redelivery recognition, routing, rate limits, config errors.

Messages are paho's own ``MQTTMessage`` objects, as the network thread hands them over.
"""

import json
from datetime import datetime, timezone

import paho.mqtt.client as mqtt
import pytest

from agent.config import ConfigError, parse_config
from agent.events import EventBus, Journal
from agent.events.model import decode
from agent.sources.mqtt import DeviceRateLimit, Inbound, MqttSource
from tests.conftest import wait_for


def msg(topic, payload, *, dup=False, qos=1, mid=1):
    m = mqtt.MQTTMessage(mid=mid, topic=topic.encode())
    m.payload = payload
    m.qos = qos
    m.dup = dup
    return m


def batch(*msgs):
    return [Inbound(m, NOW, 0, len(m.payload)) for m in msgs]


def source(journal, extra=""):
    cfg = parse_config(f"[agent]\nstation = \"s\"\n[sources.mqtt]\n{extra}\n").sources.mqtt
    src = MqttSource(cfg, "s")
    bus = EventBus(journal)
    src.set_event_bus(bus)
    src.load_state()
    return src, bus


NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
COUNTERS = b'{"running_count": 3, "total_count": 30}'


def test_redelivery_after_a_crash_is_recognised_but_a_real_repeat_is_not(tmp_path):
    path = tmp_path / "j.db"
    j = Journal(path)
    src, _ = source(j)
    src.ingest(batch(msg("assets/FX-1/counters", COUNTERS)))
    assert len(j.read_after(0, 100)) == 1
    j.close()
    # the agent died before its PUBACK left: the broker sends it again, with DUP set
    j = Journal(path)
    src, _ = source(j)
    src.ingest(batch(msg("assets/FX-1/counters", COUNTERS, dup=True)))
    assert len(j.read_after(0, 100)) == 1
    assert src.counts["duplicates"] == 1
    # the device publishing the same values again (no DUP) is a new message
    src.ingest(batch(msg("assets/FX-1/counters", COUNTERS)))
    assert len(j.read_after(0, 100)) == 2
    # a DUP of something never journaled (lost before we got it) is journaled
    src.ingest(batch(msg("assets/FX-1/counters", b'{"running_count": 4, "total_count": 31}', dup=True)))
    assert len(j.read_after(0, 100)) == 3
    # the same payload as an earlier message, but its own packet id: a real message resent, not a duplicate
    src.ingest(batch(msg("assets/FX-1/counters", COUNTERS, dup=True, mid=2)))
    assert len(j.read_after(0, 100)) == 4
    j.close()


def test_original_and_its_resend_in_one_batch_are_journaled_once(journal):
    src, _ = source(journal)
    src.ingest(batch(msg("assets/FX-1/counters", COUNTERS, mid=7), msg("assets/FX-1/counters", COUNTERS, mid=7,
                                                                      dup=True)))
    assert len(journal.read_after(0, 100)) == 1 and src.counts["duplicates"] == 1


def test_a_batch_the_journal_cannot_take_is_kept_and_tried_again(journal, monkeypatch):
    src, bus = source(journal)
    real = bus.publish_many
    failures = []

    def flaky(events, **kw):
        if len(failures) < 2:
            failures.append(1)
            raise OSError("disk I/O error")
        return real(events, **kw)

    monkeypatch.setattr(bus, "publish_many", flaky)
    monkeypatch.setattr("agent.sources.mqtt.backoff_delay", lambda *a, **k: 0.01)
    src.ingest(batch(msg("assets/FX-1/counters", COUNTERS)))
    assert len(failures) == 2 and len(journal.read_after(0, 100)) == 1
    assert "disk I/O error" in src.get_stats()["last_error"]


def test_a_bug_in_an_adapter_is_a_dead_letter_not_a_stalled_source(journal):
    src, _ = source(journal)

    def broken(m):
        raise KeyError("oops")

    src.routes = [type(src.routes[0])(r.topic, broken if r.topic == "assets/+/counters" else r.adapt, r.qos,
                                      r.device_level) for r in src.routes]
    src.ingest(batch(msg("assets/FX-1/counters", COUNTERS), msg("assets/FX-1/status", b'{"status": "idle"}', mid=2)))
    assert [e.type for e in journal.read_after(0, 100)] == ["asset.state_changed"]
    dl = journal.dead_letters()
    assert len(dl) == 1 and "internal error: KeyError" in dl[0].reason


def test_recognition_window_is_bounded(journal):
    src, _ = source(journal, "receive_maximum = 4\ndedup_window = 4")
    for i in range(6):
        src.ingest(batch(msg("assets/FX-1/counters", b'{"running_count": %d, "total_count": 9}' % i)))
    assert len(journal.get_state(src.recent_key)) == 4
    src.ingest(batch(msg("assets/FX-1/counters", b'{"running_count": 0, "total_count": 9}', dup=True)))
    assert src.counts["duplicates"] == 0  # forgotten: journaled again rather than lost
    src.ingest(batch(msg("assets/FX-1/counters", b'{"running_count": 5, "total_count": 9}', dup=True)))
    assert src.counts["duplicates"] == 1


def test_bad_message_is_remembered_too_so_a_redelivery_is_not_a_second_dead_letter(journal):
    src, bus = source(journal)
    src.ingest(batch(msg("assets/FX-1/counters", b"{nope")))
    src.ingest(batch(msg("assets/FX-1/counters", b"{nope", dup=True)))
    assert len(journal.dead_letters()) == 1 and src.counts["bad"] == 1


def test_site_subscription_is_tried_before_the_default_plan(journal):
    src, _ = source(journal, """
[[sources.mqtt.subscriptions]]
topic = "assets/+/counters"
event_type = "asset.telemetry"
device_field = "asset_id"
fields = { readings = "r", timestamp = "$received" }
""")
    assert src.route_for("assets/X/counters").topic == "assets/+/counters"
    events = src.adapt(msg("assets/X/counters", b'{"r": {"t": 1.5}}'), NOW)
    assert events[0].event_type == "asset.telemetry" and events[0].payload["asset_id"] == "X"
    assert src.route_for("assets/X/status").topic == "assets/+/status"  # the rest of the plan is still there
    assert src.route_for("elsewhere/X") is None
    assert [r.topic for r in src.routes].count("assets/+/counters") == 1


def test_default_plan_can_be_turned_off(journal):
    src, _ = source(journal, 'default_topics = false\n[[sources.mqtt.subscriptions]]\ntopic = "a/#"\nadapter = "asset"')
    assert src.get_subscribed_topics() == ["a/#"]


def test_token_bucket_per_device():
    lim = DeviceRateLimit(rate=2.0, burst=3)
    assert [lim.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert lim.allow("b", 0.0)  # another device has its own bucket
    assert not lim.allow("a", 0.2)  # 0.4 tokens refilled: not yet
    assert lim.allow("a", 0.6)  # 1.2 tokens


@pytest.mark.parametrize("section,needle", [
    ('[sources.mqtt]\nprotocol = "4"', "protocol"),
    ('[sources.mqtt]\ncert_file = "/c"', "key_file"),
    ('[sources.mqtt]\npassword_file = "/p"', "username"),
    ('[sources.mqtt]\nreceive_maximum = 100\ndedup_window = 10', "dedup_window"),
    ('[sources.mqtt]\ndefault_topics = false', "no topics"),
    ('[sources.mqtt]\nmax_payload_bytes = "64KB"\nmax_packet_bytes = "64KB"', "max_packet_bytes"),
    ('[sources.mqtt]\nmax_packet_bytes = "lots"', "max_packet_bytes"),
    ('[[sources.mqtt.subscriptions]]\ntopic = "a/b+/c"\nadapter = "asset"', "topic filter"),
    ('[[sources.mqtt.subscriptions]]\ntopic = "a/#/c"\nadapter = "asset"', "topic filter"),
    ('[[sources.mqtt.subscriptions]]\ntopic = "a/+"\nadapter = "nope"', "adapter"),
    ('[[sources.mqtt.subscriptions]]\ntopic = "a/+"\nevent_type = "asset.counters"', "fields"),
    ('[[sources.mqtt.subscriptions]]\ntopic = "a/+"', "either adapter"),
    ('[sinks.mqtt]\ntopic_prefix = "plant/+/x"', "topic_prefix"),
    ('[sinks.mqtt]\nwindow = 0', "window"),
])
def test_config_errors_name_the_key(section, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(f"[agent]\nstation = \"s\"\n{section}\n", "site.toml")
    assert needle in str(e.value) and "site.toml" in str(e.value)


def test_tls_port_default_and_broker_url():
    cfg = parse_config('[sinks.mqtt]\nca_file = "/etc/ca.crt"\nhost = "plant-broker"').sinks.mqtt
    assert cfg.tls and cfg.port == 8883 and cfg.broker == "mqtts://plant-broker:8883"


def test_source_and_sink_on_one_broker_cannot_share_a_client_id():
    with pytest.raises(ConfigError, match="client_id"):
        parse_config('[agent]\nstation = "s"\n[sources.mqtt]\nname = "telemetry"\n[sinks.mqtt]\n')
    parse_config('[agent]\nstation = "s"\n[sources.mqtt]\nname = "telemetry"\n[sinks.mqtt]\nhost = "plant"\n')


def test_a_dead_letter_the_journal_refuses_does_not_end_the_ingest_thread(journal, monkeypatch):
    """A full disk refusing a bad message's dead letter used to raise out of the worker thread: ingest stopped
    until a restart (found in review of the fault harness's disk-full injection). The dead letter is now written
    with its batch, so the retries keep it once (they wrote it again, and the fault harness counted 13 dead
    letters for 12 bad payloads)."""
    import threading

    from agent.events.journal import JournalError

    src, bus = source(journal)
    real = bus.publish_many
    refusals = []

    def full(*a, **kw):
        if len(refusals) < 2:
            refusals.append(1)
            raise JournalError("journal j.db: write failed: database or disk is full")
        return real(*a, **kw)

    monkeypatch.setattr(bus, "publish_many", full)
    monkeypatch.setattr("agent.sources.mqtt.backoff_delay", lambda *a, **k: 0.01)
    worker = threading.Thread(target=src._work, daemon=True)
    worker.start()
    try:
        for item in batch(msg("assets/FX-1/counters", b"{not json", mid=1)):
            src._inbox.put(item)
        assert wait_for(lambda: len(journal.dead_letters()) == 1, 5)
        for item in batch(msg("assets/FX-1/counters", COUNTERS, mid=2)):
            src._inbox.put(item)
        assert wait_for(lambda: len(journal.read_after(0, 100)) == 1, 5)  # and it goes on ingesting
        assert worker.is_alive() and len(refusals) == 2
        assert len(journal.dead_letters()) == 1
    finally:
        src._stop.set()
        worker.join(5)


def test_a_bad_message_the_broker_resends_after_a_crash_is_kept_once(journal):
    """Killed after the commit and before the PUBACK, the broker sends the bad message again (DUP): its digest,
    committed with its dead letter, recognises it."""
    src, bus = source(journal)
    src.ingest(batch(msg("assets/FX-1/counters", b"{not json", mid=7)))
    again = source(journal)[0]  # the restarted agent: its memory loaded from the journal
    again.ingest(batch(msg("assets/FX-1/counters", b"{not json", mid=7, dup=True)))
    assert len(journal.dead_letters()) == 1 and again.counts["duplicates"] == 1


def counters(running, total, ts=None):
    doc = {"running_count": running, "total_count": total}
    if ts:
        doc["timestamp"] = ts
    return json.dumps(doc).encode()


def test_counters_older_by_the_devices_own_time_are_journaled_marked_stale(tmp_path):
    """Issue 16.5: a counters message stamped 2026-01-26, after values from today, set WATS back."""
    j = Journal(tmp_path / "j.db")
    src, bus = source(j)
    src.ingest(batch(msg("assets/FX-1/counters", counters(40, 1523, "2026-11-23T11:59:00Z"), mid=1),
                     msg("assets/FX-1/counters", counters(3, 1400, "2026-01-26T08:00:00Z"), mid=2),
                     msg("assets/FX-2/counters", counters(1, 1, "2026-01-26T08:00:00Z"), mid=3)))  # another asset
    src.ingest(batch(msg("assets/FX-1/counters", counters(41, 1524, "2026-11-23T11:59:00Z"), mid=4),  # same time
                     msg("assets/FX-1/counters", counters(42, 1525), mid=5)))  # no time of its own
    got = [decode(s.body) for s in j.read_after(0, 100)]
    assert [e.payload["total_count"] for e in got] == [1523, 1400, 1, 1524, 1525]  # all journaled
    stale = [e.payload["total_count"] for e in got if e.metadata.custom.get("stale")]
    assert stale == [1400]
    assert "2026-01-26T08:00:00Z" in got[1].metadata.custom["stale"] and "FX-1" in got[1].metadata.custom["stale"]
    assert src.counts["stale_counters"] == 1
    assert bus.metrics.flagged[("mqtt:mqtt", "stale_counters")] == 1
    j.close()
    # the mark is committed with the events: after a restart an old one is still recognised
    j = Journal(tmp_path / "j.db")
    src, _ = source(j)
    src.ingest(batch(msg("assets/FX-1/counters", counters(5, 1450, "2026-11-23T11:00:00Z"), mid=6)))
    [last] = [decode(s.body) for s in j.read_after(0, 100)][-1:]
    assert last.metadata.custom.get("stale")
    j.close()


def test_a_device_time_far_ahead_does_not_make_every_later_value_stale(journal):
    src, _ = source(journal)
    src.ingest(batch(msg("assets/FX-1/counters", counters(1, 10, "2036-01-01T00:00:00Z"), mid=1),  # clock not set
                     msg("assets/FX-1/counters", counters(2, 11, "2026-11-23T12:01:00Z"), mid=2)))  # NOW + 1 min
    assert not [s for s in journal.read_after(0, 10) if decode(s.body).metadata.custom.get("stale")]


def test_max_packet_bytes_defaults_above_the_payload_bound():
    cfg = parse_config('[agent]\nstation = "s"\n[sources.mqtt]\n').sources.mqtt
    assert cfg.max_packet_bytes == 2**20
    cfg = parse_config('[agent]\nstation = "s"\n[sources.mqtt]\nmax_payload_bytes = "4MB"\n').sources.mqtt
    assert cfg.max_packet_bytes == 2 * cfg.max_payload_bytes


def test_a_status_the_full_disk_refuses_never_kills_the_thread_that_writes_it(journal, monkeypatch):
    """The fault harness's full disk stopped the agent with exit 70, four times in one CI run: the source's status
    write caught only JournalFull, so SQLite's "database or disk is full" (a plain JournalError) raised out of
    paho's on_subscribe callback and the MQTT worker, the thread died and the agent stopped. A status is
    best-effort: it is logged once, the source goes on, and it is written again once the journal takes it."""
    import threading

    from agent.events.journal import JournalError

    src, bus = source(journal)
    real = journal.set_state
    failing = [True]

    def full(key, value):
        if failing[0]:
            raise JournalError("journal j.db: write failed: database or disk is full")
        return real(key, value)

    monkeypatch.setattr(journal, "set_state", full)
    src._subscribing = {"assets/+/counters": 1}
    src._on_subscribe(None, None, 1, [mqtt.ReasonCode(mqtt.PacketTypes.SUBACK, identifier=1)], None)  # raised
    src._record_status(force=True)  # raised
    worker = threading.Thread(target=src._work, daemon=True)
    worker.start()
    try:
        for item in batch(msg("assets/FX-1/counters", COUNTERS, mid=2)):
            src._inbox.put(item)
        assert wait_for(lambda: len(journal.read_after(0, 100)) == 1, 5)
        assert worker.is_alive()
        failing[0] = False
        src._record_status(force=True)
        assert journal.get_state("source:mqtt:mqtt")["received"] == 1  # recorded again once the journal takes it
    finally:
        src._stop.set()
        worker.join(5)
