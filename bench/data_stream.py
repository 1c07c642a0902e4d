"""Benchmark of the trainers' data stream (:class:`model.datasets.shard_stream.ShardStream`) over WebDataset shards:
bytes read per process, and samples/s against a bare ``webdataset`` loop over the same tar files.

The shards are built by the project: ``pose-data index-hdvila --write-clips`` (the real pipeline, on a local Ray
cluster of 2 CPUs) over the bundled real videos (``pose_data/sample_data/hdvila``), cut into 1.5 s clips every 0.25 s
(50 clips: 256-px square H.264 at the source frame rate, in 2 shards of 25). To have enough bytes for a timing, the
dataset is ``--shards`` copies of those built tar files under new names (byte-for-byte copies of project-built
shards; only the file names differ). ``--data DIR`` reuses a pipeline output (an index-hdvila or build-laion-pose
OUT, or a folder of .tar files) instead of building one.

It prints:
  * bytes read: for world sizes 1 and 2 (ranks simulated in this process, one stream per rank) and 0..4 DataLoader
    workers, one epoch (``epochs=1``) with every shard opened through a wrapper of
    ``model.datasets.tar_samples.open_shard`` that counts the bytes its ``read`` returns, per (rank, worker): the sum
    over all readers / the dataset's bytes (goal 1.0; the stream skips the padding of members to 512 bytes and the
    tar's trailing record padding, so it is a little under 1.0), the same sum / the bytes a reader of every sample
    needs (headers, member data, one end-of-archive block; goal 1.0: above it, some bytes were read twice or bytes
    no sample needs were read), the largest and smallest
    reader's share against 1 / (world x workers), the files opened, and whether any file was opened by two readers
    (goal: none);
  * throughput: samples/s of one epoch of the stream (world 1, ``shuffle_buffer=0``, through a DataLoader as the
    trainers read it, with 0 and 2 workers; also iterated directly, and with a shuffle buffer) against a bare
    ``webdataset`` loop over the same tars (``wds.WebDataset(urls, shardshuffle=False)``, 0 workers, also through a
    DataLoader to show that overhead alone; for 2 workers
    ``nodesplitter=None, workersplitter=wds.split_by_worker`` through a DataLoader), both doing the same trivial
    per-sample work (the total length of the sample's byte fields), and the ratio stream / webdataset (goal >= 0.9).
    One untimed pass first (page cache warm), then the best of ``--repeats`` passes.

``--profile`` adds a cProfile of the 0-worker stream passes (DataLoader; without and with the shuffle buffer).

    .venv/bin/python bench/data_stream.py [--shards 256] [--repeats 3] [--data DIR] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO / "pose_data" / "sample_data" / "hdvila"
CLIP_SECONDS, CLIP_EVERY, CLIP_SIZE, BUILT_SHARD_SIZE = 1.5, 0.25, 256, 26


# ------------------------------------------------------------------------------------------------ the shards


def build_clip_shards(out: Path) -> None:
    """``index-hdvila --write-clips`` over the bundled videos into ``out`` (run in a child process: Ray stays out of
    the process that forks the DataLoader workers)."""
    import av
    import ray

    from pipelines.hdvila_index import build_hdvila_index
    from pose_data.config import load_config
    from pose_data.hdvila.config import HdvilaIndexConfig, preset_or_file

    lines, spans = [], 0
    for name in ("bikes", "bigbuckbunny"):
        with av.open(str(VIDEOS / f"{name}.mp4")) as container:
            duration = container.duration / 1e6
        clips, start = [], 0.0
        while start + CLIP_SECONDS <= duration - 0.05:
            clips.append({"clip_id": f"{name}.{len(clips)}.mp4", "span": [f"{start:.3f}", f"{start + CLIP_SECONDS:.3f}"]})
            start += CLIP_EVERY
        spans += len(clips)
        lines.append(json.dumps({"video_id": name, "url": f"https://www.youtube.com/watch?v={name}", "clip": clips}))
    meta = out.parent / "bench-meta.jsonl"
    meta.write_text("\n".join(lines) + "\n")
    layers = [
        preset_or_file("tiny"),
        {"shard_size": BUILT_SHARD_SIZE, "preview_clips": 0, "clips": {"size": CLIP_SIZE, "fps": None}},
    ]
    cfg = load_config(HdvilaIndexConfig, *layers)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        manifest = build_hdvila_index([str(meta)], str(VIDEOS), str(out), cfg, captions=None, progress=False)
    finally:
        ray.shutdown()
    if manifest["num_ok"] != spans:
        raise SystemExit(f"index-hdvila kept {manifest['num_ok']} of {spans} clips: {manifest['counts']}")


def built_tars(path: str) -> list[str]:
    """The tar files of a pipeline output (clip shards of index-hdvila, or build-laion-pose's shards) or folder."""
    from model.datasets.shard_stream import resolve_shards

    for member in ("clips", "shard"):
        try:
            return resolve_shards(path, member=member)
        except FileNotFoundError:
            continue
    raise SystemExit(f"no .tar shards under {path}")


def make_dataset(tars: list[str], folder: Path, count: int) -> list[str]:
    """``count`` copies of ``tars`` (in turn) as ``folder/00000.tar, ...``."""
    folder.mkdir(parents=True)
    urls = []
    for i in range(count):
        dest = folder / f"{i:05d}.tar"
        shutil.copyfile(tars[i % len(tars)], dest)
        urls.append(str(dest))
    return urls


# ---------------------------------------------------------------------------------------- the stream and work


def touch(raw: dict) -> int:
    """The trivial per-sample work of both sides: the total length of the sample's byte fields."""
    return sum(len(v) for v in raw.values() if isinstance(v, bytes))


def bench_stream_class():
    from model.datasets.shard_stream import ShardStream

    class BenchStream(ShardStream):
        """A ShardStream that decodes nothing: a sample is the length of its bytes."""

        member = "clips"

        def decode(self, n: str, raw: dict) -> int:
            return touch(raw)

        def collate(self, samples: list) -> dict:
            return {"bytes": sum(samples)}

    return BenchStream


# ---------------------------------------------------------------------------------------------- bytes read

_RECORDS: dict = {"dir": None, "rank": 0}  # set before each rank's DataLoader starts; forked workers inherit it


class CountingFile:
    """A shard file that counts the bytes ``read`` returns and, when closed, appends one record to its process's file."""

    def __init__(self, file, url: str) -> None:
        import torch

        info = torch.utils.data.get_worker_info()
        self.file, self.url, self.bytes, self.closed_once = file, url, 0, False
        self.rank, self.worker = _RECORDS["rank"], (info.id if info is not None else -1)

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.bytes += len(data)
        return data

    def close(self) -> None:
        if not self.closed_once:
            self.closed_once = True
            record = {"rank": self.rank, "worker": self.worker, "pid": os.getpid(), "url": self.url, "bytes": self.bytes}
            with open(Path(_RECORDS["dir"]) / f"{os.getpid()}.jsonl", "a") as log:
                log.write(json.dumps(record) + "\n")
        self.file.close()

    def __getattr__(self, name):  # seek, tell, name, mode, ... of the real file
        return getattr(self.file, name)

    def __enter__(self) -> CountingFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def needed_bytes(url: str) -> int:
    """The bytes a reader of every sample must read: each member's header(s) and data, and the end-of-archive block
    (not the padding of members to 512 bytes, nor the trailing record padding)."""
    import tarfile

    with tarfile.open(url, "r:") as tar:
        return sum(info.offset_data - info.offset + info.size for info in tar) + tarfile.BLOCKSIZE


def bytes_read(data: str, urls: list[str], needed: int, world: int, workers: int, args) -> dict:
    """One epoch of every rank's stream with ``open_shard`` wrapped; the records per (rank, worker)."""
    import torch

    import model.datasets.tar_samples as tar_samples

    stream_class = bench_stream_class()
    real_open = tar_samples.open_shard
    samples = 0
    with tempfile.TemporaryDirectory() as records:
        _RECORDS["dir"] = records
        tar_samples.open_shard = lambda url: CountingFile(real_open(url), url)
        try:
            for rank in range(world):
                _RECORDS["rank"] = rank
                stream = stream_class(data, epochs=1, shuffle_buffer=0, batch_size=args.batch_size, num_streams=args.streams,
                                      rank=rank, world_size=world)  # fmt: skip
                for item in torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers):
                    samples += item["num_samples"]
        finally:
            tar_samples.open_shard = real_open
        rows = [json.loads(line) for f in sorted(Path(records).glob("*.jsonl")) for line in f.read_text().splitlines()]
    total = sum(os.path.getsize(u) for u in urls)
    readers = {(r, w): 0 for r in range(world) for w in (range(workers) if workers else [-1])}
    opened_by = defaultdict(set)
    for row in rows:
        readers[(row["rank"], row["worker"])] += row["bytes"]
        opened_by[row["url"]].add((row["rank"], row["worker"]))
    read = sum(readers.values())
    shares = [b / read for b in readers.values()] if read else [0.0]
    return {
        "world": world, "workers": workers, "readers": len(readers), "opens": len(rows), "files": len(opened_by),
        "ratio": read / total, "needed": read / needed, "read": read, "max_share": max(shares), "min_share": min(shares),
        "ideal": 1 / len(readers), "shared": sum(len(s) > 1 for s in opened_by.values()), "samples": samples,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------- throughput


def stream_pass(data: str, workers: int, shuffle_buffer: int, args, direct: bool = False) -> int:

    stream = bench_stream_class()(
        data, epochs=1, shuffle_buffer=shuffle_buffer, batch_size=args.batch_size, num_streams=args.streams
    )
    from model.datasets.shard_stream import make_loader

    items = iter(stream) if direct else make_loader(stream, workers)  # the trainers' DataLoader
    samples = 0
    for item in items:
        samples += item["num_samples"]
    return samples


def wds_pass(urls: list[str], workers: int, loader: bool = False) -> int:
    import torch
    import webdataset as wds

    if workers == 0 and not loader:
        samples = 0
        for sample in wds.WebDataset(urls, shardshuffle=False):
            touch(sample)
            samples += 1
        return samples
    from model.datasets.shard_stream import pass_through

    dataset = wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, workersplitter=wds.split_by_worker).map(touch)
    return sum(1 for _ in torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=pass_through))


