"""A file system for the tests that loses, at a "power cut", everything that was not made durable.

In the spirit of LazyFS (the FUSE file system Jepsen power-cuts databases on), but stricter: LazyFS drops the file
data that was not fsynced and passes directory operations straight through, so it cannot find a directory entry
that was never made durable. This one models both, as POSIX promises them and no more:

* a file's data (and its size) are durable as of its last ``fsync``/``fdatasync``; writes and ``ftruncate`` since
  then are lost at a cut;
* a directory's entries (creates, ``mkdir``, renames, unlinks in it) are durable as of the last ``fsync`` of that
  directory; a file created in a directory never fsynced since is gone after a cut, however often the file itself
  was fsynced, and a rename or unlink not followed by an fsync of the directory is undone;
* the mount point itself is durable (it is the disk).

It is a passthrough (mfusepy, ctypes bindings for libfuse 3): every operation goes to a *backing* directory at once,
so reading, ``mmap`` and locks behave as on any file system, and the durable state is kept beside it: per file a
*shadow* copy updated at each fsync from the pages written since the last one, per directory its entries as of its
last fsync. A cut freezes the model (every operation from then on fails with EIO, so nothing more can be
acknowledged); after the unmount the backing directory is rebuilt from the durable state, inode numbers and
mtimes kept (the journal's salvage recognises its file by them), and the next mount starts on what survived.

SQLite in WAL mode on it: ``write``/``fsync`` of the ``-wal``, ``ftruncate`` and ``unlink`` of ``-wal``/``-shm``, the
main file written only at a checkpoint, and its own fsync of the directory when it creates a ``-wal`` or ``-journal``
(``UNIXFILE_DIRSYNC``); the ``-shm`` wal-index is ``mmap(MAP_SHARED)``: FUSE supports shared writable maps when
the file system is not ``direct_io``, and ``kernel_cache`` keeps the page cache across opens, so the agent and a CLI
reader beside it share one wal-index as on a local disk (no ``locking_mode = EXCLUSIVE`` needed). POSIX and BSD
locks are left to the kernel (no ``lock``/``flock`` operations: it then locks locally, which is right for one host).
Hard links, symlinks and ``fallocate`` are not offered (ENOSYS): the agent and SQLite do not use them.

Run as a process (the harness and tests do, through :class:`PowerCutMount`)::

    python -m tests.faults.powercut_fs BACKING MOUNTPOINT STATE_DIR [--ignore-dir-fsync REL]...

It reads commands on stdin, one a line, and answers on stdout with one JSON line:

* ``cut``: freeze now; answers ``{"event": "frozen", ...}`` with what was lost;
* ``arm KIND N``: freeze at the N-th operation of a kind, from now: ``db-write`` (a write to a ``*.db`` file: in WAL
  mode that is a checkpoint), ``salvage`` (an operation on a ``*.salvage*`` path), ``rename``; it answers ``armed``
  and, when it fires, ``frozen`` as for ``cut`` (with ``"trigger"``);
* ``stats``: the operations counted so far.

When unmounted frozen it rebuilds the backing directory and prints ``{"event": "rebuilt", ...}``; unmounted
without a cut (a clean shutdown, as an OS syncs at unmount) it leaves the backing directory as it is.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import queue
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAGE = 4096
_INO_BASE = 1000  # model inode numbers start here (the root is 1)


@dataclass(eq=False)
class Node:
    """A file or directory of the model: what is durable of it, and what was written since its last fsync."""

    ino: int
    is_dir: bool
    mode: int
    entries: dict[str, "Node"] = field(default_factory=dict)  # a directory's durable entries
    dirty: set[int] = field(default_factory=set)  # a file's pages written (or cut off) since its last fsync
    durable_size: int = 0
    mtime_ns: int = 0  # as of the last fsync


class Frozen(Exception):
    """The power is off."""


class PowerCutFS:
    """The mfusepy operations. One lock around the model: the kernel's requests come on several threads."""

    use_ns = True

    def __init__(self, backing: Path, state: Path, ignore_dir_fsync: tuple[str, ...] = ()) -> None:
        self.backing, self.state = backing, state
        self.shadow = state / "shadow"
        shutil.rmtree(self.shadow, ignore_errors=True)
        self.shadow.mkdir(parents=True)
        self.ignore_dir_fsync = {("/" + p.strip("/")) if p.strip("/") else "/" for p in ignore_dir_fsync}
        self.mutex = threading.RLock()
        self.frozen = False
        self.by_backing_ino: dict[int, Node] = {}
        self.fh_node: dict[int, Node] = {}
        self.ops: Counter[str] = Counter()
        self.trigger: tuple[str, int] | None = None
        self.out_lock = threading.Lock()
        self._load()

    # ------------------------------------------------------------------------------------------------ model
    def _load(self) -> None:
        """The backing directory as it is is durable (it was rebuilt from the durable state, or is new)."""
        inos_file = self.state / "inodes.json"
        saved = json.loads(inos_file.read_text()) if inos_file.exists() else {}
        known: dict[str, int] = saved.get("inodes", {})
        self.next_ino = max([_INO_BASE, *known.values()]) + 1

        def node_for(rel: str, st: os.stat_result) -> Node:
            ino = known.get(rel)
            if ino is None:
                ino, self.next_ino = self.next_ino, self.next_ino + 1
            n = Node(ino, stat.S_ISDIR(st.st_mode), st.st_mode, durable_size=st.st_size, mtime_ns=st.st_mtime_ns)
            self.by_backing_ino[st.st_ino] = n
            return n

        self.root = node_for("/", os.lstat(self.backing))
        self.root.ino = 1
        stack = [(self.root, "/")]
        while stack:
            node, rel = stack.pop()
            for name in os.listdir(self._real(rel)):
                crel = rel.rstrip("/") + "/" + name
                st = os.lstat(self._real(crel))
                child = node_for(crel, st)
                node.entries[name] = child
                if child.is_dir:
                    stack.append((child, crel))
                else:
                    shutil.copyfile(self._real(crel), self._shadow(child))

    def _real(self, path: str) -> str:
        return str(self.backing) + ("" if path == "/" else path)

    def _shadow(self, node: Node) -> Path:
        return self.shadow / str(node.ino)

    def _node(self, path: str) -> Node:
        st = os.lstat(self._real(path))
        n = self.by_backing_ino.get(st.st_ino)
        if n is None:  # not made through this mount (cannot happen while it is mounted); new, nothing durable
            n = self._new_node(st)
        return n

    def _new_node(self, st: os.stat_result) -> Node:
        n = Node(self.next_ino, stat.S_ISDIR(st.st_mode), st.st_mode, mtime_ns=st.st_mtime_ns)
        self.next_ino += 1
        self.by_backing_ino[st.st_ino] = n
        return n

    def _gone(self, path: str) -> None:
        """``path`` is about to lose its last link: its backing inode number may be reused for a new file."""
        try:
            st = os.lstat(self._real(path))
        except FileNotFoundError:
            return
        if st.st_nlink <= 1 or stat.S_ISDIR(st.st_mode):
            self.by_backing_ino.pop(st.st_ino, None)

    def _enter(self, kind: str, path: str | None = None) -> None:
        """Count the operation; fail it if the power is off, or cut the power now if it is the armed one."""
        if self.frozen:
            raise _eio()
        self.ops[kind] += 1
        if self.trigger is not None:
            what, left = self.trigger
            hit = (what == "db-write" and kind == "write" and path is not None and path.endswith(".db")) or \
                  (what == "salvage" and path is not None and ".salvage" in path) or \
                  (what == "rename" and kind == "rename")
            if hit:
                left -= 1
                self.trigger = (what, left)
                if left <= 0:
                    self.freeze(trigger=f"{what} ({kind} {path})")
                    raise _eio()

    def freeze(self, trigger: str | None = None) -> None:
        with self.mutex:
            if self.frozen:
                return
            self.frozen = True
            self.trigger = None
            report = {"event": "frozen", "trigger": trigger, **self._losses()}
        self.say(report)

    def _losses(self) -> dict[str, Any]:
        """What the cut costs: unsynced pages per file, and entries that differ from their directory's durable ones."""
        unsynced: dict[str, int] = {}
        changed_entries = 0
        for dirpath, dirnames, filenames in os.walk(self.backing):
            rel = "/" if dirpath == str(self.backing) else "/" + os.path.relpath(dirpath, self.backing)
            dnode = self.by_backing_ino.get(os.lstat(dirpath).st_ino)
            current = {}
            for name in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, name))
                current[name] = self.by_backing_ino.get(st.st_ino)
                n = current[name]
                if n is not None and not n.is_dir and (n.dirty or st.st_size != n.durable_size):
                    unsynced[(rel.rstrip("/") + "/" + name)] = len(n.dirty) * PAGE
            if dnode is not None:
                durable = dnode.entries
                changed_entries += sum(1 for k in set(current) | set(durable) if current.get(k) is not durable.get(k))
        return {"unsynced_bytes": unsynced, "entries_not_durable": changed_entries,
                "checkpoint_under_way": any(p.endswith(".db") for p in unsynced)}

    def _fsync_file(self, node: Node, fd: int) -> None:
        st = os.fstat(fd)
        shadow = self._shadow(node)
        with open(shadow, "ab") as _:
            pass
        sfd = os.open(shadow, os.O_WRONLY)
        try:
            pages = sorted(node.dirty)
            i = 0
            while i < len(pages):  # runs of consecutive pages, one read and one write each
                j = i
                while j + 1 < len(pages) and pages[j + 1] == pages[j] + 1:
                    j += 1
                start, end = pages[i] * PAGE, min((pages[j] + 1) * PAGE, st.st_size)
                if start < end:
                    os.pwrite(sfd, os.pread(fd, end - start, start), start)
                i = j + 1
            os.ftruncate(sfd, st.st_size)
        finally:
            os.close(sfd)
        node.dirty.clear()
        node.durable_size, node.mtime_ns, node.mode = st.st_size, st.st_mtime_ns, st.st_mode

    # ------------------------------------------------------------------------------------------------ rebuild
    def rebuild(self) -> dict[str, Any]:
        """After the unmount of a frozen mount: the backing directory becomes exactly the durable state."""
        for name in os.listdir(self.backing):
            p = self.backing / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        inodes: dict[str, int] = {}
        files = 0

        def build(node: Node, rel: str, seen: set[int]) -> None:
            nonlocal files
            for name, child in sorted(node.entries.items()):
                crel = rel.rstrip("/") + "/" + name
                dst = self._real(crel)
                if child.ino in seen:  # a directory that durably holds itself somewhere below: cannot be
                    continue
                inodes[crel] = child.ino
                if child.is_dir:
                    os.mkdir(dst, child.mode & 0o7777)
                    build(child, crel, seen | {child.ino})
                else:
                    src = self._shadow(child)
                    with open(dst, "wb") as f:
                        if src.exists():
                            with open(src, "rb") as s:
                                f.write(s.read(child.durable_size))
                        f.truncate(child.durable_size)
                    os.chmod(dst, child.mode & 0o7777)
                    files += 1
                    os.utime(dst, ns=(child.mtime_ns, child.mtime_ns))

        build(self.root, "/", {1})
        (self.state / "inodes.json").write_text(json.dumps({"inodes": inodes}))
        shutil.rmtree(self.shadow, ignore_errors=True)
        return {"event": "rebuilt", "files": files, "paths": sorted(inodes)}

    def say(self, doc: dict[str, Any]) -> None:
        with self.out_lock:
            sys.stdout.write(json.dumps(doc) + "\n")
            sys.stdout.flush()

    # ------------------------------------------------------------------------------------------------ FUSE
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        with self.mutex:
            self._enter("getattr")
            try:
                st = os.fstat(fh) if fh is not None and path is None else os.lstat(self._real(path))
            except OSError as e:
                raise _os_error(e) from None
            n = self.by_backing_ino.get(st.st_ino)
            d = {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
                                             "st_atime_ns", "st_mtime_ns", "st_ctime_ns")}
            for k in ("st_atime", "st_mtime", "st_ctime"):
                d[k] = d.pop(k + "_ns")
            d["st_ino"] = n.ino if n is not None else st.st_ino + (1 << 40)
            return d

    def access(self, path: str, amode: int) -> int:
        with self.mutex:
            self._enter("access")
            return 0 if os.access(self._real(path), amode) else -errno.EACCES

    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        """Names with their inode numbers (``use_ino``: an entry without one reads as deleted)."""
        with self.mutex:
            self._enter("readdir")
            out = []
            for name in (".", "..", *os.listdir(self._real(path))):
                real = self._real(path) if name in (".", "..") else self._real(path.rstrip("/") + "/" + name)
                st = os.lstat(real)
                n = self.by_backing_ino.get(st.st_ino)
                out.append((name, {"st_mode": st.st_mode, "st_ino": n.ino if n else st.st_ino + (1 << 40)}, 0))
            return out

    def statfs(self, path: str) -> dict[str, int]:
        with self.mutex:
            self._enter("statfs")
            s = os.statvfs(self._real(path))
            return {k: getattr(s, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                                                "f_files", "f_flag", "f_frsize", "f_namemax")}

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        with self.mutex:
            self._enter("fsyncdir", path)
            if path in self.ignore_dir_fsync:
                self.ops["fsyncdir ignored"] += 1
                return 0
            node = self._node(path)
            node.entries = {name: self._node(path.rstrip("/") + "/" + name) for name in os.listdir(self._real(path))}
            return 0

    def mkdir(self, path: str, mode: int) -> int:
        with self.mutex:
            self._enter("mkdir", path)
            _call(os.mkdir, self._real(path), mode)
            self._new_node(os.lstat(self._real(path)))
            return 0

    def rmdir(self, path: str) -> int:
        with self.mutex:
            self._enter("rmdir", path)
            self._gone(path)
            _call(os.rmdir, self._real(path))
            return 0

    def create(self, path: str, mode: int, flags: int) -> int:
        with self.mutex:
            self._enter("create", path)
            existed = os.path.lexists(self._real(path))
            fd = _call(os.open, self._real(path), flags | os.O_CREAT, mode)
            st = os.fstat(fd)
            n = self.by_backing_ino.get(st.st_ino) if existed else None
            if n is None:
                n = self._new_node(st)
            elif flags & os.O_TRUNC:
                self._cut_off(n, 0, st.st_size)
            self.fh_node[fd] = n
            return fd

    def open(self, path: str, flags: int) -> int:
        with self.mutex:
            self._enter("open", path)
            size = os.lstat(self._real(path)).st_size if flags & os.O_TRUNC else 0
            fd = _call(os.open, self._real(path), flags)
            n = self._node(path)
            if flags & os.O_TRUNC:
                self._cut_off(n, 0, size)
            self.fh_node[fd] = n
            return fd

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self.mutex:
            self._enter("read", path)
            return _call(os.pread, fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self.mutex:
            self._enter("write", path)
            n = _call(os.pwrite, fh, data, offset)
            node = self.fh_node.get(fh)
            if node is not None and n:
                node.dirty.update(range(offset // PAGE, (offset + n - 1) // PAGE + 1))
            return n

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        with self.mutex:
            self._enter("truncate", path)
            size = os.lstat(self._real(path)).st_size
            _call(os.truncate, self._real(path), length)
            self._cut_off(self._node(path), length, size)
            return 0

    def _cut_off(self, node: Node, length: int, old_size: int) -> None:
        """A truncate changes every page from ``length`` to the old end: they must be synced to be durable."""
        node.dirty.update(range(length // PAGE, max(length, old_size) // PAGE + 1))

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self.mutex:
            self._enter("fsync", path)
            node = self.fh_node.get(fh)
            if node is not None:
                self._fsync_file(node, fh)
            return 0

    def flush(self, path: str, fh: int) -> int:
        with self.mutex:
            self._enter("flush", path)
            return 0

    def release(self, path: str, fh: int) -> int:
        with self.mutex:  # even frozen: the kernel must be able to let go of its handles
            self.fh_node.pop(fh, None)
            try:
                os.close(fh)
            except OSError:
                pass
            return 0

    def unlink(self, path: str) -> int:
        with self.mutex:
            self._enter("unlink", path)
            self._gone(path)
            _call(os.unlink, self._real(path))
            return 0

    def rename(self, old: str, new: str) -> int:
        with self.mutex:
            self._enter("rename", new)
            self._gone(new)
            _call(os.rename, self._real(old), self._real(new))
            return 0

    def chmod(self, path: str, mode: int) -> int:
        with self.mutex:
            self._enter("chmod", path)
            _call(os.chmod, self._real(path), mode)
            self._node(path).mode = os.lstat(self._real(path)).st_mode
            return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        with self.mutex:
            self._enter("chown", path)
            _call(os.chown, self._real(path), uid, gid)
            return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        with self.mutex:
            self._enter("utimens", path)
            _call(os.utime, self._real(path), ns=times) if times else _call(os.utime, self._real(path))
            return 0


def _eio() -> OSError:
    return OSError(errno.EIO, "power is off (powercut_fs)")


def _os_error(e: OSError) -> OSError:
    return OSError(e.errno or errno.EIO, e.strerror or str(e))


def _call(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except OSError as e:
        raise _os_error(e) from None


def _control(fs: PowerCutFS, mountpoint: Path) -> None:
    """Commands on stdin; at its end (the harness is gone) the mount goes too, so nothing is left mounted."""
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "cut":
            fs.freeze()
        elif words[0] == "arm" and len(words) == 3:
            with fs.mutex:
                fs.trigger = (words[1], int(words[2]))
            fs.say({"event": "armed", "kind": words[1], "n": int(words[2])})
        elif words[0] == "stats":
            with fs.mutex:
                fs.say({"event": "stats", "ops": dict(fs.ops), "frozen": fs.frozen})
    subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def main() -> int:
    import logging

    import mfusepy

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("backing", type=Path)
    ap.add_argument("mountpoint", type=Path)
    ap.add_argument("state", type=Path, help="where the durable copies are kept (not on the backing file system)")
    ap.add_argument("--ignore-dir-fsync", action="append", default=[], metavar="REL",
                    help="a test's switch: an fsync of this directory (relative to the mount) does nothing, as if "
                         "the program had skipped it (to show that the check finds the loss)")
    args = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING if os.environ.get("POWERCUT_FS_DEBUG") else logging.CRITICAL)
    fs = PowerCutFS(args.backing.resolve(), args.state.resolve(), tuple(args.ignore_dir_fsync))
    threading.Thread(target=_control, args=(fs, args.mountpoint), daemon=True).start()
    fs.say({"event": "loaded", "files": sum(1 for n in fs.by_backing_ino.values() if not n.is_dir)})
    mfusepy.FUSE(fs, str(args.mountpoint), foreground=True, allow_other=True, hard_remove=True, use_ino=True,
                 kernel_cache=True, default_permissions=True, fsname="powercut",
                 debug=bool(os.environ.get("POWERCUT_FS_DEBUG")))
    if fs.frozen:
        fs.say(fs.rebuild())
    else:
        fs.say({"event": "unmounted", "ops": dict(fs.ops)})
    return 0


class PowerCutMount:
    """The file system as a process, for the harness and the tests: ``start()``, ``cut()``, ``remount()``.

    ``backing`` may be a small tmpfs (the harness fills it); ``state`` holds the durable copies and must be
    elsewhere. A cut is: ``freeze()`` (or an armed trigger firing), then the caller kills what ran on it, then
    ``remount()`` unmounts, rebuilds the backing directory from the durable state and mounts it again."""

    def __init__(self, backing: Path, mountpoint: Path, state: Path, ignore_dir_fsync: tuple[str, ...] = ()) -> None:
        self.backing, self.mountpoint, self.state = backing, mountpoint, state
        self.ignore_dir_fsync = ignore_dir_fsync
        self.proc: subprocess.Popen | None = None
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.cuts: list[dict[str, Any]] = []  # the "frozen" report of every cut
        self.rebuilds: list[dict[str, Any]] = []

    @staticmethod
    def available() -> str | None:
        """None, or why this machine cannot run it."""
        if not os.path.exists("/dev/fuse"):
            return "no /dev/fuse"
        if os.geteuid() != 0:
            return "not root (mounting FUSE for other processes needs allow_other)"
        try:
            import mfusepy  # noqa: F401
        except (ImportError, OSError) as e:  # OSError: libfuse3 not installed (apt: fuse3)
            return f"mfusepy/libfuse3 not usable: {e}"
        return None

    def start(self) -> "PowerCutMount":
        for p in (self.backing, self.mountpoint, self.state):
            p.mkdir(parents=True, exist_ok=True)
        if os.path.ismount(self.mountpoint):
            raise RuntimeError(f"{self.mountpoint} is mounted already")
        cmd = [sys.executable, "-m", "tests.faults.powercut_fs", str(self.backing), str(self.mountpoint),
               str(self.state)]
        for rel in self.ignore_dir_fsync:
            cmd += ["--ignore-dir-fsync", rel]
        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen(cmd, cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + 30
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"powercut_fs did not mount {self.mountpoint} (exit {self.proc.poll()})")
            time.sleep(0.02)
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("event") == "frozen":
                self.cuts.append(doc)
            elif doc.get("event") == "rebuilt":
                self.rebuilds.append(doc)
            self.messages.put(doc)

    def _send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, event: str, timeout: float = 30) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                doc = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if doc.get("event") == event:
                return doc

    def freeze(self) -> dict[str, Any]:
        """The power goes off now: nothing written from here on becomes durable (it all fails with EIO)."""
        n = len(self.cuts)
        self._send("cut")
        deadline = time.monotonic() + 30
        while len(self.cuts) <= n and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.cuts[-1]

    def arm(self, kind: str, n: int) -> None:
        """The power goes off at the ``n``-th operation of ``kind`` (``db-write``, ``salvage``, ``rename``)."""
        self._send(f"arm {kind} {n}")

    @property
    def frozen(self) -> bool:
        return len(self.cuts) > len(self.rebuilds)

    def _unmount(self) -> None:
        for _ in range(100):
            if subprocess.run(["umount", str(self.mountpoint)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)  # a process still closing its files
        else:
            subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)
        self.proc.wait(60)

    def remount(self) -> dict[str, Any] | None:
        """Unmount; if the power was cut, the backing directory is rebuilt from what was durable; mount again."""
        frozen = self.frozen
        self._unmount()
        rebuilt = self.rebuilds[-1] if frozen and self.rebuilds else None
        self.start()
        return rebuilt

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._unmount()


if __name__ == "__main__":
    sys.exit(main())
