"""HD-VILA metadata reader: timestamps, WebDataset keys, one row per clip, bad input as rows, captions."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from pose_data.hdvila.metadata import (
    ClipRow,
    clip_key,
    key_to_clip_id,
    metadata_files,
    parse_timestamp,
    read_caption_lists,
    read_captions,
    read_hdvila_metadata,
)


def _video(video_id, *spans, url=True):
    record = {
        "video_id": video_id,
        "clip": [{"clip_id": f"{video_id}.{i + 1}.mp4", "span": list(s)} for i, s in enumerate(spans)],
    }
    if url:
        record["url"] = f"https://www.youtube.com/watch?v={video_id}"
    return json.dumps(record)


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ timestamps


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:00:17.759", 17.759),
        ("00:04:52.140", 292.14),
        ("01:00:00.000", 3600.0),
        ("123:00:01.5", 123 * 3600 + 1.5),  # hours past 99
        ("05:03.350", 303.35),
        ("17.759", 17.759),
        ("17", 17.0),
        (" 00:00:01.000 ", 1.0),
        (17.759, 17.759),
        (3, 3.0),
        (0, 0.0),
    ],
)
def test_parse_timestamp(text, seconds):
    assert parse_timestamp(text) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize(
    "text", ["", "abc", "1:2:3:4", "00:61:00.0", "00:00:60.5", "-1.0", "1,5", "00:00:1e3", None, True, [1], float("nan"), -2.0]
)
def test_parse_timestamp_rejects_with_the_value_named(text):
    with pytest.raises(ValueError) as err:
        parse_timestamp(text)
    assert repr(text) in str(err.value)


# ------------------------------------------------------------------------------------------ keys


@pytest.mark.parametrize(
    ("clip_id", "key"),
    [
        ("QMi8x8o55Ns.1.mp4", "QMi8x8o55Ns_1"),
        ("-a_b-C_d9_x.16.mp4", "-a_b-C_d9_x_16"),  # YouTube ids hold '-' and '_'
        ("a_1.2.mp4", "a_1_2"),
        ("clip 7.webm", "clip_207_2ewebm_"),
        ("x.1", "x_2e1_"),
    ],
)
def test_clip_key_examples_are_valid_webdataset_keys(clip_id, key):
    assert clip_key(clip_id) == key
    assert "." not in key and "/" not in key
    assert key_to_clip_id(key) == clip_id


def test_clip_key_is_one_to_one_on_random_and_tricky_ids():
    rng = random.Random(0)
    alphabet = "aZ09_-. /%é[]"
    ids = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))) for _ in range(5000)}
    ids |= {"a.1.mp4", "a_1", "a_1_", "a.01.mp4", "a_2e1", "a 1", "_", "-", "a.1.MP4", "a..1.mp4"}
    keys = {}
    for clip_id in ids:
        key = clip_key(clip_id)
        assert all(c.isascii() and (c.isalnum() or c in "_-") for c in key), key
        assert key_to_clip_id(key) == clip_id
        assert keys.setdefault(key, clip_id) == clip_id  # no two ids share a key
    assert len(keys) == len(ids)


def test_clip_key_and_inverse_reject_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        clip_key("")
    with pytest.raises(ValueError, match="not a key made by clip_key"):
        key_to_clip_id("a.b")
    with pytest.raises(ValueError, match="not a key made by clip_key"):
        key_to_clip_id("abc")


# ------------------------------------------------------------------------------------------ reader


def test_good_lines_give_one_row_per_clip_in_order(tmp_path):
    path = _write(
        tmp_path / "hdvila_part0.jsonl",
        [
            _video("QMi8x8o55Ns", ["00:00:17.759", "00:00:23.279"], ["00:04:52.140", "00:05:03.350"]),
            "",
            _video("a-b_c", [1.5, "2.5"]),
        ],
    )
    rows = list(read_hdvila_metadata(path))
    assert [r.clip_id for r in rows] == ["QMi8x8o55Ns.1.mp4", "QMi8x8o55Ns.2.mp4", "a-b_c.1.mp4"]
    assert [r.key for r in rows] == ["QMi8x8o55Ns_1", "QMi8x8o55Ns_2", "a-b_c_1"]
    assert [(r.span_start, r.span_end) for r in rows] == [(17.759, 23.279), (292.14, pytest.approx(303.35)), (1.5, 2.5)]
    assert all(r.status is None and r.error is None for r in rows)
    assert rows[0] == ClipRow(
        "QMi8x8o55Ns_1",
        "QMi8x8o55Ns.1.mp4",
        "QMi8x8o55Ns",
        "https://www.youtube.com/watch?v=QMi8x8o55Ns",
        17.759,
        23.279,
        None,
        None,
        f"{path}:1",
    )
    assert rows[2].source == f"{path}:3"  # the blank line 2 is skipped but still counted


def test_malformed_lines_become_bad_metadata_rows_naming_file_and_line(tmp_path):
    lines = [
        _video("good1", ["00:00:01.000", "00:00:03.000"]),  # 1
        '{"video_id": "broken1", "clip": [{"clip_id": "broken1.1.mp4", "span": ["00:00:01.0"',  # 2: invalid JSON
        "[1, 2, 3]",  # 3: not an object
        json.dumps({"video_id": "noclip", "url": "u"}),  # 4: no clip list
        json.dumps({"video_id": "strclip", "clip": "oops"}),  # 5: clip not a list
        json.dumps({"video_id": "empty", "clip": []}),  # 6: empty clip list
        json.dumps({"url": "u", "clip": [{"clip_id": "x.1.mp4", "span": [1, 2]}, {"clip_id": "x.2.mp4", "span": [3, 4]}]}),  # 7
        json.dumps({"video_id": "v8", "clip": [{"clip_id": "v8.1.mp4", "span": ["00:00:01.000"]}, {"span": [1, 2]}, 5]}),  # 8
        json.dumps({"video_id": "v9", "clip": [{"clip_id": "v9.1.mp4", "span": ["00:00:xx", "00:00:02"]}]}),  # 9
        json.dumps(
            {
                "video_id": "v10",
                "clip": [
                    {"clip_id": "v10.1.mp4", "span": ["00:00:12.000", "00:00:05.000"]},
                    {"clip_id": "v10.2.mp4", "span": ["00:00:05.000", "00:00:05.000"]},
                    {"clip_id": "v10.3.mp4", "span": ["00:00:05.000", "00:00:06.000"]},
                ],
            }
        ),  # 10
        json.dumps({"video_id": 42, "url": 7, "clip": [{"clip_id": "n.1.mp4", "span": [0, 1]}]}),  # 11
    ]
    path = _write(tmp_path / "m.jsonl", lines)
    rows = list(read_hdvila_metadata(path))
    by_line = {}
    for row in rows:
        by_line.setdefault(int(row.source.rsplit(":", 1)[1]), []).append(row)

    assert by_line[1][0].status is None
    for line, rows_of_line in by_line.items():
        for row in rows_of_line:
            if row.status is not None:
                assert row.status == "bad_metadata"
                assert row.error.startswith(f"{path}:{line}: "), row.error

    (broken,) = by_line[2]
    assert broken.clip_id is None and broken.video_id == "broken1" and "invalid JSON" in broken.error
    assert "expected a JSON object" in by_line[3][0].error and "list" in by_line[3][0].error
    (noclip,) = by_line[4]
    assert noclip.video_id == "noclip" and noclip.url == "u" and "missing 'clip' list" in noclip.error
    assert "'clip' is a str, not a list" in by_line[5][0].error
    assert "empty clip list" in by_line[6][0].error and by_line[6][0].video_id == "empty"
    # missing video_id, clips readable: one bad row per clip, clip ids and spans kept
    assert [(r.clip_id, r.span_start, r.status) for r in by_line[7]] == [
        ("x.1.mp4", 1.0, "bad_metadata"),
        ("x.2.mp4", 3.0, "bad_metadata"),
    ]
    assert all("missing video_id" in r.error for r in by_line[7])
    short, no_id, not_obj = by_line[8]
    assert short.clip_id == "v8.1.mp4" and "is not [start, end]" in short.error
    assert no_id.clip_id is None and no_id.key is None and "clip 1: missing clip_id" in no_id.error
    assert no_id.span_start == 1.0 and no_id.span_end == 2.0
    assert not_obj.clip_id is None and "clip 2 is a int" in not_obj.error
    (bad_ts,) = by_line[9]
    assert "span start" in bad_ts.error and "'00:00:xx'" in bad_ts.error and bad_ts.span_end == 2.0
    reversed_, zero, fine = by_line[10]
    assert "reversed span, start 12.000 s > end 5.000 s" in reversed_.error
    assert (reversed_.span_start, reversed_.span_end) == (12.0, 5.0)
    assert "zero-length span at 5.000 s" in zero.error
    assert fine.status is None and fine.error is None
    (typed,) = by_line[11]
    assert "video_id 42 is not a non-empty string" in typed.error and "url 7 is not a string" in typed.error
    assert typed.clip_id == "n.1.mp4"
    assert len(rows) == 1 + 1 + 1 + 1 + 1 + 1 + 2 + 3 + 1 + 3 + 1


def test_duplicates_across_files_gz_and_json_list(tmp_path):
    first = _write(tmp_path / "a.jsonl", [_video("dup", [0, 1], [1, 2]), _video("solo", [0, 1])])
    with gzip.open(tmp_path / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(_video("dup", [5, 6]) + "\n" + _video("gz", [0, 2]) + "\n")
    second = tmp_path / "b.jsonl.gz"
    listed = tmp_path / "c.json"
    listed.write_text(json.dumps([json.loads(_video("js", [0, 3])), json.loads(_video("solo", [0, 1]))], indent=2))
    # the same clip twice inside one line
    same_line = _write(
        tmp_path / "d.jsonl", [json.dumps({"video_id": "w", "clip": [{"clip_id": "w.1.mp4", "span": [0, 1]}] * 2})]
    )

    rows = list(read_hdvila_metadata([first, second, listed, same_line]))
    status = {(r.clip_id, r.source): (r.status, r.error) for r in rows}
    assert len(rows) == 3 + 2 + 2 + 2
    assert status[("dup.1.mp4", f"{first}:1")] == (None, None)
    assert status[("dup.1.mp4", f"{second}:1")] == (
        "bad_metadata",
        f"{second}:1: duplicate clip_id 'dup.1.mp4', first seen at {first}:1",
    )
    assert status[("gz.1.mp4", f"{second}:2")] == (None, None)
    assert status[("js.1.mp4", f"{listed}[0]")] == (None, None)
    assert status[("solo.1.mp4", f"{listed}[1]")][1].endswith(f"first seen at {first}:2")
    w_rows = [r for r in rows if r.video_id == "w"]
    assert [r.status for r in w_rows] == [None, "bad_metadata"]
    assert w_rows[1].error == f"{same_line}:1: duplicate clip_id 'w.1.mp4', first seen at {same_line}:1"


def test_duplicate_of_a_bad_span_keeps_both_reasons(tmp_path):
    path = _write(tmp_path / "m.jsonl", [_video("r", [0, 1]), _video("r", [5, 2])])
    rows = list(read_hdvila_metadata(path))
    assert (
        rows[1].error
        == f"{path}:2: clip 0: reversed span, start 5.000 s > end 2.000 s; duplicate clip_id 'r.1.mp4', first seen at {path}:1"
    )


def test_json_file_variants(tmp_path):
    single = tmp_path / "one.json"
    single.write_text(json.dumps(json.loads(_video("one", [0, 1])), indent=4))
    lines_named_json = _write(tmp_path / "lines.json", [_video("l1", [0, 1]), _video("l2", [0, 1]), "{not json"])
    broken_list = tmp_path / "broken.json"
    broken_list.write_text('[{"video_id": "b", "clip": []}, {')
    with gzip.open(tmp_path / "z.json.gz", "wt") as f:
        json.dump([json.loads(_video("z", [0, 1]))], f)

    rows = list(read_hdvila_metadata([single, lines_named_json, broken_list, tmp_path / "z.json.gz"]))
    assert [(r.clip_id, r.status) for r in rows] == [
        ("one.1.mp4", None),
        ("l1.1.mp4", None),
        ("l2.1.mp4", None),
        (None, "bad_metadata"),
        (None, "bad_metadata"),
        ("z.1.mp4", None),
    ]
    assert rows[0].source == str(single)
    assert rows[3].source == f"{lines_named_json}:3" and "invalid JSON" in rows[3].error
    assert rows[4].source == str(broken_list) and "invalid JSON list" in rows[4].error


def test_truncated_gzip_and_non_utf8_become_rows(tmp_path):
    payload = gzip.compress(("\n".join(_video(f"v{i}", [0, 1]) for i in range(200)) + "\n").encode())
    truncated = tmp_path / "t.jsonl.gz"
    truncated.write_bytes(payload[: len(payload) // 2])
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(_video("ok", [0, 1]).encode() + b"\n" + b'{"video_id": "caf\xe9"}\n')

    rows = list(read_hdvila_metadata(truncated))
    good, last = rows[:-1], rows[-1]
    assert len(good) > 0 and all(r.status is None for r in good)
    assert [r.video_id for r in good] == [f"v{i}" for i in range(len(good))]
    assert last.status == "bad_metadata" and "cannot read the file after line" in last.error
    assert last.source == f"{truncated}:{len(good) + 1}"

    rows = list(read_hdvila_metadata(latin))
    assert [r.status for r in rows] == [None, "bad_metadata"] and "not UTF-8" in rows[1].error


def test_folders_and_bad_inputs(tmp_path):
    (tmp_path / "meta" / "sub").mkdir(parents=True)
    _write(tmp_path / "meta" / "b.jsonl", [_video("b", [0, 1])])
    _write(tmp_path / "meta" / "sub" / "a.jsonl", [_video("a", [0, 1])])
    _write(tmp_path / "meta" / ".hidden.jsonl", [_video("h", [0, 1])])
    (tmp_path / "meta" / "notes.txt").write_text("x")
    assert metadata_files(tmp_path / "meta") == [tmp_path / "meta" / "b.jsonl", tmp_path / "meta" / "sub" / "a.jsonl"]
    assert [r.video_id for r in read_hdvila_metadata(tmp_path / "meta")] == ["b", "a"]
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        metadata_files(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match=r"notes.txt: unsupported type; use one of \.jsonl, \.json"):
        metadata_files(tmp_path / "meta" / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no"):
        metadata_files(tmp_path / "empty")


# ------------------------------------------------------------------------------------------ captions


def test_captions_csv_with_quotes_commas_newlines_and_several_rows_per_clip(tmp_path):
    csv = tmp_path / "caption_rm2048_train.csv"
    csv.write_text(
        "part_id,clip_id,caption\n"
        '0,QMi8x8o55Ns.1.mp4,"a man, riding a bike"\n'
        '0,QMi8x8o55Ns.1.mp4,"then he says ""hi""\nand waves"\n'
        "1,0012.3.mp4,plain words\n"
        '1,empty.1.mp4,""\n'
        "1,empty.1.mp4,   \n",
        encoding="utf-8",
    )
    assert read_caption_lists(csv) == {
        "QMi8x8o55Ns.1.mp4": ["a man, riding a bike", 'then he says "hi"\nand waves'],
        "0012.3.mp4": ["plain words"],
    }
    assert read_captions(csv) == {"QMi8x8o55Ns.1.mp4": "a man, riding a bike", "0012.3.mp4": "plain words"}


def test_captions_csv_missing_columns_are_named(tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("part_id,clip,text\n0,a.1.mp4,hello\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) clip_id, caption; .*found: part_id, clip, text"):
        read_captions(csv)
    csv.write_text("part_id,clip_id,caption\n0,a.1.mp4,x,extra\n")
    with pytest.raises(ValueError, match="cannot read captions CSV .*Expected 3 columns, got 4"):
        read_captions(csv)
