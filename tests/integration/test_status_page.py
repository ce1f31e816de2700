"""The status page at ``/`` in a real browser (headless Chromium over the DevTools protocol, ``tests/browser.py``),
served by the agent as a real process in three states: all flowing, WATS paused with a backlog, dead letters
present (among them a ``<script>`` payload); at a desktop's and at a phone's width; and ``status --html``.

Screenshots are kept in the test's tmp dir (their paths are printed: ``pytest -s`` shows them).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from agent import __version__
from agent.events.ids import clock_synchronized
from tests.agent_process import agent_log, start_agent, status, stop_agent
from tests.browser import Browser
from tests.conftest import free_port, run_cli, wait_for
from tests.wats_standin import WatsStandIn

TOKEN = "c2VjcmV0LXVzZXI6czNjcjN0LXBhc3N3b3Jk"  # what must never appear on the page
SCRIPT = "<script>window.__pwned = 1</script>"
XSS = SCRIPT + "<img src=x onerror=\"window.__pwned = 2\">"


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


@pytest.fixture
def wats():
    s = WatsStandIn(token=TOKEN)
    yield s
    s.close()


def agent_config(write_config, tmp_path: Path, wats: WatsStandIn, port: int, token: bool = True) -> Path:
    token_file = tmp_path / "wats.token"
    if token:
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
    elif token_file.exists():
        token_file.unlink()
    return write_config(f"""
        [sinks.wats]
        url = "{wats.url}"
        token_file = "{token_file}"
        process_codes = {{ test = 50, selftest = 90, poll = 90 }}
        default_process_code = 50
        default_part_number = "PN-1"
        require_clock_sync = false
        requests_per_minute = 100000
        retry_max = "1s"
        timeout = "2s"
    """, simulated=True, metrics_port=port)


def fetch(port: int, path: str = "/") -> tuple[int, str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def shoot(browser: Browser, tmp_path: Path, name: str) -> Path:
    path = browser.screenshot(tmp_path / f"status-page-{name}.png")
    print(f"screenshot: {path}")
    assert path.stat().st_size > 5000  # a picture, not an empty canvas
    return path


def page_facts(browser: Browser) -> dict:
    """What the assertions read, from the DOM as the browser built it."""
    return browser.eval("""(() => {
        const q = s => document.querySelector(s), all = s => [...document.querySelectorAll(s)];
        const subs = {};
        for (const tr of all('tr.subscriber')) {
            const detail = q(`tr.detail[data-for="${tr.dataset.name}"]`);
            subs[tr.dataset.name] = {state: tr.dataset.state, backlog: +tr.dataset.backlog,
                                     why: detail ? detail.innerText : ''};
        }
        return {
            station: q('#station').textContent, version: q('#version').textContent,
            uptime: q('#uptime').textContent, clock: q('#clock').dataset.synced,
            health: q('#health') ? q('#health').dataset.status : null,
            subscribers: subs,
            sources: Object.fromEntries(all('tr.source').map(tr => [tr.dataset.name,
                {online: tr.dataset.online === 'true', last: tr.querySelector('.last').innerText}])),
            results: all('tr.result').map(tr => tr.dataset.result),
            counters: all('tr.counter').map(tr => tr.dataset.asset),
            fill: q('#journal-fill') ? +q('#journal-fill').dataset.fill : null,
            plots: all('figure.plot').map(f => [f.id, +f.dataset.points, f.querySelectorAll('polyline').length]),
            dead: all('tr.dead-letter').map(tr => ({id: +tr.dataset.id,
                reason: tr.querySelector('.reason').textContent,
                body: tr.querySelector('.body') ? tr.querySelector('.body').textContent : ''})),
            deadCount: +q('#dead-letters').dataset.count,
            scripts: document.querySelectorAll('script').length,
            pwned: window.__pwned === undefined ? null : window.__pwned,
            text: document.body.innerText,
            live: q('#generated').dataset.live,
            refresh: (q('meta[http-equiv="refresh"]') || {}).content || null,
            width: [window.innerWidth, document.documentElement.scrollWidth],
        };
    })()""")


def look(browser: Browser, url: str, tmp_path: Path, name: str) -> tuple[dict, dict]:
    """The page at a desktop's width and at a phone's (390 px, as an iPhone 12-15), a screenshot of each."""
    browser.viewport(1280, 900)
    browser.load(url)
    wide = page_facts(browser)
    shoot(browser, tmp_path, f"{name}-wide")
    browser.viewport(390, 844, mobile=True, scale=2)
    browser.load(url)
    phone = page_facts(browser)
    shoot(browser, tmp_path, f"{name}-phone")
    assert phone["width"][1] <= phone["width"][0], f"the page scrolls sideways on a phone: {phone['width']}"
    return wide, phone


def test_status_page_in_a_browser_flowing_paused_and_dead_letters(browser, wats, write_config, tmp_path):
    port = free_port()
    cfg = agent_config(write_config, tmp_path, wats, port)
    url = f"http://127.0.0.1:{port}/"
    agent = start_agent(cfg)
    try:
        # 1. all flowing: the simulated station's results (ten a second) reach the stand-in as they come
        assert wait_for(lambda: wats.unique_reports >= 5, 60), agent_log(agent)[-2000:]
        assert wait_for(lambda: all(s["backlog"] <= 20 and s["state"] == "running"
                                    for s in status(cfg)["subscribers"]), 30), status(cfg)["subscribers"]
        code, ctype, raw = fetch(port)
        assert code == 200 and ctype.startswith("text/html")
        assert TOKEN not in raw
        wide, phone = look(browser, url, tmp_path, "flowing")
        for facts in (wide, phone):
            assert facts["station"] == "test-station"
            assert __version__ in facts["version"]
            assert facts["uptime"].startswith("up ")
            assert facts["clock"] == str(clock_synchronized()).lower()  # as the kernel says (adjtimex)
            assert facts["subscribers"]["wats"]["state"] == "running"
            assert facts["subscribers"]["wats"]["backlog"] <= 50
            assert facts["subscribers"]["wats"]["why"] == ""
            assert facts["sources"]["simulated"]["online"] is True
            assert "ago" in facts["sources"]["simulated"]["last"]
            assert set(facts["results"]) <= {"pass", "fail"} and len(facts["results"]) >= 5
            assert facts["counters"] == ["SIM-FIXTURE-1"]
            assert 0 <= facts["fill"] < 0.01
            assert [(p[0], p[1] >= 2, p[2] >= 1) for p in facts["plots"]] == [
                ("plot-backlog", True, True), ("plot-rate", True, True)]
            assert facts["deadCount"] == 0 and facts["dead"] == []
            assert facts["live"] == "true" and facts["refresh"] == "15"
            assert facts["scripts"] == 0
            assert TOKEN not in facts["text"]
        assert phone["health"] in ("ok", "degraded")  # degraded only for the clock, never for a subscriber
        if phone["health"] == "degraded":
            assert "subscriber" not in phone["text"].split("UPLINKS")[0]
    finally:
        stop_agent(agent)

    # 2. WATS paused with a backlog: the token file is gone; the page says why in words
    cfg = agent_config(write_config, tmp_path, wats, port, token=False)
    agent = start_agent(cfg)
    try:
        assert wait_for(lambda: any(s["name"] == "wats" and s["state"] == "paused" and s["backlog"] >= 3
                                    for s in status(cfg)["subscribers"]), 60), agent_log(agent)[-2000:]
        # 3. dead letters: bad input with a <script> payload, through the CLI as a script would send it
        bad = json.dumps({"type": "test.result", "payload": {"unit_id": XSS, "result": XSS,
                                                             "start_time": "2026-01-01T00:00:00Z"}})
        odd_type = json.dumps({"type": XSS, "payload": {"note": XSS}})  # a type nobody sends: journaled, shown
        proc = run_cli("publish", "-c", str(cfg), "--stdin",
                       input=bad + "\n" + "{not json " + XSS + "\n" + odd_type + "\n")
        assert proc.returncode == 1, proc.stderr
        good = json.dumps({"unit_id": XSS, "result": "fail", "start_time": "2026-01-01T00:00:00Z"})
        run_cli("publish", "-c", str(cfg), "--type", "test.result", "--payload", good, check=True)
        wide, phone = look(browser, url, tmp_path, "paused-dead-letters")
        for facts in (wide, phone):
            wats_row = facts["subscribers"]["wats"]
            assert wats_row["state"] == "paused" and wats_row["backlog"] >= 3
            assert "paused: not sending until the cause below is fixed" in wats_row["why"]
            assert "no WATS token" in wats_row["why"] and str(tmp_path / "wats.token") in wats_row["why"]
            assert facts["health"] == "degraded"
            assert facts["deadCount"] == 2
            newest, older = facts["dead"]
            assert newest["id"] > older["id"]  # newest first
            assert "not JSON" in newest["reason"] and XSS in newest["body"]
            assert XSS in older["reason"] and SCRIPT in older["body"]  # the device's bytes (JSON), shown as text
            assert XSS in facts["text"]  # the unit id of the result, as text
            assert "fail" in facts["results"]
            assert facts["scripts"] == 0 and facts["pwned"] is None  # nothing from a device ran
            assert TOKEN not in facts["text"]
        assert TOKEN not in fetch(port)[2]
    finally:
        stop_agent(agent)

    # 4. the agent stopped: status --html writes the same page from the journal
    out = tmp_path / "status.html"
    proc = run_cli("status", "-c", str(cfg), "--html", str(out))
    assert proc.returncode == 0, proc.stderr
    written = out.read_text()
    assert "<script" not in written and "&lt;script" in written  # every one escaped
    wide, phone = look(browser, out.as_uri(), tmp_path, "offline")
    for facts in (wide, phone):
        assert facts["station"] == "test-station" and facts["live"] == "false" and facts["refresh"] is None
        assert "not running" in facts["text"]
        assert facts["subscribers"]["wats"]["state"] == "stopped"  # with the agent
        assert "the agent is not running" in facts["subscribers"]["wats"]["why"]
        assert "no WATS token" in facts["subscribers"]["wats"]["why"]
        assert facts["deadCount"] == 2 and XSS in facts["dead"][0]["body"]
        assert XSS in facts["text"]  # the odd event type, among the events per minute
        assert facts["scripts"] == 0 and facts["pwned"] is None
        assert [p[0] for p in facts["plots"]] == ["plot-backlog", "plot-rate"]
        assert TOKEN not in facts["text"]


def test_page_is_only_imported_when_asked_for(write_config, tmp_path):
    """The page's module costs the idle agent nothing: an agent built whole (its listener, its sampler) has not
    imported it; the first request for ``/`` does."""
    cfg = write_config(simulated=True, metrics_port=free_port())
    script = f"""
import sys
from agent.config import load_config
from agent.runtime import Agent
a = Agent(load_config({str(cfg)!r}))
a.build()
try:
    print("agent.statuspage" in sys.modules, a.health_server is not None, a.activity is not None)
    page = a.status_page()
    print("agent.statuspage" in sys.modules, page.startswith("<!DOCTYPE html>"))
finally:
    a.close()
"""
    import subprocess
    import sys

    from tests.conftest import ROOT

    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "True", "True", "True"]
