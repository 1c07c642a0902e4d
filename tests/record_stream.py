"""Read one epoch of a training data stream in each process of a torchrun launch (gloo), with 0 to 3 DataLoader
workers, and write per rank the keys of its batches and every shard it opened (tests/stream_records.py).

    torchrun --nproc_per_node N tests/record_stream.py RECORD KIND=DATA [KIND=DATA ...]   (KIND: laion or clips)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stream_records import record_opens  # noqa: E402 - the tests' folder, not a package

WORKERS = (0, 1, 2, 3)


def make_stream(kind: str, data: str, rank: int, world_size: int):
    from model.datasets.hdvila_clips import HdvilaClipStream
    from model.datasets.laion_pose import LaionPoseStream

    # 4 streams over 4-5 shards: several rounds, fillers with 3 workers, streams that end at different rounds
    split = dict(seed=7, shuffle_buffer=3, batch_size=1, num_streams=4, rank=rank, world_size=world_size, epochs=1)
    if kind == "laion":
        return LaionPoseStream(data, resolution=64, **split)
    return HdvilaClipStream(data, num_frames=2, resolution=64, **split)


def main() -> None:
    record = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    for spec in sys.argv[2:]:
        kind, data = spec.split("=", 1)
        for workers in WORKERS:
            folder = record / kind / f"workers{workers}"
            with record_opens(folder, rank=rank):
                loader = torch.utils.data.DataLoader(make_stream(kind, data, rank, world), batch_size=None, num_workers=workers)
                batches = [batch["keys"] for batch in loader if batch["num_samples"]]
            (folder / f"rank{rank}.json").write_text(json.dumps(batches))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
