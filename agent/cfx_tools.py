"""``fixture-agent cfx samples``: the CFX messages the agent maps, as samples, and what each becomes: its events, what
the WATS uplink does with each, and the WSJF report it would send. A tool that spans the CFX source's mapping and
the WATS uplink, so it lives here rather than in the core's CLI."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import msgspec

from .config import load_config


def _out(args: argparse.Namespace, doc: Any, text: str) -> None:
    print(json.dumps(doc, indent=2, default=str) if getattr(args, "json", False) else text)


def samples(args: argparse.Namespace) -> int:
    """``fixture-agent cfx samples``: list, show or convert the CFX sample messages."""
    from .protocols import cfx
    from .protocols.cfx_mapping import to_events
    from .protocols.cfx_samples import SAMPLES

    if args.list:
        _out(args, {n: d for n, (d, _) in SAMPLES.items()},
             "\n".join(f"{n:<24} {SAMPLES[n][1]['MessageName']:<48} {d}" for n, (d, _) in SAMPLES.items()))
        return 0
    name = args.show or args.convert
    if name not in SAMPLES:
        print(f"fixture-agent cfx samples: no sample {name!r}; --list shows them", file=sys.stderr)
        return 2
    doc = SAMPLES[name][1]
    if args.show:
        print(json.dumps(doc, indent=2))
        return 0
    from .protocols.wsjf import MappingError, Station, to_wsjf
    from .sinks.wats import ROUTES

    events = to_events(cfx.decode(cfx.encode(doc))[0], "cfx:samples")
    station = Station(machine_name="fixture-agent-demo", location="Demo line", purpose="Demo",
                      process_codes={}, default_process_code=10, default_part_number="CFX-SAMPLE",
                      recipe_as_part_number=True)
    if args.config:
        cfg = load_config(args.config)
        if cfg.sinks.wats is not None:
            from .sinks.wats import station_for

            station = station_for(cfg.sinks.wats, station=cfg.agent.station, location=cfg.agent.location or "-",
                                  purpose=cfg.agent.purpose or "-")
    out = []
    for e in events:
        entry: dict[str, Any] = {"event": json.loads(msgspec.json.encode(e)), "wats": ROUTES.get(e.event_type,
                                                                                                    "not sent to WATS")}
        if e.event_type in ("test.result", "inspection.result"):
            try:
                entry["wsjf"] = to_wsjf(e, station)
            except MappingError as err:
                entry["wsjf_error"] = str(err)
        out.append(entry)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    for entry in out:
        print(f"{entry['event']['event_type']}  →  WATS: {entry['wats']}")
        print(json.dumps(entry["event"]["payload"], indent=2, default=str))
        if "wsjf" in entry:
            print("WSJF report:")
            print(json.dumps(entry["wsjf"], indent=2, default=str))
        if "wsjf_error" in entry:
            print(f"not a WATS report: {entry['wsjf_error']}")
        print()
    return 0
