"""The trainers' data stream over real multi-shard LAION-Pose and clip-shard datasets: each shard read by one reader
per epoch, every sample once, the same batches whatever the number of DataLoader workers, and an exact resume that
reads no earlier shard."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from clip_shards import build_clip_shards, raw_samples
from conftest import REPO, free_port
from laion_shards import build_laion_pose_shards
from stream_records import read_opens, record_opens

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def laion_dir(ray_local, local_site, tmp_path_factory):
    return build_laion_pose_shards(tmp_path_factory.mktemp("stream") / "laion_pose", local_site, shard_size=1)  # 5 shards


@pytest.fixture(scope="module")
def clips_dir(ray_local, tmp_path_factory):
    return build_clip_shards(tmp_path_factory.mktemp("stream") / "hdvila", shard_size=2)  # 4 shards: 2, 2, 2, 1 clips


def clip_stream(clips_dir, **kw):
    from model.datasets.hdvila_clips import HdvilaClipStream

    return HdvilaClipStream(str(clips_dir), num_frames=2, resolution=64, **kw)


def shard_files(data: Path) -> list[Path]:
    from model.datasets.shard_stream import resolve_shards

    return [Path(u) for u in resolve_shards(str(data), member="clips" if (data / "clips").is_dir() else "shard")]


def tar_bytes(path: str) -> int:
    """The bytes a reader of the whole shard needs: every header, every member's data and the end block."""
    with tarfile.open(path) as tar:
        return sum(m.offset_data - m.offset + m.size for m in tar.getmembers()) + tarfile.BLOCKSIZE


@pytest.mark.parametrize("world", [1, 2])
def test_each_shard_is_read_once_per_epoch_and_batches_do_not_depend_on_workers_under_torchrun(tmp_path, laion_dir, clips_dir, world):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", str(world), "--master_port", str(free_port()), str(REPO / "tests" / "record_stream.py"),
           str(tmp_path), f"laion={laion_dir}", f"clips={clips_dir}"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    for kind, data in (("laion", laion_dir), ("clips", clips_dir)):
        shards = shard_files(data)
        keys = sorted(s["__key__"] for shard in shards for s in raw_samples(shard))
        assert len(shards) >= 4 and len(keys) in (5, 7)
        per_workers = {}
        for workers in (0, 1, 2, 3):
            folder = tmp_path / kind / f"workers{workers}"
            ranks = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(world)]
            seen = [k for batches in ranks for batch in batches for k in batch]
            assert sorted(seen) == keys, (kind, workers)  # every sample of the epoch exactly once across the job
            per_workers[workers] = ranks
            opens = read_opens(folder)
            opened = [o["url"] for o in opens]
            assert sorted(opened) == sorted(map(str, shards)), (kind, workers)  # each shard opened once, by one reader
            for o in opens:  # ... and read once: its headers, its members' bytes and the end-of-archive block
                assert o["bytes"] == tar_bytes(o["url"]), (kind, workers, o)
            readers = {(o["rank"], o["worker"]) for o in opens}
            assert {r for r, _ in readers} == set(range(world))
            if workers >= 2:
                assert len({w for _, w in readers}) >= 2  # the workers share the reading
        assert per_workers[1] == per_workers[0] and per_workers[2] == per_workers[0] and per_workers[3] == per_workers[0]
        if world == 2:
            assert all(per_workers[0][r] for r in range(2))


def test_a_resumed_stream_continues_exactly_and_reads_no_earlier_shard(clips_dir, tmp_path):

    split = dict(num_streams=2, shuffle_buffer=3, batch_size=1, seed=11, epochs=1)  # 2 streams of 2 shards each
    straight = list(clip_stream(clips_dir, **split))
    keys = [b["keys"] for b in straight if b["num_samples"]]
    assert sum(len(k) for k in keys) == 7
    stream = clip_stream(clips_dir, **split)
    cuts = 0
    for cut in range(1, len(straight)):  # a checkpoint after every item
        saved = json.loads(json.dumps(_fold(straight[:cut])))  # as a checkpoint stores it
        done = sum(b["num_samples"] for b in straight[:cut])
        with record_opens(tmp_path / f"opens{cut}"):
            loader = torch.utils.data.DataLoader(clip_stream(clips_dir, start=saved, **split), batch_size=None, num_workers=2)
            resumed = [b["keys"] for b in loader if b["num_samples"]]
        assert resumed == keys[done:], cut
        allowed, skipped = set(), set()
        for number in range(stream.plan.num_streams):  # a stream without a saved state starts at its first shard
            state = saved["streams"].get(str(number), {"shard": 0, "buffer": []})
            shards = [stream.urls[i] for i in stream.plan.shards(number, 0)]
            allowed |= set(shards[state["shard"] :]) | {shards[i] for i, _ in state["buffer"]}
            skipped |= set(shards[: state["shard"]]) - {shards[i] for i, _ in state["buffer"]}
        opened = {o["url"] for o in read_opens(tmp_path / f"opens{cut}")}
        assert opened <= allowed and not opened & skipped, cut
        cuts += bool(skipped)
    assert cuts >= 3  # several checkpoints past a whole shard that the resume did not open


