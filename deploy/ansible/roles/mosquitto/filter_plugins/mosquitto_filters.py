"""Filters for the mosquitto role, in Python because Jinja cannot do either cleanly.

``password | mosquitto_hash(user, current_file, iterations)``: a password-file line's hash in mosquitto_passwd's
own format (``$7$<rounds>$<12-byte salt>$<PBKDF2-HMAC-SHA512, 64 bytes>``, base64) with a random salt.
mosquitto_passwd draws a new salt on every call, so a file it writes changes on every run and a second run would
restart the broker for nothing. Here the salt is kept with the secret instead: when the host's current file has a
line for the user that this password verifies, with at least ``iterations`` rounds, that line is kept as it is;
only a new user, a changed password or a raised round count gets a new random salt. (The salt used to be derived
from the host and user names: public, so one precomputation served every fleet, and 101 rounds, mosquitto 2.0's
default, made a guess cost microseconds.) mosquitto reads the round count from each line; 100,000 rounds cost
the broker about 0.2 s of CPU per login on a Pi-class core, and a device logs in once per connection.

``device | mosquitto_device_user(families)``: an ESP32 as a broker user that may publish only under its own id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

from ansible.errors import AnsibleFilterError

SALT_BYTES = 12  # as mosquitto_passwd
HASH_ID = 7  # PBKDF2-SHA512: mosquitto 2.0's "$7$iterations$salt$hash"
MIN_ITERATIONS = 100_000
DEVICE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # one topic level, and a user name mosquitto's files can hold


def _current_hashes(current: str) -> dict[str, str]:
    out = {}
    for line in (current or "").splitlines():
        name, sep, hashed = line.strip().partition(":")
        if sep and hashed.startswith(f"${HASH_ID}$"):
            out[name] = hashed
    return out


def _verifies(password: str, hashed: str, min_iterations: int) -> bool:
    try:
        _, hid, rounds, salt, key = hashed.split("$")
        rounds_n = int(rounds)
        salt_b, key_b = base64.b64decode(salt, validate=True), base64.b64decode(key, validate=True)
    except ValueError:
        return False
    if hid != str(HASH_ID) or rounds_n < min_iterations or len(salt_b) != SALT_BYTES or len(key_b) != 64:
        return False
    mine = hashlib.pbkdf2_hmac("sha512", password.encode(), salt_b, rounds_n)
    return hmac.compare_digest(mine, key_b)


def mosquitto_hash(password: str, user: str, current: str = "", iterations: int = MIN_ITERATIONS) -> str:
    if not password:
        raise AnsibleFilterError(f"mosquitto user {user}: empty password (is the vault loaded?)")
    iterations = int(iterations)
    if iterations < MIN_ITERATIONS:
        raise AnsibleFilterError(f"mosquitto_password_iterations = {iterations}: at least {MIN_ITERATIONS} "
                                 "(PBKDF2 with fewer rounds lets a copied password file be guessed quickly)")
    password = str(password)
    kept = _current_hashes(current).get(str(user))
    if kept and _verifies(password, kept, iterations):
        return kept  # same password: the same line, so a second run changes nothing
    salt = os.urandom(SALT_BYTES)
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"${HASH_ID}${iterations}${b64(salt).decode()}${b64(key).decode()}"


def mosquitto_device_user(device: dict, families: list[str]) -> dict:
    dev_id = str(device.get("id", ""))
    if not DEVICE_ID.fullmatch(dev_id):
        raise AnsibleFilterError(f"mosquitto_devices: id {dev_id!r} must be 1-64 letters, digits, '.', '_', ':' "
                                 "or '-' (it is a topic level and the device's user name)")
    return {
        "name": dev_id,
        "password": device.get("password"),
        "write": [f"{family}/{dev_id}/#" for family in device.get("families", families)],
        "read": list(device.get("read", [])),
    }


class FilterModule:
    def filters(self):
        return {"mosquitto_hash": mosquitto_hash, "mosquitto_device_user": mosquitto_device_user}
