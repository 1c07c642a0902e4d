"""The README's "read it with no project code" example, run as written on a shard that carries a booby-trapped
pickle member: it must read the dataset without unpickling anything."""

from __future__ import annotations

import io
import json
import pathlib
import pickle
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from conftest import REPO


class Trap:
    """Unpickling this creates ``path``: proof that code from the shard ran."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def png(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


def readme_example() -> str:
    text = (REPO / "docs" / "build-laion-pose.md").read_text()
    match = re.search(r"Read it with no project code:\n\n```python\n(.*?)```", text, re.S)
    assert match, "the README's inspection example is gone"
    return match.group(1)


def make_dataset(folder: pathlib.Path, marker: pathlib.Path) -> None:
    (folder / "meta").mkdir(parents=True)
    (folder / "shards").mkdir()
    pq.write_table(pa.table({"key": ["000000"], "status": ["ok"]}), folder / "meta" / "00000.parquet")
    (folder / "manifest.json").write_text(json.dumps({"shard_pattern": "shards/{00000..00000}.tar"}))
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(buffer, format="JPEG")
    with wds.TarWriter(str(folder / "shards" / "00000.tar")) as tar:
        tar.write({"__key__": "000000", "jpg": buffer.getvalue(), "pose.png": png((255, 0, 0)), "txt": "a caption",
                   "json": {"key": "000000"}, "pyd": pickle.dumps(Trap(str(marker)))})  # fmt: skip


def test_readme_example_reads_the_dataset_without_unpickling(tmp_path):
    marker = tmp_path / "code-ran"
    make_dataset(tmp_path / "ds", marker)
    code = readme_example().replace('"DIR/', f'"{tmp_path / "ds"}/').replace('"DIR"', f'"{tmp_path / "ds"}"')
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the documented example, as a user runs it
    assert not marker.exists()
    assert scope["caption"] == "a caption" and scope["info"] == {"key": "000000"}
    assert np.asarray(scope["skeleton"]).shape == (8, 8, 3) and scope["skeleton"][0, 0, 0] == 1.0
    # the trap is real: webdataset's default decoding would have run it
    for sample in wds.WebDataset(str(tmp_path / "ds" / "shards" / "00000.tar"), shardshuffle=False).decode("rgb"):
        assert sample["txt"] == "a caption"
    assert marker.exists()