def best_rate(run, repeats: int) -> tuple[float, int]:
    """(samples/s of the fastest of ``repeats`` timed passes after one untimed one, samples per pass)."""
    samples = run()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        got = run()
        best = min(best, time.perf_counter() - t0)
        if got != samples:
            raise SystemExit(f"a pass gave {got} samples, the first {samples}")
    return samples / best, samples


def profile_stream(data: str, shuffle_buffer: int, args) -> None:
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    stream_pass(data, 0, shuffle_buffer, args)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
    print(f"\ncProfile of the 0-worker stream pass (DataLoader, shuffle_buffer {shuffle_buffer}), by internal time:")
    print(out.getvalue())


# ---------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=256, help="copies of the built shards in the dataset")
    ap.add_argument("--data", help="a pipeline output (or folder of .tar shards) to copy instead of building one")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--streams", type=int, default=64, help="num_streams of the stream (the trainers' default 64)")
    ap.add_argument("--batch-size", type=int, default=1, help="the stream's batch_size (1: one item per sample, as webdataset)")
    ap.add_argument("--shuffle-buffer", type=int, default=100, help="the shuffle buffer of the extra shuffled run")
    ap.add_argument("--max-workers", type=int, default=4)
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the 0-worker stream passes")
    ap.add_argument("--build-into", help=argparse.SUPPRESS)  # child process: build the shards there
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # 3 or 4 workers on a 2-core machine
    if args.build_into:
        build_clip_shards(Path(args.build_into))
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = args.data
        if source is None:
            t0 = time.perf_counter()
            out = subprocess.run(
                [sys.executable, __file__, "--build-into", str(tmp / "built")], capture_output=True, text=True, cwd=REPO
            )
            if out.returncode:
                print(out.stdout[-4000:], out.stderr[-4000:], sep="\n", file=sys.stderr)
                raise SystemExit("building the shards with index-hdvila failed")
            source = str(tmp / "built")
            print(f"built {source} with index-hdvila --write-clips in {time.perf_counter() - t0:.1f} s")
        tars = built_tars(source)
        data = tmp / "data"
        urls = make_dataset(tars, data, args.shards)
        total, needed = sum(os.path.getsize(u) for u in urls), sum(needed_bytes(u) for u in urls)
        print(f"dataset: {len(urls)} shards (copies of {len(tars)} built: {', '.join(Path(t).name for t in tars)}), "
              f"{total / 1e6:.1f} MB; stream num_streams {args.streams}, batch_size {args.batch_size}")  # fmt: skip

        print("\nbytes read in one epoch (shuffle_buffer 0), open_shard wrapped; a reader is one (rank, DataLoader worker)")
        print(f"{'world':>5} {'workers':>7} {'readers':>7} {'opens':>5} {'files':>5} {'samples':>7} {'read/dataset':>12} {'read/needed':>11} "
              f"{'max share':>9} {'min share':>9} {'ideal':>7} {'shared files':>12}")  # fmt: skip
        for world in (1, 2):
            for workers in range(args.max_workers + 1):
                r = bytes_read(str(data), urls, needed, world, workers, args)
                print(f"{r['world']:>5} {r['workers']:>7} {r['readers']:>7} {r['opens']:>5} {r['files']:>5} {r['samples']:>7} "
                      f"{r['ratio']:>12.6f} {r['needed']:>11.6f} {r['max_share']:>9.4f} {r['min_share']:>9.4f} {r['ideal']:>7.4f} {r['shared']:>12}")  # fmt: skip
        print(f"(dataset {total} bytes; needed {needed}: headers, member data and one end block, without the padding of "
              "members to 512 bytes and the trailing record padding, which the stream skips)")  # fmt: skip

        print(f"\nthroughput, world 1, one epoch, best of {args.repeats} after one untimed pass (samples/s)")
        d, sb = str(data), args.shuffle_buffer
        runs = {  # key: (label, one pass)
            "wds0": ("webdataset, 0 workers (bare loop)", lambda: wds_pass(urls, 0)),
            "s0": ("stream, 0 workers (DataLoader)", lambda: stream_pass(d, 0, 0, args)),
            "s0d": ("stream, 0 workers (iterated directly)", lambda: stream_pass(d, 0, 0, args, direct=True)),
            "b0": (f"stream, 0 workers, shuffle_buffer {sb} (DataLoader)", lambda: stream_pass(d, 0, sb, args)),
            "b0d": (
                f"stream, 0 workers, shuffle_buffer {sb} (iterated directly)",
                lambda: stream_pass(d, 0, sb, args, direct=True),
            ),
            "wds0l": ("webdataset, 0 workers (DataLoader)", lambda: wds_pass(urls, 0, loader=True)),
            "wds2": ("webdataset, 2 workers (split_by_worker, DataLoader)", lambda: wds_pass(urls, 2)),
            "s2": ("stream, 2 workers (DataLoader)", lambda: stream_pass(d, 2, 0, args)),
            "b2": (f"stream, 2 workers, shuffle_buffer {sb} (DataLoader)", lambda: stream_pass(d, 2, sb, args)),
        }
        rate = {}
        for key, (label, run) in runs.items():
            rate[key], samples = best_rate(run, args.repeats)
            print(f"  {label:<58} {rate[key]:9.0f} samples/s  ({samples} samples, {total / 1e6 * rate[key] / samples:7.1f} MB/s)")
        print(f"ratio stream / webdataset bare loop, 0 workers: {rate['s0'] / rate['wds0']:.2f} (stream through a DataLoader), "
              f"{rate['s0d'] / rate['wds0']:.2f} (iterated directly); shuffle_buffer {sb}: {rate['b0'] / rate['wds0']:.2f} (DataLoader), "
              f"{rate['b0d'] / rate['wds0']:.2f} (directly)   (goal >= 0.9)")  # fmt: skip
        print(f"ratio stream / webdataset, both through a DataLoader, 0 workers: {rate['s0'] / rate['wds0l']:.2f}; "
              f"shuffle_buffer {sb}: {rate['b0'] / rate['wds0l']:.2f}")  # fmt: skip
        print(f"ratio stream / webdataset, 2 workers: {rate['s2'] / rate['wds2']:.2f}; "
              f"shuffle_buffer {sb}: {rate['b2'] / rate['wds2']:.2f}   (goal >= 0.9)")  # fmt: skip
        if args.profile:
            for shuffle_buffer in (0, args.shuffle_buffer):
                profile_stream(str(data), shuffle_buffer, args)


if __name__ == "__main__":
    main()
