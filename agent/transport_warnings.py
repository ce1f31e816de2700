"""What in a configuration sends secrets or results unprotected, said loudly (issue 23 item 9).

Plain ``http://`` to WATS or ``verify_tls = false`` give the WATS token, and the right to file test results, to anyone
on the path; SASL PLAIN over plain ``amqp://`` sends the broker password in clear text. These are allowed (a lab, a
broker on the same host), but never silently: the agent logs each at start (``SECURITY:``), ``status`` prints it and
``/healthz`` lists it under ``security``. Pure functions of the configuration, so the CLI, the runtime, ``config
check`` and a sink can all ask.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any
from urllib.parse import urlsplit

from . import secrets


def _loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def wats_warnings(cfg: Any) -> list[str]:
    """``sinks.wats``: plain http:// (not to this host) and an unchecked certificate."""
    out = []
    url = urlsplit(cfg.url)
    host = url.hostname or "?"
    if url.scheme == "http" and not _loopback(host):
        out.append(f"sinks.wats.url is plain http:// (host {host}): the WATS token and every result cross the "
                   "network unencrypted, and anyone on the path can read the token and file results; use https://")
    if url.scheme == "https" and not cfg.verify_tls:
        out.append(f"sinks.wats.verify_tls = false: the certificate of {host} is not checked, so anyone on the path "
                   "can pose as WATS and take the token; give ca_file instead")
    return out


def amqp_warnings(key: str, cfg: Any) -> list[str]:
    """``sources.cfx`` / ``sinks.cfx`` (``key``): a password over plain amqp://, an unchecked certificate."""
    out = []
    url = urlsplit(cfg.url)
    host = url.hostname or "?"
    if url.scheme == "amqp" and cfg.username and not _loopback(host):
        out.append(f"{key}: SASL PLAIN over plain amqp:// (host {host}) sends the password of {cfg.username!r} in "
                   "clear text; use amqps://")
    if url.scheme == "amqps" and not cfg.verify_tls:
        out.append(f"{key}.verify_tls = false: the broker certificate of {host} is not checked, so anyone on the "
                   "path can pose as the broker" + (" and take the password" if cfg.username else ""))
    return out


def mqtt_warnings(key: str, cfg: Any) -> list[str]:
    """``sources.mqtt`` / ``sinks.mqtt``: a password to a broker on another host without TLS, an unchecked one."""
    out = []
    if cfg.username and secrets.configured(cfg, "password") and not cfg.tls and not _loopback(cfg.host):
        out.append(f"{key}: the password of {cfg.username!r} goes to {cfg.host} without TLS; set tls = true")
    if cfg.tls and not cfg.verify_tls:
        out.append(f"{key}.verify_tls = false: the certificate of {cfg.host} is not checked")
    return out


def insecure_transports(config: Any) -> list[str]:
    """Every warning the configuration earns, in config order; empty when nothing is sent unprotected."""
    out: list[str] = []
    sinks, sources = config.sinks, config.sources
    if sinks.wats is not None and sinks.wats.enabled:
        out += wats_warnings(sinks.wats)
    for key, section in (("sources.mqtt", sources.mqtt), ("sinks.mqtt", sinks.mqtt)):
        if section is not None and section.enabled:
            out += mqtt_warnings(key, section)
    for key, section in (("sources.cfx", sources.cfx), ("sinks.cfx", sinks.cfx)):
        if section is not None and section.enabled:
            out += amqp_warnings(key, section)
    return out


def log_warnings(warnings: list[str], log: logging.Logger) -> None:
    for w in warnings:
        log.warning("SECURITY: %s", w)
