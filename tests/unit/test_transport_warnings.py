"""Secrets or results sent unprotected are said loudly (issue 23 item 9): at start, in status and /healthz."""

from __future__ import annotations

import json
import textwrap

from agent.config import load_config
from agent.transport_warnings import insecure_transports
from tests.conftest import run_cli


def _config(tmp_path, extra: str):
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "pw").chmod(0o600)
    path = tmp_path / "agent.toml"
    path.write_text(textwrap.dedent(f"""
        [agent]
        station = "st"
        location = "L"
        purpose = "P"
        data_dir = "{tmp_path / 'data'}"
    """) + textwrap.dedent(extra).replace("PW", str(tmp_path / "pw")))
    return path


WATS = '[sinks.wats]\nurl = "{url}"\ndefault_process_code = 10\ntoken_env = "NO_SUCH_TOKEN"\nverify_tls = {verify}\n'


def test_wats_over_http_or_unverified_and_sasl_plain_over_amqp_are_named(tmp_path):
    cfg = _config(tmp_path, WATS.format(url="http://wats.plant.example", verify="true") + """
        [sources.cfx]
        url = "amqp://broker.plant.example:5672"
        username = "fixture"
        password_file = "PW"
    """)
    warnings = insecure_transports(load_config(cfg))
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("sinks.wats.url is plain http:// (host wats.plant.example)")
    assert warnings[1].startswith("sources.cfx: SASL PLAIN over plain amqp:// (host broker.plant.example)")
    assert "secret" not in " ".join(warnings)

    unverified = insecure_transports(load_config(_config(tmp_path, WATS.format(url="https://wats.example",
                                                                              verify="false"))))
    assert [w.split(":")[0] for w in unverified] == ["sinks.wats.verify_tls = false"]


def test_safe_settings_earn_no_warning(tmp_path):
    cfg = _config(tmp_path, WATS.format(url="https://wats.example", verify="true") + """
        [sources.cfx]
        url = "amqps://broker.example:5671"
        username = "fixture"
        password_file = "PW"
        [sinks.mqtt]
        host = "127.0.0.1"
        username = "agent"
        password_file = "PW"
    """)
    assert insecure_transports(load_config(cfg)) == []
    # the WATS stand-in on this host: plain http to loopback crosses no network
    assert insecure_transports(load_config(_config(tmp_path, WATS.format(url="http://127.0.0.1:8080",
                                                                        verify="true")))) == []


def test_status_and_the_start_log_say_it(tmp_path):
    cfg = _config(tmp_path, WATS.format(url="http://wats.invalid", verify="true"))
    proc = run_cli("run", "-c", str(cfg), "--for", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" in proc.stderr and "SECURITY: sinks.wats.url is plain http://" in proc.stderr
    text = run_cli("status", "-c", str(cfg), check=True).stdout
    assert "!! SECURITY: sinks.wats.url is plain http://" in text
    doc = json.loads(run_cli("status", "-c", str(cfg), "--json", check=True).stdout)
    assert doc["security"] and doc["security"][0].startswith("sinks.wats.url is plain http://")
