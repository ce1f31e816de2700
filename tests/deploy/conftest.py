"""The deploy test's marker, and the one reason it may skip."""

from __future__ import annotations

import os
import shutil

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deploy: Ansible deployment onto a debootstrapped Debian root (root only)")
    config.addinivalue_line("markers", "emulated: the offline install and the event core on arm64/armhf roots under "
                                       "qemu-user-static (long: FIXTURE_AGENT_EMULATED=1, or =arm64 / =armhf)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The emulated tests take tens of minutes per architecture: deselected unless FIXTURE_AGENT_EMULATED is set."""
    if os.environ.get("FIXTURE_AGENT_EMULATED", "0") not in ("", "0"):
        return
    emulated = [item for item in items if item.get_closest_marker("emulated")]
    if emulated:
        config.hook.pytest_deselected(items=emulated)
        items[:] = [item for item in items if not item.get_closest_marker("emulated")]


@pytest.fixture(scope="module")
def as_root() -> None:
    """debootstrap, chroot and mount need root, and apt-get to install debootstrap when it is missing."""
    if os.geteuid() != 0:
        pytest.skip("the deploy test needs root (debootstrap, chroot, mount): run scripts/test as root")
    if shutil.which("apt-get") is None or shutil.which("dpkg-query") is None:
        pytest.skip("the deploy test needs a Debian host (apt-get installs debootstrap)")
