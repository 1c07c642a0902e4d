"""One virtual stream: its shards of each epoch read in turn (:mod:`model.datasets.stream_plan`), through a shuffle
buffer, with a position that a resumed run continues from exactly.

The buffer holds up to ``shuffle_buffer`` samples. Each sample read goes in; once it is full, one sample, picked
by a hash of ``(seed, epoch, stream, samples given out this epoch)``, comes out. At the end of the stream's epoch the
buffer empties in the same way before the next epoch's first shard is read, so epochs never mix. A stream goes on
into its next epoch by itself when its shards are done (streams that hold fewer samples go round more often);
with ``epochs`` set it ends after that many.

:meth:`VirtualStream.state` is JSON: ``epoch``; ``shard`` (index into the epoch's shards of the stream), ``offset``
(byte) and ``sample`` (count) where its reader goes on; ``emitted`` (samples given out this epoch); ``buffer``: the
``[shard, offset]`` of each sample in the buffer, in buffer order. A stream built from that state reads each buffered
sample back alone by its offset, opens its current shard at ``offset`` and goes on as the first would have: no earlier
shard is read.

A shard that cannot be read on (missing, cut, garbage) gives one failed item where the reading stopped, and the
stream goes on with its next shard.
"""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from model.datasets.stream_plan import StreamPlan
from model.datasets.tar_samples import ShardReadError, read_samples, read_samples_at

STATE_KEYS = ("epoch", "shard", "offset", "sample", "emitted")
UNREADABLE = (ShardReadError, OSError)


@dataclass
class Item:
    """A sample of a stream (``raw`` as WebDataset gives it), or a failure (``raw`` holds ``__error__``)."""

    id: str  # "epoch:shard index in the dataset:byte offset", what per-sample randomness is seeded with
    where: list[int]  # [shard index within the stream's epoch, byte offset]
    raw: dict


def fresh_state() -> dict:
    return {"epoch": 0, "shard": 0, "offset": 0, "sample": 0, "emitted": 0, "buffer": []}