def test_resuming_under_a_different_number_of_workers_gives_the_same_infinite_stream(laion_dir):
    from model.datasets.laion_pose import LaionPoseStream

    def stream(**kw):
        return LaionPoseStream(str(laion_dir), resolution=64, seed=3, shuffle_buffer=2, batch_size=2, num_streams=4, **kw)

    items = list(itertools.islice(stream(), 30))  # no epochs: streams go round by themselves
    saved = _fold(items[:9])
    straight = [b["keys"] for b in items[9:] if b["num_samples"]]
    for workers in (0, 3):
        loader = torch.utils.data.DataLoader(stream(start=saved), batch_size=None, num_workers=workers)
        got = [b["keys"] for b in itertools.islice((b for b in loader if b["num_samples"]), len(straight))]
        assert got == straight, workers
    epochs = {n: s["epoch"] for n, s in _fold(items)["streams"].items()}
    assert max(epochs.values()) > min(epochs.values())  # the stream of the 2 short shards went round more often


def _fold(items: list[dict]) -> dict:
    """The RankPosition a trainer saves after using ``items``."""
    from model.datasets.shard_stream import RankPosition

    position = RankPosition()
    for b in items:
        position.update(b["position"])
    return position.to_dict()


def test_samples_of_a_shard_read_back_alone_by_their_offsets(clips_dir, tmp_path):
    from model.datasets.tar_samples import ShardReadError, read_samples, read_samples_at

    shard = shard_files(clips_dir)[0]
    read = list(read_samples(str(shard)))
    assert [s["__key__"] for _, s, _ in read] == [s["__key__"] for s in raw_samples(shard)]
    assert all(after == nxt for (_, _, after), (nxt, _, _) in zip(read, read[1:]))
    alone = read_samples_at(str(shard), [offset for offset, _, _ in read][::-1])
    for (_, sample, _), back in zip(read, alone[::-1]):
        assert back.keys() == sample.keys() and all(back[k] == sample[k] for k in sample)
    assert list(read_samples(str(shard), read[-1][2])) == []  # from the end: nothing, and no error
    cut = tmp_path / "cut.tar"
    cut.write_bytes(shard.read_bytes()[: read[-1][0]])  # cut exactly at the last sample's first header
    with pytest.raises(ShardReadError, match="no end-of-archive block"):
        list(read_samples(str(cut)))


def test_the_plan_gives_every_rank_as_many_streams_and_refuses_too_few_shards():
    from model.datasets.stream_plan import StreamPlan, worker_slots

    plan = StreamPlan(7, num_streams=64, world_size=2, seed=0)
    assert plan.num_streams == 6 and plan.streams(0) == [0, 2, 4] and plan.streams(1) == [1, 3, 5]
    for epoch in range(3):
        dealt = sorted(i for s in range(6) for i in plan.shards(s, epoch))
        assert dealt == list(range(7))  # each shard in exactly one stream per epoch
    assert plan.shards(0, 0) != plan.shards(0, 1) or plan.shards(1, 0) != plan.shards(1, 1)
    assert worker_slots(5, 1, 3) == [1, 4]
    with pytest.raises(ValueError, match="the data has 1 shard.s. for 2 processes"):
        StreamPlan(1, num_streams=64, world_size=2, seed=0)


def test_a_position_of_an_older_fyp_train_is_refused_with_the_reason():
    from model.training.checkpointing import DamagedCheckpoint, TrainingState

    with pytest.raises(DamagedCheckpoint, match="split the samples .not the shards."):
        TrainingState.from_dict({"step": 2, "samples": 4, "failed": 0, "positions": [[4, 0, 0]]}, "x.json")
    with pytest.raises(DamagedCheckpoint, match="positions.0., stream 3: not a data stream position"):
        TrainingState.from_dict({"step": 2, "samples": 4, "failed": 0, "positions": [{"cursor": [1, 0], "streams": {"3": {"epoch": -1}}}]}, "x.json")


