"""Filters for the mosquitto role, in Python because Jinja cannot do either cleanly.

``password | mosquitto_hash(salt_seed)``: a password-file line's hash. mosquitto_passwd draws a new random salt
on every call, so a file it writes changes on every run and a second run would restart the broker for nothing.
Here the salt is derived from the host and user name instead (never from the password: a salt that is a fast
hash of the password would let anyone skip PBKDF2), so the same inventory renders the same file, and a changed
password changes only its own line.

``device | mosquitto_device_user(families)``: an ESP32 as a broker user that may publish only under its own id.
"""

from __future__ import annotations

import base64
import hashlib
import re

from ansible.errors import AnsibleFilterError

SALT_BYTES = 12  # as mosquitto_passwd
HASH_ID = 7  # PBKDF2-SHA512: mosquitto 2.0's "$7$iterations$salt$hash"
DEVICE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # one topic level, and a user name mosquitto's files can hold


def mosquitto_hash(password: str, salt_seed: str, iterations: int = 101) -> str:
    if not password:
        raise AnsibleFilterError(f"mosquitto user {salt_seed}: empty password (is the vault loaded?)")
    salt = hashlib.sha512(f"mosquitto-salt:{salt_seed}".encode()).digest()[:SALT_BYTES]
    key = hashlib.pbkdf2_hmac("sha512", str(password).encode(), salt, int(iterations))
    b64 = base64.b64encode
    return f"${HASH_ID}${int(iterations)}${b64(salt).decode()}${b64(key).decode()}"


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
