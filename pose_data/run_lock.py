"""One run per output folder: an exclusive lock that a dead run cannot leave behind.

``OUT/.lock`` is locked with ``flock`` for the whole run and holds who holds it (command, pid, host, start
time). The operating system drops the lock when the process ends, however it ends (SIGKILL included), so a
later run never finds a stuck lock; a second run started while the first is alive stops at once with a
message naming the first. The file itself stays (an unlocked ``.lock`` means nothing) and ``--overwrite``
leaves it alone. On a shared file system without working ``flock`` (some NFS setups) the lock cannot protect
runs on different machines.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lock"


class OutputInUse(RuntimeError):
    """Another live run holds the output folder."""


@contextlib.contextmanager
def lock_output(out_dir: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold ``out_dir``'s lock while the block runs; :class:`OutputInUse` when another run holds it."""
    import fcntl

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_NAME
    # O_NOFOLLOW: a symlink planted as .lock must not make us truncate its target
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    handle = os.fdopen(fd, "r+")  # held open for the whole run
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            try:
                who = json.loads(holder)
                detail = f"{who.get('command')} (pid {who.get('pid')} on {who.get('host')}, started {who.get('started')})"
            except (json.JSONDecodeError, AttributeError):
                detail = "another process"
            raise OutputInUse(f"{out_dir} is in use by {detail}; wait for it to end, or use another --output") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"command": command, "pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")  # fmt: skip
        handle.flush()
        yield path
    finally:
        handle.close()  # closing drops the lock
