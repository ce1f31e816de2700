"""Bad input has its own bounded, evictable share of the journal (issue 23 item 6).

Before: dead letters counted toward ``max_bytes`` and were never evicted, so 34 junk messages from one device made
the journal refuse every other source's results.
"""

from __future__ import annotations

import sqlite3

import pytest

from agent.events.journal import ROW_OVERHEAD, Journal, JournalFull
from agent.runtime import journal_refusal
from tests.unit.test_journal import all_ids, result

KB = 1024


def junk(i: int, n: int = 8 * KB) -> tuple[str, bytes, str]:
    return ("mqtt:devices/ESP-bad", bytes([i % 256]) * n, f"not JSON (message {i})")


def bad_rows(j: Journal) -> list[tuple]:
    return j.reader().execute("SELECT id, reason FROM dead_letters WHERE subscriber IS NULL ORDER BY id").fetchall()


def test_one_devices_junk_cannot_fill_the_journal_for_everyone(tmp_path):
    j = Journal(tmp_path / "j.db", max_bytes=256 * KB)  # bad input's share: a twentieth, 12.8 KB
    try:
        for i in range(34):  # 34 x 8 KB: more than the whole journal
            j.append([], bad_input=[junk(i)])
        for i in range(34, 40):
            j.dead_letter(reason="bad line", origin="cli:publish", raw=b"z" * 8 * KB)
        st = j.stats()
        assert st.bad_input_bytes <= 256 * KB // 20, st.bad_input_bytes
        assert st.bad_input_bytes == sum(8 * KB + ROW_OVERHEAD for _ in bad_rows(j))
        assert st.evicted["bad_input:mqtt:devices/ESP-bad"] == 34 - sum(1 for _ in bad_rows(j)
                                                                         if "message" in _[1])
        assert st.evicted["bad_input:cli:publish"] >= 4
        assert [r[1] for r in bad_rows(j)][-1] == "bad line"  # the newest is kept, the oldest went
        # another device's results still go in, up to what max_bytes leaves
        ok = result(1, pad=1000)
        j.append([ok])
        assert ok.id in all_ids(j)
        assert not st.refused
    finally:
        j.close()


def test_bad_input_gives_way_to_results_when_the_journal_is_full(tmp_path):
    j = Journal(tmp_path / "j.db", max_bytes=128 * KB, bad_input_max_bytes=32 * KB)
    try:
        for i in range(3):
            j.append([], bad_input=[junk(i)])
        accepted = []
        with pytest.raises(JournalFull):
            for i in range(200):
                ev = result(i, pad=900)
                j.append([ev])
                accepted.append(ev.id)
        assert all_ids(j) == accepted  # no result dropped
        st = j.stats()
        assert bad_rows(j) == [] and st.bad_input_bytes == 0
        assert st.evicted["bad_input:mqtt:devices/ESP-bad"] == 3
        assert st.used_bytes <= 128 * KB
        assert st.refused == {"test.result": 1} and st.refused_last_at is not None
        refusing = journal_refusal(st)
        assert refusing is not None and refusing[0] and "refusing" in refusing[1]
        assert journal_refusal(st, now=st.refused_last_at + 3600) == (False, "journal refused 1 events when full, "
                                                                             "the last 60 min ago")
    finally:
        j.close()


def test_a_single_message_larger_than_the_share_is_kept_cut(tmp_path):
    j = Journal(tmp_path / "j.db", max_bytes=256 * KB, bad_input_max_bytes=8 * KB)
    try:
        j.append([], bad_input=[junk(1, n=100 * KB)])
        [dl] = j.dead_letters()
        assert len(dl.body) < 8 * KB and dl.body == bytes([1]) * len(dl.body)
        assert f"of {100 * KB} bytes" in dl.reason and "bad_input_max_bytes" in dl.reason
        assert j.stats().bad_input_bytes <= 8 * KB
    finally:
        j.close()


def test_dropping_bad_input_gives_its_share_back_and_old_journals_are_counted_at_open(tmp_path):
    path = tmp_path / "j.db"
    j = Journal(path, max_bytes=256 * KB)
    try:
        j.append([], bad_input=[junk(1, n=1000), junk(2, n=1000)])
        j.dead_letter(reason="handler failed", event=result(1), subscriber="wats")  # not bad input
        assert j.stats().bad_input_bytes == 2 * (1000 + ROW_OVERHEAD)
        first = j.dead_letters()[0].id
        j.drop_dead_letters([first])
        assert j.stats().bad_input_bytes == 1000 + ROW_OVERHEAD
    finally:
        j.close()
    # a journal written before the share existed has no figure: it is computed from the table at open
    c = sqlite3.connect(path)
    c.execute("DELETE FROM meta WHERE key = 'bad_input_bytes'")
    c.commit()
    c.close()
    j = Journal(path, max_bytes=256 * KB)
    try:
        assert j.stats().bad_input_bytes == 1000 + ROW_OVERHEAD
        j.drop_dead_letters()
        assert j.stats().bad_input_bytes == 0
    finally:
        j.close()
