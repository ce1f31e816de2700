import json
import os
import socket
import sqlite3

import pytest

from tests.conftest import run_cli

RESULT = {"unit_id": "SN1", "result": "pass", "start_time": "2026-01-01T00:00:00Z"}


def test_version():
    out = run_cli("--version", check=True)
    assert out.stdout.startswith("fixture-agent ")


def test_publish_events_status_round_trip(write_config):
    cfg = str(write_config())
    out = run_cli("publish", "-c", cfg, "--type", "test.result", "--payload", json.dumps(RESULT), check=True)
    event_id = out.stdout.strip()
    assert len(event_id) == 36
    events = json.loads(run_cli("events", "-c", cfg, "--json", check=True).stdout)
    assert [e["metadata"]["event_id"] for e in events] == [event_id]
    assert events[0]["payload"]["unit_id"] == "SN1" and events[0]["metadata"]["custom"]["station"] == "test-station"
    status = json.loads(run_cli("status", "-c", cfg, "--json", check=True).stdout)
    assert status["journal"]["events"] == 1 and status["dead_letters"] == 0
    assert status["agent_running"] is False
    text = run_cli("events", "-c", cfg, "--type", "asset.counters", check=True).stdout
    assert "(no events)" in text


def test_publish_rejects_invalid_payload_naming_the_field(write_config):
    cfg = str(write_config())
    bad = dict(RESULT, result="Passed")
    out = run_cli("publish", "-c", cfg, "--type", "test.result", "--payload", json.dumps(bad))
    assert out.returncode == 1 and out.stdout == ""
    assert "$.result" in out.stderr and "Passed" in out.stderr
    out = run_cli("publish", "-c", cfg, "--type", "custom", "--payload", "{oops")
    assert out.returncode == 1 and "--payload: not JSON" in out.stderr and "Traceback" not in out.stderr


def test_publish_stdin_keeps_good_lines_and_dead_letters_bad_ones(write_config):
    cfg = str(write_config())
    lines = [
        json.dumps({"type": "test.result", "payload": RESULT, "source": "script", "correlation_id": "lot-7"}),
        "{not json",
        json.dumps({"type": "test.result", "payload": dict(RESULT, result="maybe")}),
        json.dumps({"type": "custom", "payload": {"n": 1}, "occurred_at": "2026-03-01T10:00:00+02:00"}),
        "",
    ]
    out = run_cli("publish", "-c", cfg, "--stdin", input="\n".join(lines) + "\n")
    assert out.returncode == 1
    ids = out.stdout.split()
    assert len(ids) == 2
    assert "stdin line 2: not JSON" in out.stderr
    assert "stdin line 3" in out.stderr and "$.result" in out.stderr
    events = json.loads(run_cli("events", "-c", cfg, "--json", check=True).stdout)
    assert [e["metadata"]["event_id"] for e in events] == ids
    assert events[0]["metadata"]["source"] == "script" and events[0]["metadata"]["correlation_id"] == "lot-7"
    assert events[1]["metadata"]["timestamp"] == "2026-03-01T08:00:00Z"
    dlq = json.loads(run_cli("dlq", "list", "-c", cfg, "--json", "--body", check=True).stdout)
    assert [d["origin"] for d in dlq] == ["cli:stdin line 2", "cli:stdin line 3"]
    assert dlq[0]["body"] == "{not json" and dlq[0]["subscriber"] is None
    retry = run_cli("dlq", "retry", "-c", cfg, str(dlq[0]["id"]))
    assert retry.returncode == 1 and "bad input" in retry.stderr
    assert "1 dead letter(s) dropped" in run_cli("dlq", "drop", "-c", cfg, str(dlq[0]["id"]), check=True).stdout
    status = json.loads(run_cli("status", "-c", cfg, "--json", check=True).stdout)
    assert status["dead_letters"] == 1


def test_config_check(write_config, tmp_path):
    good = run_cli("config", "check", "-c", str(write_config()), check=True)
    assert ": ok" in good.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[journal]\nmax_bytes = "a lot"\n')
    out = run_cli("config", "check", "-c", str(bad))
    assert out.returncode == 78  # EX_CONFIG
    assert f"{bad}: journal.max_bytes = \"a lot\" is not a size" in out.stderr


