"""The trainers' data stream over WebDataset shards: split by shard into virtual streams, so that every byte is read
once in the whole job; deterministic whatever the number of DataLoader workers; resumable exactly; tolerant of bad
samples.

A run has ``num_streams`` virtual streams (fixed for the run; the checkpoint's config records it) over the shards
that hold samples (an empty tar, a shard whose rows were all filtered out, is left out). Each epoch deals
the shards to the streams, the streams to the ranks and a rank's streams (its slots) to its DataLoader workers
(:mod:`model.datasets.stream_plan`); a stream reads its shards through its own shuffle buffer
(:mod:`model.datasets.virtual_stream`). Only the worker that owns a stream opens its shards.

A batch is ``batch_size`` consecutive items of one stream. A rank's batches come in rounds: in each round every slot
``0 .. K-1`` gives one batch, in slot order. PyTorch's DataLoader takes one item from each worker in turn, so worker
``w`` gives, per round, its slots' batches (``w, w + W, ...``) and then empty fillers up to ``ceil(K / W)`` items: the
DataLoader's items of a round are then slot 0, 1, ..., K-1 (and fillers), the same batches in the same order for
any number of workers. Fillers and the slots of finished streams come out as empty items (``num_samples`` 0 and
``raw`` 0) that a trainer passes over. Streams go on into their next epoch by themselves (one that holds fewer samples
goes round more often); with ``epochs`` set, a stream ends after that many and the rank's stream when all its streams
have ended, each stream's last batch possibly short.

A sample that fails to decode (corrupt bytes, a clip too short, ...) is left out of its batch and reported in the
batch's ``failures``; a batch whose samples all fail comes out empty and the trainer moves on. Every item carries
``position`` (None for fillers): its round and slot, and the state of its stream after it (a JSON string). A trainer folds them into
a :class:`RankPosition`, saves that, and resumes exactly there (``start``): each stream reads back only the samples
its buffer held and goes on from its shard and byte offset; no earlier shard is read.

Per-sample randomness (crops, caption dropout, frame offsets) comes from an RNG seeded by ``(seed, epoch, shard,
offset)`` of the sample, so it depends neither on workers nor on resumption.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from model.datasets.stream_plan import StreamPlan, worker_slots
from model.datasets.tar_samples import is_empty_tar
from model.datasets.virtual_stream import Item, VirtualStream, check_state

log = logging.getLogger(__name__)

#: Virtual streams of a run by default: enough for 8 ranks x 8 workers each to read its own.
DEFAULT_NUM_STREAMS = 64


class SampleError(ValueError):
    """A sample that cannot be used; ``str(err)`` is the reason."""


@dataclass
class Failure:
    key: str
    shard: str
    reason: str


def _inside(root: Path, relative: str, where: Path) -> str:
    """``root / relative``, refusing absolute paths, ``..`` escapes and URL-like entries (``pipe:``, ``http://``)."""
    if not isinstance(relative, str) or not relative or ":" in relative or Path(relative).is_absolute():
        raise ValueError(f"{where}: shard entry {relative!r} is not a relative path inside the dataset folder")
    path = (root / relative).resolve()
    if root.resolve() not in path.parents:
        raise ValueError(f"{where}: shard entry {relative!r} leaves the dataset folder {root}")
    return str(path)


def resolve_shards(shards: str, *, member: str = "shard") -> list[str]:
    """The tar files of a dataset: a pipeline output DIR (its ``manifest.json`` lists them under ``member``: ``shard``
    for LAION-Pose, ``clips`` for an HD-VILA index), a folder of .tar files (or with a ``shards/`` or ``clips/``
    folder), or a ``{00000..00009}`` brace pattern of files. FileNotFoundError when there are none."""
    path = Path(shards)
    if path.is_dir():
        manifest = path / "manifest.json"
        if manifest.is_file():
            entries = json.loads(manifest.read_text()).get("shards") or []
            listed = [_inside(path, s[member], manifest) for s in entries if s.get(member)]
            if not listed and member == "clips":
                raise FileNotFoundError(
                    f"{path} lists no clip shards: run pose-data index-hdvila with --write-clips to write them"
                )
        else:
            folder = next((path / sub for sub in ("shards", "clips") if (path / sub).is_dir()), path)
            listed = sorted(str(p) for p in folder.glob("*.tar"))
        if not listed:
            raise FileNotFoundError(f"no .tar shards under {shards}")
        missing = [s for s in listed if not Path(s).is_file()]
        if missing:
            raise FileNotFoundError(f"{shards}: listed shard(s) missing: {', '.join(missing[:3])}")
        return listed
    import braceexpand

    listed = list(braceexpand.braceexpand(shards))
    missing = [s for s in listed if not Path(s).is_file()]
    if missing:
        raise FileNotFoundError(f"shard(s) not found: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    return listed


COMPRESSED = (".gz", ".tgz", ".bz2", ".tbz2", ".xz", ".txz", ".lzma", ".zst", ".tzst", ".lz4")


def data_fingerprint(urls: list[str]) -> str:
    """A short hash of the shards' file names and sizes, in order: a saved position fits only the same shards."""
    digest = hashlib.sha256()
    for url in urls:
        digest.update(f"{Path(url).name}\t{os.path.getsize(url)}\n".encode())
    return digest.hexdigest()[:16]


class RankPosition:
    """Where a rank's stream continues: the next (round, slot) and the state of each stream that has given a batch.
    ``update`` folds in one item's ``position`` (a stream's state comes as a JSON string); ``to_dict`` is JSON (a
    checkpoint's ``positions`` entry)."""

    def __init__(self, data: dict | None = None) -> None:
        data = data or {"cursor": [0, 0], "streams": {}}
        self.cursor, self.streams = list(data["cursor"]), dict(data["streams"])
        self.data: str | None = data.get("data")  # the fingerprint of the shards it is a position in

    def update(self, position: dict | None) -> None:
        if position is None:
            return
        self.cursor = [position["round"], position["slot"] + 1]
        if "stream" in position:
            self.streams[str(position["stream"])] = position["state"]

    def to_dict(self) -> dict:
        streams = {k: json.loads(v) if isinstance(v, str) else v for k, v in self.streams.items()}
        return {"cursor": list(self.cursor), "streams": streams, **({"data": self.data} if self.data else {})}


def check_rank_position(data, where: str) -> dict:
    """ValueError naming ``where`` unless ``data`` is a :class:`RankPosition` dict."""
    cursor = data.get("cursor") if isinstance(data, dict) else None
    if not (isinstance(cursor, list) and len(cursor) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in cursor)
            and isinstance(data.get("streams"), dict) and all(isinstance(k, str) and k.isdigit() for k in data["streams"])
            and (isinstance(data.get("data"), str) and data["data"] or "data" not in data)):  # fmt: skip
        raise ValueError(f"{where}: not a data position (cursor [round, slot] and streams by number)")
    for stream, state in data["streams"].items():
        check_state(state, f"{where}, stream {stream}")
    return data


class ShardStream(torch.utils.data.IterableDataset):
    """Base class: subclasses set ``member`` and implement ``decode(n, raw) -> sample`` and ``collate(samples)``.

    Iterating gives batches (dicts from ``collate`` plus ``num_samples``, ``failures``, ``raw`` and ``position``) and
    empty items (see the module doc); :meth:`samples` gives this rank's decoded samples one by one (validation, tests).
    """

    member = "shard"

    def __init__(
        self,
        shards: str,
        *,
        seed: int = 0,
        shuffle_buffer: int = 0,  # samples per stream
        batch_size: int = 1,
        num_streams: int = DEFAULT_NUM_STREAMS,
        start: dict | None = None,  # a RankPosition dict: where a saved run's stream continues
        rank: int = 0,
        world_size: int = 1,
        epochs: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad stream split: batch_size {batch_size}, rank {rank}, world_size {world_size}")
        listed = resolve_shards(shards, member=self.member)
        compressed = [url for url in listed if url.lower().endswith(COMPRESSED)]
        if compressed:
            raise ValueError(f"{compressed[0]}: a compressed shard; the stream reads plain .tar shards (it seeks into them), as pose-data writes them")
        self.urls = [url for url in listed if not is_empty_tar(url)]  # shards whose rows were all filtered out
        if not self.urls:
            raise ValueError(f"the shards hold no sample: {', '.join(listed[:3])}{' ...' if len(listed) > 3 else ''}")
        if len(self.urls) < len(listed):
            log.info("%d of %d shards hold no sample and are left out", len(listed) - len(self.urls), len(listed))
        self.plan = StreamPlan(len(self.urls), num_streams=num_streams, world_size=world_size, seed=seed)
        self.seed, self.shuffle_buffer, self.batch_size, self.epochs = seed, shuffle_buffer, batch_size, epochs
        self.start = RankPosition(check_rank_position(start, "start") if start is not None else None)
        self.rank, self.world_size = rank, world_size
        self.slots = self.plan.streams(rank)  # slot k of this rank is stream self.slots[k]
        self.fingerprint = data_fingerprint(self.urls)
        if self.start.data and self.start.data != self.fingerprint:
            raise ValueError(
                "the saved data position is for other shards (their names or sizes changed since the checkpoint): "
                "resume on the data the run was started on, or start again"
            )
        smallest, largest = len(self.urls) // self.plan.num_streams, -(-len(self.urls) // self.plan.num_streams)
        if largest > smallest and largest > 1.25 * smallest:
            log.warning("%d shards make %d streams of %d to %d shards: the samples of the smaller streams are seen up to "
                        "%.1fx as often; a data.num_streams that divides the shard count (or more shards per stream) evens "
                        "it out", len(self.urls), self.plan.num_streams, smallest, largest, largest / smallest)  # fmt: skip
        foreign = sorted(set(self.start.streams) - {str(s) for s in self.slots}, key=int)
        if foreign:
            raise ValueError(
                f"the saved data position names stream(s) {', '.join(foreign)}, which rank {rank} does not have here "
                f"({len(self.urls)} shards with samples make {self.plan.num_streams} streams for {world_size} processes): "
                "the data changed since the checkpoint"
            )

    # ---------------------------------------------------------------------------------------------- subclass API

    def decode(self, n: str, raw: dict):
        raise NotImplementedError

    def collate(self, samples: list) -> dict:
        raise NotImplementedError

    def rng(self, n: str) -> random.Random:
        """The RNG of the sample with id ``n`` (same for any split, worker or resumption)."""
        return random.Random(f"{self.seed}:{n}")

    # ------------------------------------------------------------------------------------------------ the stream

    def _stream_batches(self, slot: int) -> Iterator[tuple[list[Item], dict]]:
        """(items, the stream's state after them) of one slot's stream, ``batch_size`` items at a time."""
        stream = self.slots[slot]
        reader = VirtualStream(self.urls, self.plan, stream, seed=self.seed, shuffle_buffer=self.shuffle_buffer,
                               epochs=self.epochs, state=self.start.streams.get(str(stream)))  # fmt: skip
        items = reader.items()
        while batch := list(itertools.islice(items, self.batch_size)):
            yield batch, reader.state()

    def _raw_batches(self, worker: int, workers: int) -> Iterator[tuple[list[Item] | None, dict | None]]:
        """Worker ``worker`` of ``workers``'s share of the rank's rounds: (items, position) per slot it owns, (None,
        position) for a finished stream's slot, (None, None) for fillers; ends when all its streams have ended."""
        count = len(self.slots)
        mine = worker_slots(count, worker, workers)
        per_round = -(-count // workers)
        first_round, first_slot = self.start.cursor
        if first_slot >= count:
            first_round, first_slot = first_round + 1, 0
        batches = {k: self._stream_batches(k) for k in mine}
        live, t = set(mine), first_round
        while live:
            for k in mine:
                if t == first_round and k < first_slot:
                    yield None, None  # given before the saved position
                    continue
                got = next(batches[k], None) if k in live else None
                if got is None:
                    live.discard(k)
                    yield None, {"round": t, "slot": k}
                else:
                    state = json.dumps(got[1], separators=(",", ":"))  # one string: the DataLoader passes it as is
                    yield got[0], {"round": t, "slot": k, "stream": self.slots[k], "state": state}
            for _ in range(per_round - len(mine)):
                yield None, None
            t += 1

    def _items(self) -> Iterator[Item]:
        """This rank's items in batch order, in one process."""
        for items, _ in self._raw_batches(0, 1):
            yield from items or ()

    def raw_samples(self) -> Iterator[tuple[str, dict]]:
        """(sample id, undecoded sample) of this rank from ``start``, in batch order (failed shards included)."""
        for item in self._items():
            yield item.id, item.raw

    def _try_decode(self, item: Item):
        raw = item.raw
        if "__error__" in raw:
            return None, Failure(raw["__key__"], str(raw.get("__url__", "?")), raw["__error__"])
        try:
            return self.decode(item.id, raw), None
        except Exception as err:  # noqa: BLE001 - any bad sample becomes a counted failure, never a crash
            reason = str(err) if isinstance(err, SampleError) else f"{type(err).__name__}: {err}"
            return None, Failure(raw.get("__key__", item.id), str(raw.get("__url__", "?")), reason)

    def samples(self) -> Iterator:
        """This rank's decoded samples from ``start``; failures are logged and skipped."""
        for item in self._items():
            sample, failure = self._try_decode(item)
            if failure is not None:
                log.warning("skipping sample %s of %s: %s", failure.key, failure.shard, failure.reason)
                continue
            yield sample

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for items, position in self._raw_batches(worker, workers):
            if items is None:
                yield {"num_samples": 0, "failures": [], "raw": 0, "position": position}
            else:
                yield self._batch(items, position)

    def _batch(self, items: list[Item], position: dict) -> dict:
        good, failures = [], []
        for item in items:
            sample, failure = self._try_decode(item)
            if failure is None:
                good.append(sample)
            else:
                failures.append(failure)
        batch = self.collate(good) if good else {}
        batch.update(num_samples=len(good), failures=failures, raw=len(items), position=position)
        return batch


def pass_through(item):
    """The DataLoader's collate for a stream's items: they are batches already (its default would walk them)."""
    return item


def make_loader(stream: ShardStream, num_workers: int) -> torch.utils.data.DataLoader:
    """The DataLoader of a trainer over ``stream``: the stream makes the batches (so they do not depend on the
    number of workers), passed on as they are, in the order the workers take turns (the DataLoader's default,
    ``in_order``, which the independence of the worker count rests on). Its own generator: creating the iterator
    must not draw from the global RNG, which a checkpoint restores."""
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=num_workers, collate_fn=pass_through,
                                       generator=torch.Generator(), persistent_workers=False)  # fmt: skip
