"""Which shards a virtual stream reads in an epoch, which streams a rank owns, and which of those a DataLoader
worker reads.

A run has a fixed number of virtual streams (``data.num_streams``, at most one per shard, and a multiple of the
number of ranks so that every rank owns as many: with 7 shards and 2 ranks, 6 streams). In each epoch the shards are shuffled with the run's seed and dealt to the streams like cards: shard
``j`` of the shuffled list goes to stream ``j % streams``, so every shard belongs to exactly one stream in an
epoch. Streams are dealt to ranks the same way (stream ``s`` to rank ``s % world_size``), and a rank's ``K``
streams, its slots ``0 .. K-1``, to its DataLoader workers (slot ``k`` to worker ``k % workers``). None of this
depends on the number of workers except the last step, which only decides who reads a stream, never what it
yields.
"""

from __future__ import annotations

import functools
import random


class StreamPlan:
    """The deal of shards to streams (per epoch) and of streams to ranks, for ``num_shards`` shards."""

    def __init__(self, num_shards: int, *, num_streams: int, world_size: int, seed: int) -> None:
        if num_streams < 1 or world_size < 1:
            raise ValueError(f"num_streams and world_size must be >= 1, got {num_streams}, {world_size}")
        if num_shards < world_size:
            raise ValueError(
                f"the data has {num_shards} shard(s) for {world_size} processes: each process reads whole shards, so "
                "it needs at least one; write the data in more, smaller shards (--shard-size) or train on fewer processes"
            )
        self.num_shards, self.world_size, self.seed = num_shards, world_size, seed
        self.num_streams = max(world_size, min(num_streams, num_shards) // world_size * world_size)

    @functools.lru_cache(maxsize=4)  # noqa: B019 - a handful of epochs per plan, the plan lives as long as its stream
    def _order(self, epoch: int) -> tuple[int, ...]:
        order = list(range(self.num_shards))
        random.Random(f"{self.seed}:shards:{epoch}").shuffle(order)
        return tuple(order)

    def shards(self, stream: int, epoch: int) -> list[int]:
        """The shard indices (into the dataset's shard list) that ``stream`` reads in ``epoch``, in order."""
        return list(self._order(epoch)[stream :: self.num_streams])

    def streams(self, rank: int) -> list[int]:
        """The streams of ``rank``: its slots ``0 .. K-1`` in order."""
        return list(range(rank, self.num_streams, self.world_size))


def worker_slots(num_slots: int, worker: int, workers: int) -> list[int]:
    """The slots (of a rank's ``num_slots``) DataLoader worker ``worker`` of ``workers`` reads."""
    return list(range(worker, num_slots, workers))
