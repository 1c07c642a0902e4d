"""Faults under load on the real local Ray: a pose worker killed in the middle of a run is replaced and every input
row still comes out exactly once, with the same result as an uninterrupted run."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from actor_kill import actor_pids, run_and_kill_mid_run
from conftest import REPO, Route
from pose_data.config import load_config
from pose_data.laion.config import LaionPoseConfig, preset_or_file

SAMPLES = REPO / "pose_data" / "sample_data" / "laion"


def config(shard_size: int) -> LaionPoseConfig:
    return load_config(LaionPoseConfig, preset_or_file("laion_pose-tiny"), {
        "input": {"shard_size": shard_size}, "download": {"timeout": 5, "allow_private_addresses": True}, "preview_images": 0,
    })  # fmt: skip


def test_a_pose_worker_killed_mid_run_is_replaced_and_every_row_comes_out_once(ray_local, local_site, tmp_path):
    from pipelines.laion_pose import build_laion_pose

    photos = ["astronaut.jpg", "cameraman.jpg", "grace_hopper.jpg", "coffee.jpg"]
    urls = [local_site.add(f"fault/{i}.jpg", Route((SAMPLES / photos[i % 4]).read_bytes(), delay=0.3)) for i in range(16)]
    meta = tmp_path / "m.csv"
    pd.DataFrame({"URL": urls, "TEXT": [f"photo {i}" for i in range(16)]}).to_csv(meta, index=False)

    reference = build_laion_pose([str(meta)], str(tmp_path / "reference"), config(2), progress=False)
    # two of eight shards done: mid-run
    manifest, workers = run_and_kill_mid_run(lambda: build_laion_pose([str(meta)], str(tmp_path / "out"), config(2), progress=False),
                                             tmp_path / "out" / "meta" / "00001.parquet", "PoseBatchRunner")  # fmt: skip
    assert len(list((tmp_path / "out" / "meta").glob("*.parquet"))) == 8
    rows = pd.read_parquet(tmp_path / "out" / "meta").sort_values("key").reset_index(drop=True)
    expected = pd.read_parquet(tmp_path / "reference" / "meta").sort_values("key").reset_index(drop=True)
    assert len(rows) == 16 and rows["key"].is_unique and sorted(rows["url"]) == sorted(urls)
    columns = ["key", "url", "status", "num_persons", "width", "height"]
    pd.testing.assert_frame_equal(rows[columns], expected[columns])
    assert manifest["counts"] == reference["counts"]
    assert not (actor_pids("PoseBatchRunner") & workers)  # the killed process is gone; the run used a replacement
    assert Path(tmp_path / "out" / "manifest.json").is_file()


def test_a_stalling_server_times_out_and_the_run_ends(ray_local, local_site, tmp_path):
    from pipelines.laion_pose import build_laion_pose

    good = local_site.add("stall/ok.jpg", Route((SAMPLES / "astronaut.jpg").read_bytes()))
    stalled = [local_site.add(f"stall/{i}.jpg", Route(b"never sent", delay=60.0)) for i in range(3)]
    meta = tmp_path / "m.csv"
    pd.DataFrame({"URL": [good, *stalled], "TEXT": ["ok", "a", "b", "c"]}).to_csv(meta, index=False)
    cfg = config(4)
    cfg.download.timeout = 1
    start = time.time()
    manifest = build_laion_pose([str(meta)], str(tmp_path / "out"), cfg, progress=False)
    assert time.time() - start < 60
    rows = pd.read_parquet(tmp_path / "out" / "meta").set_index("caption")
    assert rows.loc["ok", "status"] == "ok"
    for caption in "abc":
        assert rows.loc[caption, "status"] == "download_failed" and "timed out" in rows.loc[caption, "error"]
    assert manifest["counts"]["download_failed"] == 3


def test_a_shard_whose_work_is_lost_is_queued_again_and_then_named_in_one_line(ray_local):
    """Real Ray errors: a worker process that dies is lost work (queued again, up to the limit, then named by
    check()); an exception of the task's own code is raised as it is, not retried."""
    import collections

    import pytest
    import ray

    from pipelines.ray_utils import SHARD_ATTEMPTS, ShardAttempts, is_lost_work

    @ray.remote(max_retries=0)
    def dies() -> None:
        os._exit(1)

    @ray.remote(max_retries=0)
    def raises() -> None:
        raise ValueError("a bug in the shard's own code")

    def error_of(ref) -> BaseException:
        try:
            ray.get(ref)
        except ray.exceptions.RayError as err:
            return err
        raise AssertionError("the task did not fail")

    crashed, bug = error_of(dies.remote()), error_of(raises.remote())
    assert is_lost_work(crashed) and not is_lost_work(bug)

    todo: collections.deque = collections.deque()
    attempts = ShardAttempts(todo)
    for _ in range(1, SHARD_ATTEMPTS):
        attempts.lost(7, crashed)
        assert list(todo) == [7] and not attempts.failed
        todo.popleft()
    attempts.check()  # nothing failed for good yet
    attempts.lost(7, crashed)  # the last attempt
    assert not todo and 7 in attempts.failed
    with pytest.raises(RuntimeError) as raised:
        attempts.check()
    message = str(raised.value)
    assert "1 shard(s) not finished" in message and "00007: WorkerCrashedError" in message and "resume" in message
    assert "\n" not in message
    with pytest.raises(ValueError, match="a bug in the shard's own code"):
        attempts.lost(8, bug)
    assert not todo and 8 not in attempts.failed

    queue: collections.deque = collections.deque()
    fresh = ShardAttempts(queue)
    assert fresh.result(3, ray.put({"pending": [1, 2]})) == {"pending": [1, 2]} and not queue
    assert fresh.result(4, dies.remote()) is None and list(queue) == [4]  # lost: queued again, not raised
    with pytest.raises(ValueError, match="a bug in the shard's own code"):
        fresh.result(5, raises.remote())
