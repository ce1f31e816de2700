"""The benchmarks still run (small counts): a benchmark that rots is worse than none."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_bench_quick_runs_and_reports_every_figure():
    out = subprocess.run([sys.executable, "bench/run.py", "--quick", "--no-write"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert set(doc) >= {"publish_8_threads", "publish_many", "publish_stdin", "serial", "memory", "import",
                        "wats_drain", "mqtt", "cfx", "disk_writes"}
    assert doc["publish_8_threads"]["events_per_commit"] > 1  # group commit happened
    assert doc["serial"]["agent_lines_per_s_durable"] > 0
    assert doc["memory"]["demo_config"]["rss_mb_max"] > 5
    assert doc["wats_drain"]["agent_reports_per_s"] > 0 and doc["wats_drain"]["bare_httpx_posts_per_s"] > 0
    assert doc["mqtt"]["telemetry"]["agent_events_per_s"] > 0 and doc["mqtt"]["ingest"]["agent_durable_events_per_s"] > 0
    assert doc["cfx"]["agent_messages_per_s"] > 0 and doc["cfx"]["bare_proton_per_s"] > 0
    assert doc["disk_writes"]["raw_sqlite_bytes_per_event"] > doc["disk_writes"]["event_bytes"]  # fsync'd pages
