"""The uplink's dead letters that wait for a part-number rule, and what ``status`` says of the uplink."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...events.model import Event, EventType, decode
from ...protocols.wsjf import recipe_of
from .routes import SENT_TYPES

if TYPE_CHECKING:
    import sqlite3

#: how a dead letter for a result without a part number begins: ``status`` groups them by recipe, and the uplink
#: hands them back once a new ``[[sinks.wats.products]]`` rule (or a default) gives them one
NO_PART_NUMBER = "waiting for a part-number rule: "
#: how versions before the part-number rules said it: their dead letters are handed back too
LEGACY_NO_PART_NUMBER = "cannot build a WSJF report: part_number is required"


def waiting_for_part_number(conn: "sqlite3.Connection") -> list[tuple[int, Event | None]]:
    """The uplink's dead letters that wait for a part-number rule: (dead-letter id, the event)."""
    out = []
    rows = conn.execute("SELECT id, body FROM dead_letters WHERE subscriber = 'wats' AND (instr(reason, ?) > 0 "
                        "OR instr(reason, ?) > 0) ORDER BY id", (NO_PART_NUMBER.strip(), LEGACY_NO_PART_NUMBER))
    for dl_id, body in rows:
        try:
            out.append((dl_id, decode(body)))
        except Exception:  # noqa: BLE001 - an undecodable row is shown by dlq list; not ours to judge here
            out.append((dl_id, None))
    return out


def waiting_recipes(conn: "sqlite3.Connection") -> dict[str, int]:
    """For ``status``: how many results wait for a part-number rule, per recipe (``"(none)"`` without one)."""
    counts: dict[str, int] = {}
    for _, event in waiting_for_part_number(conn):
        recipe = recipe_of(event.payload)[0] if event is not None else None
        counts[recipe or "(none)"] = counts.get(recipe or "(none)", 0) + 1
    return counts


def status(config: Any, section: Any, conn: "sqlite3.Connection") -> dict:
    """What ``status --json`` says of the uplink beyond its subscriber row (the plugin's status hook)."""
    return {"sends": list(SENT_TYPES), "not_sent": [t.value for t in EventType if t.value not in SENT_TYPES],
            "waiting_for_part_number": waiting_recipes(conn)}


def status_lines(doc: dict) -> list[str]:
    """The words ``status`` prints under the uplink's subscriber row; a line starting "!!" needs someone to act."""
    lines = [f"sends: {', '.join(doc['sends'])}", f"not sent to WATS: {', '.join(doc['not_sent'])}"]
    waiting = doc["waiting_for_part_number"]
    if waiting:
        lines.append(f"!! {sum(waiting.values())} result(s) wait for a part-number rule ([[sinks.wats.products]]; "
                     "they are sent at the next start once one matches): "
                     + ", ".join(f"recipe {r} ({n})" for r, n in sorted(waiting.items())))
    return lines
