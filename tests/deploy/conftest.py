"""The deploy test's marker, and the one reason it may skip."""

from __future__ import annotations

import os
import shutil

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deploy: Ansible deployment onto a debootstrapped Debian root (root only)")


@pytest.fixture(scope="module")
def as_root() -> None:
    """debootstrap, chroot and mount need root, and apt-get to install debootstrap when it is missing."""
    if os.geteuid() != 0:
        pytest.skip("the deploy test needs root (debootstrap, chroot, mount): run scripts/test as root")
    if shutil.which("apt-get") is None or shutil.which("dpkg-query") is None:
        pytest.skip("the deploy test needs a Debian host (apt-get installs debootstrap)")
