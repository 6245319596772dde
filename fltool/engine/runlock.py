"""One run per work dir: what ``fltool train`` writes into a work dir is its alone.

- :func:`holds_run`: a work dir holds a run once it has a checkpoint, a ``last_checkpoint`` or a ``metrics.json``;
  ``fltool train`` never starts a new run over one (it resumes it with ``--resume``, else refuses, or, where the user
  named no work dir, takes the next free ``<name>_2``, ``_3``... as Ultralytics does with ``runs/train2``).
- :func:`work_dir_lock`: while a run trains, its work dir holds ``.fltool-run.lock``, locked with ``flock`` and
  naming the process. A second run into the same folder is refused in one line naming that process. The kernel
  drops the lock when its process ends, however it ends, so a lock left by a killed run is taken over (and said).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

from fltool.errors import ConfigError

LOCK_NAME = ".fltool-run.lock"
_RUN_FILES = re.compile(r"^(?:(?:iter|epoch)_\d+\.pth|last_checkpoint|metrics\.json)$")


def run_files(work_dir: Path) -> list[str]:
    """The names of the files that make ``work_dir`` hold a run (checkpoints, last_checkpoint, metrics.json)."""
    try:
        return sorted(p.name for p in Path(work_dir).iterdir() if _RUN_FILES.match(p.name))
    except (FileNotFoundError, NotADirectoryError):
        return []


def holds_run(work_dir: Path) -> bool:
    return bool(run_files(work_dir))


def next_free(work_dir: Path) -> Path:
    """``work_dir`` if it holds no run, else the first of ``<work_dir>_2``, ``_3``, ... that holds none and is not
    in use."""
    work_dir = Path(work_dir)
    candidate, n = work_dir, 2
    while holds_run(candidate) or holder(candidate) is not None:
        candidate, n = work_dir.with_name(f"{work_dir.name}_{n}"), n + 1
    return candidate


def _describe(info: dict) -> str:
    where = f"on {info['host']}" if info.get("host") and info.get("host") != socket.gethostname() else ""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"])) if info.get("started") else "?"
    return " ".join(filter(None, [f"process {info.get('pid', '?')}", where, f"since {since}",
                                  f"({info['command']})" if info.get("command") else ""]))


def _read(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def holder(work_dir: Path) -> Optional[str]:
    """Who holds ``work_dir``'s lock now (a description), or None where nobody does."""
    import fcntl

    path = Path(work_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _describe(_read(path) or {})
    finally:
        os.close(fd)  # closing drops the shared lock taken to look
    return None


def _acquire(path: Path) -> tuple[int, Optional[dict]]:
    """An open, locked descriptor of ``path`` and what the file said before (a previous holder), or ConfigError."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            info = _read(path) or {}
            raise ConfigError(f"work dir {path.parent} is in use by another run: {_describe(info)}",
                              "wait for it to finish, or give another --work-dir") from None
        # The holder before us may have removed the file after we opened it: then our lock is on a dead inode.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, _read(path)
        os.close(fd)


@contextlib.contextmanager
def work_dir_lock(work_dir: Path, enabled: bool = True) -> Iterator[list]:
    """Hold ``work_dir``'s lock for the block; yields notes (a lock taken over from a process that is gone)."""
    if not enabled:
        yield []
        return
    work_dir = Path(work_dir)
    created = not work_dir.exists()
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / LOCK_NAME
    fd, before = _acquire(path)
    notes = []
    if before:
        notes.append(f"took over the lock of {work_dir} left by {_describe(before)}, which is no longer running")
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
            "command": " ".join(["fltool", *sys.argv[1:]])[:300] if sys.argv else ""}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield notes
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still holding it, so that a waiting run locks a fresh file (see _acquire)
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                work_dir.rmdir()  # a run that stopped before writing anything leaves no empty folder behind