def test_secrets_never_in_config_output(write_config, tmp_path):
    token = tmp_path / "wats.token"
    token.write_text("s3cr3t-token-value")
    token.chmod(0o600)
    cfg = write_config(f'[sinks.wats]\nurl = "https://wats.invalid"\ntoken_file = "{token}"\n'
                       'default_process_code = 10\n')
    for args in (("config", "check", "--json"), ("status", "--json"), ("status",)):
        out = run_cli(*args, "-c", str(cfg), check=True)
        assert "s3cr3t" not in out.stdout + out.stderr


def test_status_reads_while_journal_is_locked_for_writing(write_config):
    cfg = write_config()
    run_cli("publish", "-c", str(cfg), "--type", "custom", "--payload", "{}", check=True)
    conn = sqlite3.connect(str(cfg.parent / "data" / "journal.db"), timeout=1)
    conn.execute("BEGIN IMMEDIATE")  # a writer holds the lock (like the agent mid-commit)
    try:
        status = json.loads(run_cli("status", "-c", str(cfg), "--json", check=True).stdout)
        assert status["journal"]["events"] == 1
    finally:
        conn.rollback()
        conn.close()


def test_cfx_samples_list_show_and_convert(write_config):
    listing = json.loads(run_cli("cfx", "samples", "--list", "--json", check=True).stdout)
    assert {"ict-units-tested", "fct-units-tested", "aoi-units-inspected", "spi-units-inspected", "work-started",
            "work-completed-pass", "work-completed-fail", "smt-materials-installed", "th-materials-installed",
            "temperature-fault", "feeder-fault", "fault-cleared"} <= set(listing)
    shown = json.loads(run_cli("cfx", "samples", "--show", "ict-units-tested", check=True).stdout)
    assert shown["MessageBody"]["$type"] == "CFX.Production.TestAndInspection.UnitsTested, CFX"
    cfg = write_config('[sinks.wats]\nurl = "https://wats.invalid"\nprocess_codes = { ict = 30 }\n'
                       'default_part_number = "FIXTURE-1"\n')
    conv = json.loads(run_cli("cfx", "samples", "--convert", "ict-units-tested", "-c", str(cfg), "--json",
                              check=True).stdout)
    # a product's result is not filed under the fixture's default part number: it waits for a rule
    assert "recipe 'PCB4711_ICT' matches no [[sinks.wats.products]] rule" in conv[0]["wsjf_error"]
    cfg = write_config('[sinks.wats]\nurl = "https://wats.invalid"\nprocess_codes = { ict = 30 }\n'
                       '[[sinks.wats.products]]\nmatch = "PCB4711_*"\npart_number = "PCB4711"\n')
    conv = json.loads(run_cli("cfx", "samples", "--convert", "ict-units-tested", "-c", str(cfg), "--json",
                              check=True).stdout)
    assert conv[0]["event"]["event_type"] == "test.result" and conv[0]["wats"] == "POST /api/Report/WSJF"
    assert conv[0]["wsjf"]["processCode"] == 30 and conv[0]["wsjf"]["pn"] == "PCB4711"
    assert conv[0]["wsjf"]["machineName"] == "test-station" and conv[0]["wsjf"]["result"] == "F"
    moved = json.loads(run_cli("cfx", "samples", "--convert", "work-started", "--json", check=True).stdout)
    assert moved[0]["wats"] == "not sent to WATS"
    bad = run_cli("cfx", "samples", "--show", "nope")
    assert bad.returncode == 2 and "--list" in bad.stderr


