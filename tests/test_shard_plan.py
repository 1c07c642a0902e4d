"""Cutting inputs into shards: several files and formats, one schema, stable across re-runs."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pose_data.files.metadata_reader import read_metadata_tables
from pose_data.shard_plan import make_or_load_plan as _make_or_load_plan

COLUMNS = {"--url-col": "URL", "--caption-col": "TEXT"}


def make_or_load_plan(files, out, *, required_columns, **kw):
    return _make_or_load_plan(files, out, tables=lambda: read_metadata_tables(files, required_columns), **kw)


def _inputs(tmp_path):
    a = tmp_path / "a.parquet"
    pq.write_table(pa.table({"URL": [f"u{i}" for i in range(5)], "TEXT": list("abcde"), "NSFW": ["UNLIKELY"] * 5}), a)
    b = tmp_path / "b.csv"
    b.write_text('URL,TEXT,similarity\nu5,"f, with comma",0.3\nu6,g,0.4\n')
    c = tmp_path / "c.jsonl"
    c.write_text('{"URL": "u7", "TEXT": "h", "similarity": 0.5}\n')
    return [a, b, c]


def test_rows_keep_their_order_across_files_and_shards(tmp_path):
    plan = make_or_load_plan(_inputs(tmp_path), tmp_path / "out", shard_size=3, required_columns=COLUMNS, fingerprint={})
    assert (plan.num_rows, plan.num_shards) == (8, 3)
    assert [plan.shard_rows(s) for s in range(3)] == [3, 3, 2]
    shards = [pq.read_table(plan.input_path(s)) for s in range(3)]
    assert all(t.schema == shards[0].schema for t in shards)  # one schema: pd.read_parquet(dir) works
    df = pd.concat([t.to_pandas() for t in shards], ignore_index=True)
    assert df["URL"].tolist() == [f"u{i}" for i in range(8)]
    assert df.loc[5, "TEXT"] == "f, with comma"
    assert df["NSFW"].isna().tolist() == [False] * 5 + [True] * 3  # a column missing in a file: nulls
    assert df["similarity"].tolist()[5:] == [0.3, 0.4, 0.5]


def test_resume_reuses_the_plan_and_refuses_other_inputs(tmp_path):
    files = _inputs(tmp_path)
    out = tmp_path / "out"
    make_or_load_plan(files, out, shard_size=3, required_columns=COLUMNS, fingerprint={"x": 1})
    before = (out / "_work" / "plan.json").read_text()
    again = make_or_load_plan(files, out, shard_size=3, required_columns=COLUMNS, fingerprint={"x": 1})
    assert again.num_shards == 3 and (out / "_work" / "plan.json").read_text() == before
    with pytest.raises(ValueError, match="shard_size: 3 -> 4"):
        make_or_load_plan(files, out, shard_size=4, required_columns=COLUMNS, fingerprint={"x": 1})
    with pytest.raises(ValueError, match="fingerprint.x: 1 -> 2"):
        make_or_load_plan(files, out, shard_size=3, required_columns=COLUMNS, fingerprint={"x": 2})
    redone = make_or_load_plan(files[:1], out, shard_size=4, required_columns=COLUMNS, fingerprint={}, overwrite=True)
    assert (redone.num_rows, redone.num_shards) == (5, 2)
    assert json.loads((out / "_work" / "plan.json").read_text())["shard_size"] == 4


def test_missing_column_names_file_and_columns(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("url,caption\nu,c\n")
    with pytest.raises(ValueError, match=r"bad.csv: no column 'URL' \(set by --url-col\); its columns are: url, caption"):
        make_or_load_plan([bad], tmp_path / "out", shard_size=3, required_columns=COLUMNS, fingerprint={})


def test_outputs_without_their_plan_are_never_reused(tmp_path):
    """Seen before: with _work/plan.json gone, old meta/ and shards/ were silently taken over by a new run."""
    files = _inputs(tmp_path)
    out = tmp_path / "out"
    (out / "meta").mkdir(parents=True)
    (out / "meta" / "00000.parquet").write_bytes(b"an earlier run's shard")
    (out / "meta" / ".00001.parquet.tmp-1234").write_bytes(b"a killed write")  # temp files alone hold nothing
    with pytest.raises(ValueError, match=r"holds meta of an earlier run but no _work/plan.json"):
        make_or_load_plan(files, out, shard_size=3, required_columns=COLUMNS, fingerprint={}, outputs=("meta", "shards"))
    assert (out / "meta" / "00000.parquet").exists()  # refused, nothing touched
    plan = make_or_load_plan(files, out, shard_size=3, required_columns=COLUMNS, fingerprint={}, outputs=("meta", "shards"), overwrite=True)
    assert plan.num_shards == 3 and not (out / "meta").exists()  # --overwrite clears them even without a plan
    # a plan cut off while it was written (inputs, no plan.json) is simply made again
    (out / "_work" / "plan.json").unlink()
    (out / "_work" / "input" / "00007.parquet").write_bytes(b"stale")
    plan = make_or_load_plan(files[:1], out, shard_size=3, required_columns=COLUMNS, fingerprint={}, outputs=("meta", "shards"))
    assert plan.num_rows == 5 and not (out / "_work" / "input" / "00007.parquet").exists()
