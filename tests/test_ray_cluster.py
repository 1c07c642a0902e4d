"""Both pipelines on a real multi-node Ray cluster on this machine (tests/ray_cluster.py), joined with
``--ray-address``: the head node holds no CPUs, so every task and actor runs on a worker node. The output equals a
local run's byte for byte, and losing the worker node in the middle of a run costs time, not output."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from ray_cluster import ClusterProcess

from conftest import REPO, Route

LAION = REPO / "pose_data" / "sample_data" / "laion"
HDVILA = REPO / "pose_data" / "sample_data" / "hdvila"
LAION_ARGS = ["--config", "tiny", "--shard-size", "2", "--timeout", "5", "--preview-images", "0", "--allow-private-addresses"]
HDVILA_ARGS = ["--config", "tiny", "--shard-size", "2", "--preview-clips", "0"]


@pytest.fixture(scope="module")
def cluster():
    """A head without CPUs and one worker node of 3 CPUs; a test that removes the worker leaves another in its place."""
    proc = ClusterProcess()
    proc.workers = [proc.add_node(3)]
    yield proc
    proc.close()


def digest(out: Path, *folders: str) -> dict[str, str]:
    files = sorted(f for folder in folders for f in (out / folder).glob("*"))
    return {f"{f.parent.name}/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def shard_nodes(out: Path) -> dict[str, str]:
    """Shard name -> the Ray node that wrote it, from the stats files."""
    return {p.stem: json.loads(p.read_text())["ray_node"] for p in sorted((out / "stats").glob("*.json"))}


def pose_data(*args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pipelines.cli", *args, "--no-progress"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    return output


def lose_the_worker_mid_run(cluster: ClusterProcess, proc: subprocess.Popen, out: Path, shards: int) -> tuple[str, str]:
    """Once the run's first shard is written, kill the worker node, as when a machine is lost, then add a fresh one.
    The node goes first: with no CPU left in the cluster the run cannot finish before the loss (adding a node takes
    seconds, in which a run with both nodes could be done). Returns (lost node, new node)."""
    deadline = time.time() + 120
    while not list((out / "stats").glob("*.json")):
        assert proc.poll() is None, "the run ended before it wrote a shard: " + proc.stdout.read()[-2000:]
        assert time.time() < deadline
        time.sleep(0.05)
    lost = cluster.workers[-1]
    cluster.remove_node(lost)
    assert proc.poll() is None and len(list((out / "stats").glob("*.json"))) < shards, "the run was over before the node left"
    new = cluster.add_node(3)
    cluster.workers = [new]
    return lost, new


# ---- build-laion-pose ----


@pytest.fixture(scope="module")
def laion(ray_local, local_site, tmp_path_factory):
    """16 rows of real photos, served slowly enough that a run spans several seconds; and a local run's output."""
    from pipelines.cli import build_parser, laion_pose_config
    from pipelines.laion_pose import build_laion_pose

    photos = ["astronaut.jpg", "cameraman.jpg", "grace_hopper.jpg", "coffee.jpg"]
    urls = [local_site.add(f"cluster/{i}.jpg", Route((LAION / photos[i % 4]).read_bytes(), delay=0.3)) for i in range(16)]
    folder = tmp_path_factory.mktemp("cluster_laion")
    meta = folder / "meta.csv"
    pd.DataFrame({"URL": urls, "TEXT": [f"photo {i}" for i in range(16)]}).to_csv(meta, index=False)
    args = build_parser().parse_args(["build-laion-pose", str(meta), "--output", "unused", *LAION_ARGS])
    build_laion_pose([str(meta)], str(folder / "local"), laion_pose_config(args), progress=False)
    return meta, digest(folder / "local", "shards", "meta")


def test_build_laion_pose_on_a_cluster_runs_on_the_worker_and_matches_a_local_run(cluster, laion, tmp_path):
    meta, local = laion
    out = tmp_path / "out"
    finish(pose_data("build-laion-pose", str(meta), "--output", str(out), "--ray-address", cluster.address, *LAION_ARGS))
    assert digest(out, "shards", "meta") == local and len(local) == 16
    assert set(shard_nodes(out).values()) == {cluster.workers[-1]}  # not the head: it has no CPUs
    assert json.loads((out / "manifest.json").read_text())["num_rows"] == 16


