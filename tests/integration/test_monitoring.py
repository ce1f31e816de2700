"""deploy/monitoring/: the alert rules pass ``promtool check rules`` and their own ``promtool test rules`` (each
alert fires on its input series and stays quiet on a near miss), every metric the rules and the Grafana dashboard
name is one a running agent exports on /metrics, and the Prometheus target list written from the Ansible inventory
is what Prometheus reads (``promtool check config``).

promtool is Debian's prometheus package (scripts/test installs it as root); without it these tests skip saying so.
The target list is rendered by the pinned ansible-core of the deploy test's cached venv (made on first use).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.agent_process import start_agent, stop_agent
from tests.conftest import ROOT, free_port, wait_for

MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "fixture-agent.rules.yml"
RULE_TESTS = MONITORING / "fixture-agent.rules.test.yml"
DASHBOARD = MONITORING / "fixture-agent-dashboard.json"
INVENTORY = ROOT / "deploy" / "ansible" / "inventory" / "example"
#: series Prometheus makes itself for every target: not the agent's to export
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian's prometheus "
                                                              "package: scripts/test installs it when run as root)")


def promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def alert_rules(path: Path = RULES) -> list[dict]:
    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"] if "alert" in r]


# ------------------------------------------------------------------------------------------------ metric names
_FUNCTIONS_AND_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                        "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana ``label_values(…)`` query) reads: every identifier
    that is not a function call, a keyword, a label inside ``{…}`` or a ``by (…)``/``on (…)`` list, a string, a
    duration or a number. Strict on purpose: a misspelt metric is still an identifier and is found."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, "$station")
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range and subquery durations
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)  # label lists
    e = re.sub(r"^label_values\((.*),\s*[A-Za-z_]\w*\)$", r"\1", e.strip())  # Grafana: the metric, not the label
    names = set()
    for m in re.finditer(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _FUNCTIONS_AND_WORDS:
            continue
        names.add(word)
    return names


def test_metric_names_finds_names_and_only_names():
    assert metric_names('sum by (type) (rate(fixture_agent_events_published_total{job="x", station=~"$s"}[5m])) * 60') \
        == {"fixture_agent_events_published_total"}
    assert metric_names('deriv(a_b[10m]) > 0 and on (instance) c >= 10') == {"a_b", "c"}
    assert metric_names('label_values(up{job="fixture-agent", line=~"$line"}, station)') == {"up"}
    assert metric_names("fixture_agent_journal_byte / fixture_agent_journal_max_bytes > 0.8") == {
        "fixture_agent_journal_byte", "fixture_agent_journal_max_bytes"}


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, query) of every panel target and every query variable of the dashboard."""
    doc = json.loads(DASHBOARD.read_text())
    out = [(f"panel {p['title']!r}", t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]
    for v in doc["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((f"variable ${v['name']}", q))
    return out


def exported_metric_names(write_config, tmp_path: Path) -> set[str]:
    """The metric families a running agent declares on /metrics (``# TYPE`` lines: a family with no sample yet,
    such as dead letters before the first, is still declared), from the agent as a real process with a source
    and a sink, so the per-subscriber families are there too."""
    port = free_port()
    cfg = write_config(f"""
        [sinks.wats]
        url = "http://127.0.0.1:{free_port()}"
        default_process_code = 10
        default_part_number = "PN"
        require_clock_sync = false
        token_env = "FIXTURE_AGENT_TEST_NO_SUCH_TOKEN"
    """, simulated=True, metrics_port=port)
    agent = start_agent(cfg)
    text = ""
    try:
        def scraped() -> bool:
            nonlocal text
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                return False
            return 'fixture_agent_subscriber_backlog{subscriber="wats"}' in text

        assert wait_for(scraped, timeout=30, interval=0.2), text
    finally:
        stop_agent(agent)
    return set(re.findall(r"^# TYPE (\S+) \w+$", text, re.MULTILINE))


def test_every_metric_the_rules_and_the_dashboard_use_is_one_the_agent_exports(write_config, tmp_path):
    exported = exported_metric_names(write_config, tmp_path)
    assert {"fixture_agent_subscriber_backlog", "fixture_agent_clock_synchronized", "fixture_agent_info"} <= exported
    used: dict[str, set[str]] = {}
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(f"alert {rule['alert']}")
    for where, query in dashboard_queries():
        for name in metric_names(query):
            used.setdefault(name, set()).add(f"dashboard {where}")
    unknown = {n: sorted(w) for n, w in used.items() if n not in exported | PROMETHEUS_OWN}
    assert not unknown, f"not exported by the agent: {unknown}"
    # what the issue asks the dashboard and the rules to show is there
    for name in ("fixture_agent_subscriber_backlog", "fixture_agent_subscriber_oldest_unacked_seconds",
                 "fixture_agent_dead_letters", "fixture_agent_events_published_total", "fixture_agent_journal_bytes",
                 "fixture_agent_journal_max_bytes", "fixture_agent_clock_synchronized", "up"):
        assert any(w.startswith("dashboard") for w in used.get(name, ())), f"the dashboard shows no {name}"
        assert name == "fixture_agent_events_published_total" or any(w.startswith("alert") for w in used[name]), \
            f"no alert on {name}"


def test_the_dashboard_is_importable_json_with_a_datasource_variable():
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] and doc["panels"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in doc["templating"]["list"])
    for p in doc["panels"]:
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            assert 'job="fixture-agent"' in t["expr"], (p["title"], t["expr"])


# ------------------------------------------------------------------------------------------------ promtool
@needs_promtool
def test_promtool_checks_the_rules():
    proc = promtool("check", "rules", RULES.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in proc.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_rules_pass_and_cover_every_alert():
    proc = promtool("test", "rules", RULE_TESTS.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
    fires: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            target = fires if case.get("exp_alerts") else quiet
            target[case["alertname"]] = target.get(case["alertname"], 0) + 1
    names = {r["alert"] for r in alert_rules()}
    assert names == set(fires), f"alerts no test makes fire: {names - set(fires)}"
    assert names == set(quiet), f"alerts no test checks stay quiet: {names - set(quiet)}"


@needs_promtool
@pytest.mark.parametrize("alert", [r["alert"] for r in alert_rules()])
def test_an_alert_that_never_fires_fails_the_unit_tests(alert, tmp_path):
    """The unit tests can fail: with one alert's expression made one that never fires, promtool says so."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = "vector(0) > 1"
    (tmp_path / RULES.name).write_text(yaml.safe_dump(doc))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    proc = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert proc.returncode != 0
    assert f"alertname: {alert}," in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------------ the targets
@pytest.fixture(scope="module")
def ansible_bin() -> Path:
    from tests.deploy.ansible_tools import ansible_venv

    return ansible_venv() / "bin"


def render_targets(ansible_bin: Path, out: Path, extra: dict) -> subprocess.CompletedProcess:
    vars_file = out.with_suffix(".vars.json")
    vars_file.write_text(json.dumps({"prometheus_targets_file": str(out), **extra}))
    env = {"PATH": f"{ansible_bin}:/usr/bin:/bin", "HOME": str(out.parent), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "ANSIBLE_CONFIG": str(ROOT / "deploy" / "ansible" / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(out.parent / "ansible-tmp")}
    return subprocess.run([str(ansible_bin / "ansible-playbook"), "-i", str(INVENTORY), "prometheus-targets.yml",
                           "-e", f"@{vars_file}"], cwd=MONITORING, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_target_list_is_written_from_the_inventory(ansible_bin, tmp_path):
    expected = [{"targets": ["192.168.10.31:9108"], "labels": {"station": "ict-line3-01", "line": "line3"}},
                {"targets": ["192.168.10.32:9108"], "labels": {"station": "fct-line3-02", "line": "line3"}}]
    # the two ways a site opens /metrics to its scraper: the Pi's own address, or every address (0.0.0.0)
    for name, listen in (("own-address", "{{ ansible_host }}:9108"), ("any", "0.0.0.0:9108")):
        out = tmp_path / f"{name}.json"
        run = render_targets(ansible_bin, out, {"fixture_agent_metrics": {"enabled": True, "listen": listen}})
        assert run.returncode == 0, run.stdout + run.stderr
        assert json.loads(out.read_text()) == expected, name
    # Prometheus reads it: the example scrape config with the rendered list beside it
    for f in ("prometheus.yml", RULES.name):
        shutil.copy(MONITORING / f, tmp_path / f)
    shutil.copy(tmp_path / "any.json", tmp_path / "fixture-agents.json")
    if PROMTOOL is not None:
        check = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "SUCCESS" in check.stdout + check.stderr


def test_agents_listening_on_loopback_only_are_refused_by_name(ansible_bin, tmp_path):
    """The example inventory keeps /metrics on 127.0.0.1 (the role's default): no other machine can scrape it."""
    out = tmp_path / "targets.json"
    run = render_targets(ansible_bin, out, {})
    assert run.returncode != 0
    text = run.stdout + run.stderr
    assert "listens on loopback only on ict-line3-01, fct-line3-02" in text
    assert not out.exists()
    # one line's hosts (fixture_hosts), each at the address its listen names
    run = render_targets(ansible_bin, out, {"fixture_hosts": "line3", "fixture_agent_metrics": {
        "listen": "10.0.0.5:9200"}})
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(out.read_text()) == [
        {"targets": ["10.0.0.5:9200"], "labels": {"station": station, "line": "line3"}}
        for station in ("ict-line3-01", "fct-line3-02")]