def test_an_empty_shard_is_left_out_and_a_missing_one_is_a_counted_failure(clips_dir, tmp_path):
    import shutil

    from model.datasets.tar_samples import is_empty_tar

    folder = tmp_path / "d"
    folder.mkdir()
    for shard in shard_files(clips_dir):
        shutil.copy(shard, folder / shard.name)
    with tarfile.open(folder / "99999.tar", "w"):  # a shard whose rows were all filtered out
        pass
    assert is_empty_tar(str(folder / "99999.tar")) and not any(is_empty_tar(str(s)) for s in shard_files(clips_dir))
    stream = clip_stream(folder, epochs=1, batch_size=1)
    assert len(stream.urls) == 4 and str(folder / "99999.tar") not in stream.urls
    gone = stream.urls[0]
    Path(gone).unlink()  # a shard that disappears while the run goes on
    batches = [b for b in stream if b["raw"]]
    failures = [f for b in batches for f in b["failures"]]
    assert [(f.key, f.shard) for f in failures] == [("(shard)", gone)] and "FileNotFoundError" in failures[0].reason
    original = {s.name: s for s in shard_files(clips_dir)}[Path(gone).name]
    assert sum(b["num_samples"] for b in batches) == 7 - len(raw_samples(original))
    with pytest.raises(ValueError, match="the saved data position is for other shards"):
        clip_stream(folder, start={"cursor": [0, 0], "streams": {}, "data": "0123456789abcdef"})
    (tmp_path / "gz").mkdir()
    shutil.copy(shard_files(clips_dir)[0], tmp_path / "gz" / "a.tar.gz")
    with pytest.raises(ValueError, match="a compressed shard; the stream reads plain .tar shards"):
        clip_stream(str(tmp_path / "gz" / "a.tar.gz"))
    with tarfile.open(tmp_path / "dirs.tar", "w") as tar:  # a readable tar with no sample: a named failure, not a crash
        tar.add(tmp_path / "gz", arcname="just_a_folder", recursive=False)
    items = [b for b in clip_stream(tmp_path / "dirs.tar", epochs=2) if b["raw"]]
    assert [(f.key, f.reason) for b in items for f in b["failures"]] == 2 * [("(stream)", "the stream's shards of this epoch hold no sample")]
    from model.datasets.virtual_stream import fresh_state

    with pytest.raises(ValueError, match=r"names stream\(s\) 5, which rank 0 does not have here \(3 shards with samples make 3 streams"):
        clip_stream(folder, start={"cursor": [2, 0], "streams": {"5": fresh_state()}})


@pytest.mark.parametrize("kind", ["member", "pax"])
def test_a_header_that_claims_more_bytes_than_the_shard_holds_is_refused_before_reading(tmp_path, kind):
    import io

    from model.datasets.tar_samples import ShardReadError, read_samples

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("a.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    data = bytearray(buf.getvalue())
    forged = tarfile.TarInfo("b.bin" if kind == "member" else "././@PaxHeader")
    forged.type = tarfile.REGTYPE if kind == "member" else tarfile.XHDTYPE
    forged.size = 2**62  # reading it would ask for 4 EiB: MemoryError, which no shard should cause
    data[1024:1536] = forged.tobuf(tarfile.GNU_FORMAT)[-512:]  # in place of the end block (GNU: base-256 size)
    (tmp_path / "forged.tar").write_bytes(bytes(data))
    reader = read_samples(str(tmp_path / "forged.tar"))
    expected = r"b.bin is cut \(\d+ of 4611686018427387904 bytes\)" if kind == "member" else "an extended header claims 4611686018427387904 bytes"
    with pytest.raises(ShardReadError, match=expected):
        list(reader)


@pytest.mark.parametrize("where", ["header", "pax", "sparse"])
def test_a_forged_negative_size_or_bad_pax_record_ends_the_shard_as_a_failure(tmp_path, where):
    """A negative size would send TarFile back to a header it already read (a reader that never ends, on Python
    3.11.7); a bad PAX record raises a ValueError inside tarfile. Both must end the shard as a ShardReadError."""
    import io

    from model.datasets.tar_samples import ShardReadError, read_samples

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folder = tarfile.TarInfo("a_folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        member = tarfile.TarInfo("k.txt")
        member.size = 3
        if where == "pax":
            member.pax_headers = {"size": "-2048"}
        elif where == "sparse":
            member.pax_headers = {"GNU.sparse.map": "x,y"}
        tar.addfile(member, io.BytesIO(b"abc"))
    data = bytearray(buf.getvalue())
    if where == "header":  # the member's own header: a base-256 size of -2048
        info = tarfile.TarInfo("k.txt")
        info.size = 3
        header = bytearray(info.tobuf(tarfile.GNU_FORMAT)[-512:])
        header[124:136] = b"\xff" * 10 + (-2048 & 0xFFFF).to_bytes(2, "big")
        header[148:156] = b"        "
        header[148:156] = b"%06o\0 " % sum(header)
        start = bytes(data).index(b"k.txt")  # its ustar header
        data[start : start + 512] = header
    (tmp_path / "forged.tar").write_bytes(bytes(data))
    with pytest.raises(ShardReadError):
        list(read_samples(str(tmp_path / "forged.tar")))