def check_state(state, where: str) -> dict:
    """ValueError naming ``where`` unless ``state`` is a stream state (see the module doc)."""

    def count(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    ok = isinstance(state, dict) and all(count(state.get(k)) for k in STATE_KEYS) and isinstance(state.get("buffer"), list)
    if not ok or not all(isinstance(b, list) and len(b) == 2 and all(count(v) for v in b) for b in state["buffer"]):
        raise ValueError(f"{where}: not a data stream position ({', '.join(STATE_KEYS)} non-negative integers, buffer of [shard, offset])")
    return state


class VirtualStream:
    """Stream ``stream`` of ``plan`` over ``urls`` (the dataset's shard list), from ``state`` (None: the start)."""

    def __init__(self, urls: list[str], plan: StreamPlan, stream: int, *, seed: int, shuffle_buffer: int,
                 epochs: int | None = None, state: dict | None = None) -> None:  # fmt: skip
        self.urls, self.plan, self.stream = urls, plan, stream
        self.seed, self.capacity, self.epochs = seed, max(1, shuffle_buffer), epochs
        self.pos = {k: v for k, v in (state or fresh_state()).items() if k != "buffer"}
        self._buffer_at = [list(b) for b in (state or {}).get("buffer", [])]  # read back when the stream starts
        self.buffer: list[Item] | None = None

    def state(self) -> dict:
        """Where the stream stands after the last item :meth:`items` gave (JSON)."""
        buffer = self._buffer_at if self.buffer is None else [list(item.where) for item in self.buffer]
        return {**self.pos, "buffer": buffer}

    def items(self) -> Iterator[Item]:
        """The stream's items from its state on, over epochs (until ``epochs`` when set)."""
        pos = self.pos
        self.buffer = self._read_back(self._buffer_at)
        while self.epochs is None or pos["epoch"] < self.epochs:
            shards = self.plan.shards(self.stream, pos["epoch"])
            gave = pos["emitted"] + len(self.buffer) > 0 or pos["shard"] > 0
            while pos["shard"] < len(shards):
                for item in self._read_shard(shards):
                    gave = True
                    if "__error__" in item.raw:
                        yield item  # a failure is not a sample: it skips the buffer
                        continue
                    self.buffer.append(item)
                    if len(self.buffer) >= self.capacity:
                        yield self._give()
            while self.buffer:
                yield self._give()
            if not gave:  # readable tars without a sample (only directories or metadata): one failure, named
                names = ", ".join(self.urls[i] for i in shards[:3]) + (" ..." if len(shards) > 3 else "")
                yield Item(f"{pos['epoch']}:none", [0, 0], _failure("(stream)", names, "the stream's shards of this epoch hold no sample"))
            pos.update(epoch=pos["epoch"] + 1, shard=0, offset=0, sample=0, emitted=0)

    def _read_shard(self, shards: list[int]) -> Iterator[Item]:
        """The samples of the current shard from the reader's offset, moving the reader on with each and to the next
        shard at the end; a shard that cannot be read on ends with one failed item (the reader already past it)."""
        pos = self.pos
        shard = pos["shard"]
        index, url = shards[shard], self.urls[shards[shard]]
        try:
            for offset, raw, after in read_samples(url, pos["offset"]):
                pos.update(offset=after, sample=pos["sample"] + 1)
                yield Item(f"{pos['epoch']}:{index}:{offset}", [shard, offset], raw)
        except UNREADABLE as err:
            _fatal_if_out_of_files(err)
            pos.update(shard=shard + 1, offset=0, sample=0)
            yield Item(f"{pos['epoch']}:{index}:error", [shard, 0], _failure("(shard)", url, f"the shard cannot be read on: {_reason(err)}"))
            return
        pos.update(shard=shard + 1, offset=0, sample=0)

    def _read_back(self, wheres: list[list[int]]) -> list[Item]:
        """The buffered samples of a saved state, each read alone from its shard and offset (each shard opened once)."""
        epoch = self.pos["epoch"]
        shards = self.plan.shards(self.stream, epoch)
        by_shard: dict[int, list[int]] = {}
        for shard, offset in wheres:
            if shard >= len(shards):
                raise ValueError(f"stream {self.stream}: a buffered sample in shard {shard} of {len(shards)}: the data changed since the checkpoint")
            by_shard.setdefault(shard, []).append(offset)
        read: dict[tuple[int, int], dict] = {}
        for shard, offsets in by_shard.items():
            url = self.urls[shards[shard]]
            try:
                raws = read_samples_at(url, offsets)
            except OSError as err:
                _fatal_if_out_of_files(err)
                raws = [err] * len(offsets)
            for offset, raw in zip(offsets, raws):
                if isinstance(raw, Exception):
                    raw = _failure("(shard)", url, f"a buffered sample cannot be read back: {_reason(raw)}")
                read[shard, offset] = raw
        return [Item(f"{epoch}:{shards[shard]}:{offset}", [shard, offset], read[shard, offset]) for shard, offset in wheres]

    def _give(self) -> Item:
        """Take the buffered sample the hash picks (the last one takes its place)."""
        pos = self.pos
        key = f"{self.seed}:{pos['epoch']}:{self.stream}:{pos['emitted']}".encode()
        i = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % len(self.buffer)
        self.buffer[i], self.buffer[-1] = self.buffer[-1], self.buffer[i]
        pos["emitted"] += 1
        return self.buffer.pop()


def _failure(key: str, url: str, reason: str) -> dict:
    """The raw item of a failure: what the stream's batches report as one failed sample."""
    return {"__key__": key, "__url__": url, "__error__": reason}


def _fatal_if_out_of_files(err: Exception) -> None:
    """Running out of file handles is the machine's problem, not the shard's: stop rather than count it."""
    if isinstance(err, OSError) and err.errno in (errno.EMFILE, errno.ENFILE):
        raise err


def _reason(err: Exception) -> str:
    name = "ReadError" if isinstance(err, ShardReadError) else type(err).__name__
    return f"{name}: {err}"
