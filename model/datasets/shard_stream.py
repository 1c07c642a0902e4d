"""The trainers' data stream over WebDataset shards: deterministic, split by rank and DataLoader worker, resumable
exactly, and tolerant of bad samples.

The stream of one run is the sequence of raw samples ``n = 0, 1, 2, ...`` over epochs (shard order and shuffle buffer
seeded per epoch). Raw sample ``n`` belongs to process (rank) ``n % world_size``. Each rank groups its raw samples
into batches of ``batch_size`` *raw* samples, and batch ``j`` (counted from where the rank starts) is decoded by
DataLoader worker ``j % num_workers``; PyTorch's DataLoader takes batches from its workers in that same round-robin
order, so the batches a rank sees are the same, in the same order, for any number of workers. Each worker reads the
bytes of every sample of the rank (cheap) and decodes only its own batches.

A sample that fails to decode (corrupt bytes, a clip too short, ...) is left out of its batch and reported in the
batch's ``failures``; a batch whose samples all fail comes out empty (``num_samples`` 0) and the trainer moves on.
Every batch carries ``position``: ``[n, epoch, first]``, the raw index where the rank's stream continues after it, the
epoch of its last sample and the raw index at which that epoch began. A trainer that saves the position of the last
batch it used resumes exactly there (``start``): earlier epochs are skipped without reading them, and the rest of
the epoch is read (not decoded) up to ``n``.

Per-sample randomness (crops, caption dropout, frame offsets) comes from an RNG seeded by ``(seed, n)``, so it does
not depend on workers or resumption either.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)


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


class ShardStream(torch.utils.data.IterableDataset):
    """Base class: subclasses set ``member`` and implement ``decode(n, raw) -> sample`` and ``collate(samples)``.

    Iterating gives batches (dicts from ``collate`` plus ``num_samples``, ``failures``, ``raw`` and ``position``);
    :meth:`samples` gives this rank's decoded samples one by one (validation, tests).
    """

    member = "shard"

    def __init__(
        self,
        shards: str,
        *,
        seed: int = 0,
        shuffle_buffer: int = 0,
        batch_size: int = 1,
        start: int | list[int] = 0,  # a raw index, or a batch's full position [n, epoch, first]
        rank: int = 0,
        world_size: int = 1,
        epochs: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad stream split: batch_size {batch_size}, rank {rank}, world_size {world_size}")
        self.urls = resolve_shards(shards, member=self.member)
        self.seed, self.shuffle_buffer, self.batch_size = seed, shuffle_buffer, batch_size
        self.start, self.rank, self.world_size, self.epochs = start, rank, world_size, epochs

    # ---------------------------------------------------------------------------------------------- subclass API

    def decode(self, n: int, raw: dict):
        raise NotImplementedError

    def collate(self, samples: list) -> dict:
        raise NotImplementedError

    def rng(self, n: int) -> random.Random:
        """The RNG of raw sample ``n`` (same for any split, worker or resumption)."""
        return random.Random(self.seed * 1_000_003 + n)

    # ------------------------------------------------------------------------------------------------ the stream

    def _raw(self, epoch: int) -> Iterator[dict]:
        """Undecoded samples of one epoch in the seeded order. A shard that cannot be read on (a truncated or
        corrupt tar) ends there and becomes one failed sample ``{"__error__": reason}`` in the stream."""
        import webdataset as wds

        urls = list(self.urls)
        random.Random(self.seed * 1_000_003 + epoch).shuffle(urls)
        broken: list[dict] = []

        opened = {"url": "?"}  # the shard webdataset is reading (it opens one at a time, in order)

        def sources() -> Iterator[dict]:
            for url in urls:
                opened["url"] = url
                yield {"url": url}

        def shard_error(exn: Exception) -> bool:
            # webdataset reports a broken tar as (message, stream, url), sometimes first without the url
            args = exn.args if isinstance(exn.args, tuple) else ()
            named = len(args) >= 2 and isinstance(args[-1], str)
            message = str(args[0]).split(" @ <")[0] if args else str(exn)
            failure = {"__key__": "(shard)", "__url__": args[-1] if named else opened["url"], "__named__": named,
                       "__error__": f"the shard cannot be read on: {type(exn).__name__}: {message}"}  # fmt: skip
            if named and broken and not broken[-1]["__named__"] and broken[-1]["__url__"] == failure["__url__"]:
                broken[-1] = failure  # the same error, reported again with its shard
            else:
                broken.append(failure)
            return True  # go on with the next shard

        def with_errors(samples: Iterator[dict]) -> Iterator[dict]:
            for sample in samples:
                yield from broken
                broken.clear()
                yield sample
            yield from broken
            broken.clear()

        stream = with_errors(wds.tarfile_to_samples(handler=shard_error)(sources()))
        if self.shuffle_buffer > 1:
            stream = wds.shuffle(self.shuffle_buffer, self.shuffle_buffer, rng=random.Random(self.seed + epoch))(stream)
        yield from stream

    def raw_samples(self) -> Iterator[tuple[int, dict]]:
        """(raw index, undecoded sample) of this rank over epochs, from ``start``."""
        for n, raw, _, _ in self._positioned():
            yield n, raw

    def _positioned(self) -> Iterator[tuple[int, dict, int, int]]:
        """(raw index, sample, epoch, raw index of the epoch's first sample) of this rank, from ``start``. With a
        full position as ``start``, the epochs before its own are not read at all."""
        target, epoch, n = self.start, 0, 0
        if isinstance(self.start, (list, tuple)):
            target, epoch, n = (int(v) for v in self.start)
        while self.epochs is None or epoch < self.epochs:
            first, got = n, False
            for raw in self._raw(epoch):
                got = True
                if n >= target and n % self.world_size == self.rank:
                    yield n, raw, epoch, first
                n += 1
            if not got:
                raise ValueError(f"the shards hold no sample: {', '.join(self.urls[:3])}{' ...' if len(self.urls) > 3 else ''}")
            epoch += 1

    def _try_decode(self, n: int, raw: dict):
        if "__error__" in raw:
            return None, Failure(raw["__key__"], str(raw.get("__url__", "?")), raw["__error__"])
        try:
            return self.decode(n, raw), None
        except Exception as err:  # noqa: BLE001 - any bad sample becomes a counted failure, never a crash
            reason = str(err) if isinstance(err, SampleError) else f"{type(err).__name__}: {err}"
            return None, Failure(raw.get("__key__", f"#{n}"), str(raw.get("__url__", "?")), reason)

    def samples(self) -> Iterator:
        """This rank's decoded samples from ``start``; failures are logged and skipped."""
        for n, raw in self.raw_samples():
            sample, failure = self._try_decode(n, raw)
            if failure is not None:
                log.warning("skipping sample %s of %s: %s", failure.key, failure.shard, failure.reason)
                continue
            yield sample

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        pending: list[tuple[int, dict, int, int]] = []
        j = 0
        for item in self._positioned():
            pending.append(item)
            if len(pending) < self.batch_size:
                continue
            if j % workers == worker:
                yield self._batch(pending)
            pending, j = [], j + 1
        if pending and j % workers == worker:  # a finite stream's last, partial batch
            yield self._batch(pending)

    def _batch(self, pending: list[tuple[int, dict, int, int]]) -> dict:
        good, failures = [], []
        for n, raw, _, _ in pending:
            sample, failure = self._try_decode(n, raw)
            if failure is None:
                good.append(sample)
            else:
                failures.append(failure)
        batch = self.collate(good) if good else {}
        last_n, _, epoch, first = pending[-1]
        batch.update(num_samples=len(good), failures=failures, raw=len(pending), position=[last_n + 1, epoch, first])
        return batch

