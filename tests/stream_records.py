"""What the data-stream tests record: every shard a stream opens (through a wrapper around
``model.datasets.tar_samples.open_shard``, the one place shards are opened), by which rank and DataLoader worker, and
the bytes each reader read. Workers are forked processes, so each appends to its own file under the record folder."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch


class CountingFile:
    """A binary file that counts the bytes its ``read`` gives."""

    def __init__(self, file, on_close) -> None:
        self.file, self.read_bytes, self.on_close = file, 0, on_close

    def read(self, size=-1):
        data = self.file.read(size)
        self.read_bytes += len(data)
        return data

    def seek(self, *args):
        return self.file.seek(*args)

    def tell(self):
        return self.file.tell()

    def close(self):
        self.on_close(self.read_bytes)
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def record_opens(folder: Path, rank: int = 0):
    """Record each shard opened while inside: one JSON line ``{"rank", "worker", "pid", "url", "bytes"}`` per open."""
    from model.datasets import tar_samples

    folder.mkdir(parents=True, exist_ok=True)
    real = tar_samples.open_shard

    def opener(url: str):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else -1

        def on_close(read_bytes: int) -> None:
            line = {"rank": rank, "worker": worker, "pid": os.getpid(), "url": url, "bytes": read_bytes}
            with open(folder / f"opens-{os.getpid()}.jsonl", "a") as out:
                out.write(json.dumps(line) + "\n")

        return CountingFile(real(url), on_close)

    tar_samples.open_shard = opener
    try:
        yield folder
    finally:
        tar_samples.open_shard = real


def read_opens(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("opens-*.jsonl")) for line in f.read_text().splitlines()]
