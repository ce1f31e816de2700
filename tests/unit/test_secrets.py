"""One resolver for every secret (issue 17 item 7): a file (mode 0600), a systemd credential, an environment
variable, tried in that order, with the same keys in every section; the value never in a message."""

import pytest

from agent import secrets
from agent.config import ConfigError, parse_config

MQTT = '[sinks.mqtt]\nhost = "plant"\nusername = "agent"\n'


def test_the_order_is_file_then_credential_then_variable(tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt").write_text("from-credential\n")
    (creds / "mqtt").chmod(0o600)
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    pw.chmod(0o600)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("PW", "from-env")
    both = parse_config(MQTT + f'password_file = "{pw}"\npassword_credential = "mqtt"\npassword_env = "PW"\n')
    assert secrets.resolve(both.sinks.mqtt, "password", "sinks.mqtt.password") == ("from-file", str(pw))
    cred = parse_config(MQTT + 'password_credential = "mqtt"\npassword_env = "PW"\n')
    assert secrets.resolve(cred.sinks.mqtt, "password", "k")[0] == "from-credential"
    env = parse_config(MQTT + 'password_credential = "absent"\npassword_env = "PW"\n')
    assert secrets.resolve(env.sinks.mqtt, "password", "k") == ("from-env", "$PW")
    monkeypatch.delenv("PW")
    assert secrets.resolve(env.sinks.mqtt, "password", "k") == (None, "$PW")


def test_a_secret_others_may_read_is_refused_with_the_fix_and_without_the_value(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("hunter2-Pa55\n")
    pw.chmod(0o644)
    cfg = parse_config(MQTT + f'password_file = "{pw}"\n')
    with pytest.raises(ConfigError) as e:
        secrets.resolve(cfg.sinks.mqtt, "password", "sinks.mqtt.password")
    assert f"chmod 600 {pw}" in str(e.value) and "hunter2" not in str(e.value)


def test_every_password_key_needs_a_username():
    for key in ("password_file", "password_credential", "password_env"):
        with pytest.raises(ConfigError, match=f"sinks.mqtt.username.*is needed with {key}"):
            parse_config(f'[sinks.mqtt]\nhost = "plant"\n{key} = "x"\n')
        with pytest.raises(ConfigError, match=f"sinks.cfx.username.*is needed with {key}"):
            parse_config(f'[sinks.cfx]\nurl = "amqp://b"\nhandle = "A.B.C"\n{key} = "x"\n')
