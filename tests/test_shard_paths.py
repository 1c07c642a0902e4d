"""The trainers read shard paths from a dataset's manifest.json, a file they did not write: only relative paths
inside the dataset folder are accepted (webdataset would run a ``pipe:`` entry as a shell command)."""

from __future__ import annotations

import json

import pytest
import webdataset as wds

from model.datasets.shard_stream import resolve_shards


def write_dataset(folder, entries):
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(folder / "shards" / "00000.tar")) as tar:
        tar.write({"__key__": "0", "txt": "x"})
    (folder / "manifest.json").write_text(json.dumps({"shards": [{"shard": e} for e in entries]}))


@pytest.mark.parametrize(
    "entry, message",
    [
        ("pipe:touch MARKER", "is not a relative path inside the dataset folder"),
        ("http://127.0.0.1:9/shard.tar", "is not a relative path inside the dataset folder"),
        ("/etc/passwd", "is not a relative path inside the dataset folder"),
        ("../outside/00000.tar", "leaves the dataset folder"),
        ("shards/../../outside.tar", "leaves the dataset folder"),
    ],
)
def test_manifest_entries_outside_the_dataset_are_refused(tmp_path, monkeypatch, entry, message):
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path, ["shards/00000.tar", entry])
    with pytest.raises(ValueError, match=message):
        resolve_shards(".")  # the dataset folder given as ".", where a pipe: entry would have run
    assert not (tmp_path / "MARKER").exists()


def test_relative_entries_inside_the_dataset_are_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path, ["shards/00000.tar"])
    assert resolve_shards(".") == [str(tmp_path / "shards" / "00000.tar")]