def test_build_laion_pose_survives_losing_the_worker_node_mid_run(cluster, laion, tmp_path):
    meta, local = laion
    out = tmp_path / "out"
    proc = pose_data("build-laion-pose", str(meta), "--output", str(out), "--ray-address", cluster.address, *LAION_ARGS)
    lost, new = lose_the_worker_mid_run(cluster, proc, out, shards=8)
    finish(proc)
    assert digest(out, "shards", "meta") == local
    nodes = shard_nodes(out)
    assert len(nodes) == 8 and set(nodes.values()) <= {lost, new} and new in nodes.values()
    rows = pd.read_parquet(out / "meta")
    assert len(rows) == 16 and rows["key"].is_unique


# ---- index-hdvila ----


@pytest.fixture(scope="module")
def hdvila(ray_local, tmp_path_factory):
    """40 one-second clips of the two bundled videos, 20 shards with clip tars; and a local run's output."""
    from pipelines.cli import build_parser, hdvila_config
    from pipelines.hdvila_index import build_hdvila_index

    folder = tmp_path_factory.mktemp("cluster_hdvila")
    meta = folder / "meta.jsonl"
    lines = []
    for video, count in (("bikes", 24), ("bigbuckbunny", 16)):  # 10 s and 5.3 s long: spans start every 0.25 s
        clips = [{"clip_id": f"{video}.{k}.mp4", "span": [f"00:00:{k / 4:06.3f}", f"00:00:{k / 4 + 1:06.3f}"]} for k in range(count)]
        lines.append(json.dumps({"video_id": video, "url": f"https://www.youtube.com/watch?v={video}", "clip": clips}))
    meta.write_text("\n".join(lines) + "\n")
    argv = [str(meta), "--videos", str(HDVILA), "--output", "unused", *HDVILA_ARGS]
    build_hdvila_index([str(meta)], str(HDVILA), str(folder / "local"), hdvila_config(build_parser().parse_args(["index-hdvila", *argv])), captions=None, progress=False)
    return meta, digest(folder / "local", "index", "clips")


def test_index_hdvila_on_a_cluster_runs_on_the_worker_and_matches_a_local_run(cluster, hdvila, tmp_path):
    meta, local = hdvila
    out = tmp_path / "out"
    finish(pose_data("index-hdvila", str(meta), "--videos", str(HDVILA), "--output", str(out), "--ray-address", cluster.address, *HDVILA_ARGS))
    assert digest(out, "index", "clips") == local and len(local) == 40
    assert set(shard_nodes(out).values()) == {cluster.workers[-1]}
    assert (pd.read_parquet(out / "index")["status"] == "ok").all()


def test_index_hdvila_survives_losing_the_worker_node_mid_run(cluster, hdvila, tmp_path):
    meta, local = hdvila
    out = tmp_path / "out"
    proc = pose_data("index-hdvila", str(meta), "--videos", str(HDVILA), "--output", str(out), "--ray-address", cluster.address, *HDVILA_ARGS)
    lost, new = lose_the_worker_mid_run(cluster, proc, out, shards=20)
    finish(proc)
    assert digest(out, "index", "clips") == local
    nodes = shard_nodes(out)
    assert len(nodes) == 20 and set(nodes.values()) <= {lost, new} and new in nodes.values()


def test_a_run_without_ray_address_stays_local_where_a_cluster_is_running(cluster):
    """Plain ``ray.init()`` joins the cluster ``ray start`` (here: the test cluster) recorded on this machine; a
    pipeline run without ``--ray-address`` starts its own local Ray instead."""
    probe = (
        "import sys, ray\n"
        "from pipelines.ray_utils import init_ray\n"
        "ray.init() if sys.argv[1] == 'plain' else init_ray(None, num_cpus=1)\n"
        "print(ray.get_runtime_context().gcs_address)\n"
    )
    env = {**os.environ, "RAY_TMPDIR": cluster.temp}  # where the cluster left its address, as `ray start` does in /tmp/ray

    def gcs(mode: str) -> str:
        done = subprocess.run([sys.executable, "-c", probe, mode], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()[-1]

    assert gcs("plain") == cluster.address
    assert gcs("pipeline") != cluster.address
