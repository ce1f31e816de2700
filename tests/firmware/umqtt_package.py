"""The real umqtt.simple (micropython-lib, as published on the package index) for the MicroPython examples' tests.

Its sdist has no setup.py, so pip cannot install it; pip is still what finds it (the index this machine is
configured for), and the file it names is fetched, checked against the hash of the release, and unpacked once into
a cache shared by later runs.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

RELEASE = "micropython-umqtt.simple==1.3.4"
SHA256 = "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fixture-agent-tests" / "umqtt-simple-1.3.4"


def umqtt_simple_dir() -> Path:
    """A directory holding ``umqtt/simple.py``: put it on ``sys.path``."""
    if (CACHE / "umqtt" / "simple.py").exists():
        return CACHE
    # -vvv and no cache: pip names a file host's files by name only at normal verbosity, and says "Using cached"
    # for one it has; the links it found on the index page are logged in full only at debug level
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-vvv", RELEASE,
                           "-d", str(CACHE / "dl")], capture_output=True, text=True)
    urls = re.findall(r"https?://\S+?/micropython-umqtt\.simple-1\.3\.4\.tar\.gz", proc.stdout + proc.stderr)
    if not urls:
        raise RuntimeError(f"pip found no sdist for {RELEASE}:\n{proc.stdout}{proc.stderr}")
    data = urllib.request.urlopen(urls[0], timeout=60).read()
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise RuntimeError(f"{urls[0]}: not the published {RELEASE} (sha256 differs)")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("umqtt/simple.py"))
        source = tar.extractfile(member).read()
    (CACHE / "umqtt").mkdir(parents=True, exist_ok=True)
    (CACHE / "umqtt" / "simple.py.part").write_bytes(source)
    (CACHE / "umqtt" / "simple.py.part").rename(CACHE / "umqtt" / "simple.py")
    return CACHE