# ---------------------------------------------------------------------------------------------------- start-up
def _one_line(stderr: str) -> str:
    """The one line a start-up failure prints; anything else on stderr (a traceback) fails the test."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _scenario(name, tmp_path, write_config, busy_port):
    """(config path, the key the error must name, its value, a phrase of what to do, exit status)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    if name == "port in use":
        return write_config(metrics_port=busy_port), "metrics.listen", f"127.0.0.1:{busy_port}", "free port", 69
    if name == "data_dir a file":
        cfg = write_config()
        cfg.write_text(cfg.read_text().replace(str(tmp_path / "data"), str(a_file)))
        return cfg, "agent.data_dir", str(a_file), "move it away", 73
    if name == "journal directory cannot be created":
        cfg = write_config()
        cfg.write_text(cfg.read_text().replace("[journal]\n", f'[journal]\npath = "{a_file}/journals/journal.db"\n'))
        return cfg, "journal.path", f"{a_file}/journals/journal.db", "move it away", 73
    if name == "token readable by others":
        token = tmp_path / "wats.token"
        token.write_text("t0ken")
        token.chmod(0o644)
        cfg = write_config(f'[sinks.wats]\nurl = "https://wats.invalid"\ntoken_file = "{token}"\n'
                           'default_process_code = 10\n')
        return cfg, "sinks.wats.token_file", str(token), "chmod 600", 78
    if name == "a wrong value":
        return write_config(max_bytes="1KB"), "journal.max_bytes", "1KB", "at least 64KB", 78
    raise AssertionError(name)


SCENARIOS = ["port in use", "data_dir a file", "journal directory cannot be created", "token readable by others",
             "a wrong value"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_start_up_failure_is_one_line_naming_the_key_with_a_sysexits_status(name, tmp_path, write_config, busy_port):
    cfg, key, value, todo, status = _scenario(name, tmp_path, write_config, busy_port)
    out = run_cli("run", "-c", str(cfg), "--for", "5")
    line = _one_line(out.stderr)
    assert out.returncode == status, out.stderr
    assert line.startswith("fixture-agent: ") and str(cfg) in line and key in line and value in line, line
    assert todo in line, line


@pytest.mark.parametrize("name", SCENARIOS)
def test_config_check_refuses_what_run_refuses_in_the_same_words(name, tmp_path, write_config, busy_port):
    cfg, key, value, todo, status = _scenario(name, tmp_path, write_config, busy_port)
    check = run_cli("config", "check", "-c", str(cfg))
    assert check.returncode == status and check.stdout == "", check.stderr
    run = run_cli("run", "-c", str(cfg), "--for", "5")
    assert _one_line(check.stderr).split(": config error: ")[-1] == _one_line(run.stderr).split(": config error: ")[-1]
    doc = json.loads(run_cli("config", "check", "-c", str(cfg), "--json").stdout)
    assert doc["ok"] is False and [p["key"] for p in doc["problems"]] == [key]


def test_run_creates_the_journal_directory(tmp_path, write_config):
    journal = tmp_path / "var" / "journals" / "journal.db"
    cfg = write_config()
    cfg.write_text(cfg.read_text().replace("[journal]\n", f'[journal]\npath = "{journal}"\n'))
    assert ": ok" in run_cli("config", "check", "-c", str(cfg), check=True).stdout
    out = run_cli("run", "-c", str(cfg), "--for", "0.5")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert journal.exists()


def test_config_check_leaves_a_port_alone_while_the_agent_holds_it(tmp_path, write_config, busy_port):
    """A running agent holds its own metrics port: `config check` beside it must not call that a problem."""
    import fcntl

    cfg = write_config(metrics_port=busy_port)
    (tmp_path / "data").mkdir()
    fd = os.open(tmp_path / "data" / "agent.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, b"12345\n", 0)
        assert ": ok" in run_cli("config", "check", "-c", str(cfg), check=True).stdout
    finally:
        os.close(fd)


@pytest.mark.parametrize("name", ["data_dir a file", "journal directory cannot be created"])
@pytest.mark.parametrize("command", [("publish", "--type", "custom", "--payload", "{}"), ("counters", "show"),
                                     ("subscribers", "drop", "x")])
def test_commands_that_open_the_journal_fail_in_one_line_too(name, command, tmp_path, write_config, busy_port):
    cfg, key, value, todo, status = _scenario(name, tmp_path, write_config, busy_port)
    out = run_cli(*command, "-c", str(cfg))
    line = _one_line(out.stderr)
    assert out.returncode == status and key in line and value in line and todo in line, out.stderr
