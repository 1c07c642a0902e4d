"""Reading a file ``fyp-eval`` did not write, safely: only a regular file, and only up to a size (:func:`read_capped`).

A FIFO would make its reader wait forever, a device such as ``/dev/zero`` never ends, and a sparse file of gigabytes
would fill the memory: such a file is a :class:`SkippedFile` naming what it is (:func:`file_kind`). Used for the
sidecars and JSONL files of :mod:`model.evaluation.inputs` and the journal of :mod:`model.evaluation.resume_journal`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class SkippedFile(ValueError):
    """A file fyp-eval does not read: not a regular file, or larger than it reads; ``reason`` says which."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, for a message ("a FIFO", "a folder", ...)."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def read_capped(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` (symlinks followed) when it is a regular file of at most ``limit`` bytes; else
    :class:`SkippedFile` naming what it is: a FIFO (reading it waits forever), a device (``/dev/zero`` never ends),
    or a file too large (a sparse 6 GB file would fill the memory). Opened without blocking, checked again once open."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise SkippedFile(path, f"{file_kind(mode)}, not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as err:
        raise SkippedFile(path, f"cannot be opened ({err.strerror or err})") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # replaced between the two looks
            raise SkippedFile(path, f"{file_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise SkippedFile(path, f"{_size(info.st_size)}, larger than the {_size(limit)} fyp-eval reads")
        data = f.read(limit + 1)
    if len(data) > limit:  # grew meanwhile
        raise SkippedFile(path, f"larger than the {_size(limit)} fyp-eval reads")
    return data
