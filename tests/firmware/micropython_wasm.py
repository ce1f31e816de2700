"""MicroPython's own interpreter for the firmware tests: the WebAssembly port, as published on the npm registry,
run by Node (``micropython_wasm.mjs`` beside this file). One Node process serves a whole test module; each
``boot`` is a new interpreter (40 ms), so RAM is new at every boot and only what the last one left on its "flash"
carries over, as on a board.

The package is installed by npm on first use into a cache shared by later runs (like umqtt.simple's), and the
tarball npm installed is checked against the integrity of the pinned release.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

PACKAGE = "@micropython/micropython-webassembly-pyscript"
VERSION = "1.27.0"
INTEGRITY = "sha512-DnXx4EqxgkeaFESrS3uKrL7mLMk4mRTd0mMzaOd3HUSiZUOAE7t11uLnjf3ftF87N2xm4knHnWEKcVK4IYIUDA=="
CACHE = (Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fixture-agent-tests"
         / f"micropython-webassembly-{VERSION}")
RUNNER = Path(__file__).resolve().parent / "micropython_wasm.mjs"


class Unavailable(RuntimeError):
    """No Node or no npm on this machine: the tests that need the interpreter skip with this reason."""


class MicroPythonError(AssertionError):
    """Code run under MicroPython raised: ``type`` is its exception's name, the message holds its traceback."""

    def __init__(self, type_: str, message: str, out: str) -> None:
        super().__init__(f"MicroPython raised {type_}:\n{message}\n--- it printed:\n{out}")
        self.type, self.message, self.out = type_, message, out


def _package_dir(root: Path) -> Path:
    return root / "node_modules" / Path(*PACKAGE.split("/"))


def _installed_integrity(root: Path) -> str | None:
    try:
        lock = json.loads((root / "package-lock.json").read_text())
        return lock["packages"][f"node_modules/{PACKAGE}"]["integrity"]
    except (OSError, ValueError, KeyError):
        return None


def micropython_package() -> Path:
    """The directory holding ``micropython.mjs`` and ``micropython.wasm``; installed by npm into the cache once."""
    if (_package_dir(CACHE) / "micropython.wasm").exists() and _installed_integrity(CACHE) == INTEGRITY:
        return _package_dir(CACHE)
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        raise Unavailable("MicroPython's WebAssembly port needs Node and npm (apt-get install nodejs npm)")
    part = CACHE.with_name(f"{CACHE.name}.part{os.getpid()}")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    proc = subprocess.run([npm, "install", "--prefix", str(part), "--no-audit", "--no-fund", "--ignore-scripts",
                           f"{PACKAGE}@{VERSION}"], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"npm install {PACKAGE}@{VERSION} failed:\n{proc.stdout}{proc.stderr}")
    got = _installed_integrity(part)
    if got != INTEGRITY:
        raise RuntimeError(f"npm installed {PACKAGE}@{VERSION} with integrity {got}, not the pinned {INTEGRITY}")
    try:
        part.rename(CACHE)
    except OSError:  # another run put it there first
        shutil.rmtree(part, ignore_errors=True)
        if _installed_integrity(CACHE) != INTEGRITY:
            raise
    return _package_dir(CACHE)


def board_files(*dirs: Path, under: str) -> dict[str, bytes]:
    """Every ``.py`` and ``.json`` file of the given directories (recursively), as the paths they get on the board
    under ``under``: the examples' own files, read when the board is flashed."""
    files: dict[str, bytes] = {}
    for d in dirs:
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.suffix in (".py", ".json") and "__pycache__" not in p.parts:
                files[f"{under}/{p.relative_to(d).as_posix()}"] = p.read_bytes()
    return files


class MicroPython:
    """One Node process running MicroPython's WebAssembly port; ``boot`` starts a new interpreter in it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([shutil.which("node") or "node", str(RUNNER), str(micropython_package())],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _ask(self, **req: object) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the MicroPython runner ended (exit {self.proc.wait(5)})")
        answer = json.loads(line)
        if "fail" in answer:
            raise RuntimeError(f"the MicroPython runner failed: {answer['fail']}")
        return answer

    def boot(self, files: dict[str, bytes], *, keep: tuple[str, ...] = ("/flash",), cwd: str = "/flash") -> None:
        """Power on a new interpreter: what the last one left under ``keep`` is still there (flash), then
        ``files`` are written (the firmware flashed again: the test's own files win)."""
        self._ask(op="boot", files={p: base64.b64encode(b).decode() for p, b in files.items()}, keep=list(keep),
                  cwd=cwd)

    def run(self, code: str) -> str:
        """Run ``code`` in the interpreter's ``__main__``; what it printed, or ``MicroPythonError``."""
        answer = self._ask(op="run", code=code)
        if answer["error"]:
            raise MicroPythonError(answer["error"]["type"], answer["error"]["message"], answer["out"])
        return answer["out"]

    def json(self, expr: str) -> object:
        """The value of ``expr`` under MicroPython, carried out as MicroPython's own json.dumps wrote it."""
        out = self.run(f"import json as _j\nprint('\\x1e' + _j.dumps({expr}))")
        return json.loads(out.rsplit("\x1e", 1)[1])

    def read(self, directory: str = "/flash") -> dict[str, bytes]:
        return {p: base64.b64decode(b) for p, b in self._ask(op="read", dir=directory)["files"].items()}

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
