"""``simulate fixture --link`` refuses a directory other users can write (issue 23 item 12): there another user
could create the link first, or swap it, and the agent would read that user's "fixture"."""

from __future__ import annotations

import os

from tests.conftest import run_cli


def test_link_in_a_world_writable_directory_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp
    proc = run_cli("simulate", "fixture", "--link", str(shared / "fixture.tty"), "--for", "0.2")
    assert proc.returncode == 2, proc.stderr
    assert "writable by other users" in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.lexists(shared / "fixture.tty")


def test_link_in_a_directory_of_ones_own_works(tmp_path):
    own = tmp_path / "own"
    own.mkdir(mode=0o700)
    proc = run_cli("simulate", "fixture", "--link", str(own / "fixture.tty"), "--for", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert f"(linked as {own / 'fixture.tty'})" in proc.stdout
    assert [p.name for p in own.iterdir()] == []  # the link goes when the fixture does, no temporary left
