"""Read HD-VILA-100M metadata into one :class:`ClipRow` per clip, and the captions CSV.

The public metadata (microsoft/XPretrain, ``hd-vila-100m``; files ``hdvila_part{N}.jsonl``) holds
one video per line::

    {"video_id": "QMi8x8o55Ns", "url": "https://www.youtube.com/watch?v=QMi8x8o55Ns",
     "clip": [{"clip_id": "QMi8x8o55Ns.1.mp4", "span": ["00:00:17.759", "00:00:23.279"]}, ...]}

Accepted files: ``.jsonl`` (one object a line), ``.json`` (a list of such objects, one object, or
JSON lines under a ``.json`` name) and either of them gzip'd (``.jsonl.gz``, ``.json.gz``).

Bad input is data, not a crash: every defect becomes a row with ``status="bad_metadata"`` and an
``error`` that names the file and line (the index has no ``source`` column, so the error carries it):

- a line that is not JSON, not an object, or has no readable ``clip`` list: ONE row for the line
  (``clip_id`` None; ``video_id`` when it can be read, even from broken JSON);
- a line whose ``video_id`` or ``url`` is missing or malformed but whose clips are readable: one row
  per clip, each ``bad_metadata``;
- a video with an empty clip list: one row for the line (a video with no clip is a defect, and a
  silent zero would hide it);
- a clip without a usable ``clip_id``, a span that is not two timestamps, an unparseable timestamp,
  a reversed span (start > end) or a zero-length span (start == end): that clip's row;
- a ``clip_id`` seen before (in any file of the same call): the second and later rows, naming where
  it was first seen. The first row keeps whatever status it had.

Blank lines are skipped (they describe nothing). A truncated gzip file ends with one row naming the
last line read. Rows come out in file order, files in the order given (a folder: sorted).

``clip_key`` turns a clip id into a WebDataset key, exactly reversible by ``key_to_clip_id``; two
distinct clip ids never share a key, so the reader's duplicate check on keys is the clip-id check.

Speed and memory (measured here): about 190k clips/s on one core; duplicate detection keeps every
key seen (about 100 bytes a clip), so the full 100M-clip release would hold about 10 GB: index it
part by part (one ``hdvila_part{N}.jsonl`` per call) or on a machine with the memory.

Captions: the official Follow-Your-Pose loader reads a private ``caption_rm2048_train.csv`` with
columns ``part_id, clip_id, caption`` and several consecutive rows per clip (one caption per 64
frames); :func:`read_captions` keeps the first caption of each clip, :func:`read_caption_lists` all.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv

from pose_data.files.metadata_reader import expand_files
from pose_data.statuses import BAD_METADATA

METADATA_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
CAPTION_COLUMNS = ("clip_id", "caption")  # ``part_id`` is read when present but not needed

_TIMESTAMP = re.compile(r"^(?:(?:(?P<h>\d+):)?(?P<m>\d+):)?(?P<s>\d+(?:\.\d*)?|\.\d+)$")
_VIDEO_ID_IN_TEXT = re.compile(r'"video_id"\s*:\s*"([^"\\]*)"')


# --------------------------------------------------------------------------------------------------
# timestamps


def parse_timestamp(value: str | int | float) -> float:
    """Seconds from ``"HH:MM:SS.mmm"`` (any number of hour digits), ``"MM:SS.mmm"``, ``"SS.mmm"``,
    a numeric string or a number. Minutes and seconds below a higher field must be < 60.

    Raises ValueError naming the value for anything else (negative, NaN, inf, ``"1:2:3:4"``, ...).
    """
    if isinstance(value, bool):  # bool is an int subclass; True seconds is a defect, not 1.0
        raise ValueError(f"timestamp {value!r} is a boolean, not a time")
    if isinstance(value, (int, float)):
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"timestamp {value!r} is not a finite, non-negative number of seconds")
        return seconds
    if not isinstance(value, str):
        raise ValueError(f"timestamp {value!r} is a {type(value).__name__}, not a string or number")
    match = _TIMESTAMP.match(value.strip())
    if match is None:
        raise ValueError(f"timestamp {value!r} is not HH:MM:SS.mmm, MM:SS.mmm, SS.mmm or a number of seconds")
    hours, minutes, seconds = int(match["h"] or 0), int(match["m"] or 0), float(match["s"])
    if match["m"] is not None and seconds >= 60:
        raise ValueError(f"timestamp {value!r}: seconds {match['s']} must be < 60")
    if match["h"] is not None and minutes >= 60:
        raise ValueError(f"timestamp {value!r}: minutes {match['m']} must be < 60")
    return hours * 3600.0 + minutes * 60.0 + seconds


# --------------------------------------------------------------------------------------------------
# WebDataset keys

# HD-VILA's own form, ``<youtube id>.<n>.mp4``: key ``<youtube id>_<n>``. Other ids are escaped
# (every byte outside [A-Za-z0-9-] as ``_xx`` hex) and end with ``_``; canonical keys end with a
# digit, so the two forms never meet and the mapping is one-to-one.
_CANONICAL_CLIP_ID = re.compile(r"^(?P<video>[A-Za-z0-9_-]+)\.(?P<n>\d+)\.mp4$")
_CANONICAL_KEY = re.compile(r"^(?P<video>[A-Za-z0-9_-]+)_(?P<n>\d+)$")
_ESCAPED_KEY = re.compile(r"^(?:[A-Za-z0-9-]|_[0-9a-f]{2})*_$")
_KEEP = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


def clip_key(clip_id: str) -> str:
    """A WebDataset key for ``clip_id``: only ``[A-Za-z0-9_-]``, no dot, one-to-one.

    ``"QMi8x8o55Ns.1.mp4"`` -> ``"QMi8x8o55Ns_1"`` (YouTube ids may hold ``_`` and ``-``; the
    number after the last ``_`` is the clip number). Any other id is escaped and ends with ``_``:
    ``"clip 7.webm"`` -> ``"clip_207_2ewebm_"``. :func:`key_to_clip_id` inverts both exactly.
    """
    if not isinstance(clip_id, str) or not clip_id:
        raise ValueError(f"clip_id must be a non-empty string, got {clip_id!r}")
    match = _CANONICAL_CLIP_ID.match(clip_id)
    if match:
        return f"{match['video']}_{match['n']}"
    escaped = "".join(chr(b) if b in _KEEP else f"_{b:02x}" for b in clip_id.encode("utf-8"))
    return escaped + "_"


def key_to_clip_id(key: str) -> str:
    """The clip id :func:`clip_key` made ``key`` from; ValueError for a string it cannot have made."""
    if _ESCAPED_KEY.match(key) and len(key) > 1:
        body = key[:-1]
        out, i = bytearray(), 0
        while i < len(body):
            if body[i] == "_":
                out.append(int(body[i + 1 : i + 3], 16))
                i += 3
            else:
                out.append(ord(body[i]))
                i += 1
        return out.decode("utf-8")
    match = _CANONICAL_KEY.match(key)
    if match:
        return f"{match['video']}.{match['n']}.mp4"
    raise ValueError(f"{key!r} is not a key made by clip_key (canonical '<video>_<n>' or escaped, ending in '_')")


# --------------------------------------------------------------------------------------------------
# rows


@dataclass
class ClipRow:
    """One clip of the metadata. ``status`` None = fine so far (the indexer decides the rest);
    ``"bad_metadata"`` with ``error`` in words otherwise. Spans are seconds, half-open [start, end)."""

    key: str | None  # WebDataset key (clip_key(clip_id)); None when there is no clip_id
    clip_id: str | None
    video_id: str | None
    url: str | None
    span_start: float | None
    span_end: float | None
    status: str | None
    error: str | None
    source: str  # "file:line" (jsonl) or "file[i]" (item i of a .json list)


def metadata_files(inputs: str | Path | Iterable[str | Path]) -> list[Path]:
    """The metadata files named by ``inputs``; a folder stands for its metadata files (recursively), sorted.

    Raises FileNotFoundError for a missing input or an empty folder, ValueError for an unsupported
    file type (naming the valid suffixes).
    """
    return expand_files(inputs, METADATA_SUFFIXES, recursive=True, what="metadata")


def read_hdvila_metadata(inputs: str | Path | Iterable[str | Path]) -> Iterator[ClipRow]:
    """One :class:`ClipRow` per clip of every file in ``inputs`` (files or folders), in order.

    Duplicate clip ids are detected across all of ``inputs``. See the module docstring for what
    becomes ``bad_metadata``; nothing is dropped except blank lines.
    """
    seen: dict[str, str] = {}  # key -> source of its first row
    for path in metadata_files(inputs):
        for source, record in _records(path):
            for row in _rows_of_record(record, source):
                if row.key is not None:
                    first = seen.get(row.key)
                    if first is None:
                        seen[row.key] = source
                    else:
                        duplicate = f"duplicate clip_id {row.clip_id!r}, first seen at {first}"
                        row.status = BAD_METADATA
                        row.error = f"{row.error}; {duplicate}" if row.error else f"{source}: {duplicate}"
                yield row


# --------------------------------------------------------------------------------------------------
# file -> (source, parsed object | _Broken)


@dataclass
class _Broken:
    """A line (or file) that yields no object: the reason, and the video_id if it can be read."""

    reason: str
    video_id: str | None = None


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _records(path: Path) -> Iterator[tuple[str, object]]:
    stem = path.name.lower().removesuffix(".gz")
    if stem.endswith(".json"):
        yield from _json_file_records(path)
    else:
        yield from _jsonl_records(path)


def _jsonl_records(path: Path) -> Iterator[tuple[str, object]]:
    line_no = 0
    try:
        with _open_binary(path) as f:
            for line_no, raw in enumerate(f, start=1):
                if raw.strip():
                    yield f"{path}:{line_no}", _parse_line(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as err:  # truncated or corrupt gzip, unreadable file
        yield f"{path}:{line_no + 1}", _Broken(f"cannot read the file after line {line_no}: {err}")


def _parse_line(raw: bytes) -> object:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return _Broken(f"line is not UTF-8 ({err})")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        found = _VIDEO_ID_IN_TEXT.search(text)
        return _Broken(f"invalid JSON ({err})", video_id=found.group(1) if found else None)


def _json_file_records(path: Path) -> Iterator[tuple[str, object]]:
    """A ``.json`` file: a list of videos, one video, or JSON lines under a ``.json`` name."""
    try:
        with _open_binary(path) as f:
            data = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        yield str(path), _Broken(f"cannot read the file: {err}")
        return
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        if data.lstrip()[:1] == b"[":  # meant as one list: one row for the broken file
            yield str(path), _Broken(f"invalid JSON list ({err})")
        else:
            yield from _jsonl_records(path)
        return
    if isinstance(parsed, list):
        for i, item in enumerate(parsed):
            yield f"{path}[{i}]", item
    else:
        yield str(path), parsed


# --------------------------------------------------------------------------------------------------
# parsed object -> rows


def _bad_line(source: str, reason: str, video_id: str | None = None, url: str | None = None) -> ClipRow:
    return ClipRow(None, None, video_id, url, None, None, BAD_METADATA, f"{source}: {reason}", source)


def _rows_of_record(record: object, source: str) -> list[ClipRow]:
    if isinstance(record, _Broken):
        return [_bad_line(source, record.reason, record.video_id)]
    if not isinstance(record, dict):
        return [_bad_line(source, f"expected a JSON object for a video, got {type(record).__name__}")]

    video_id = record.get("video_id")
    url = record.get("url")
    line_errors = []
    if not isinstance(video_id, str) or not video_id.strip():
        line_errors.append("missing video_id" if video_id is None else f"video_id {video_id!r} is not a non-empty string")
        video_id = None
    if url is not None and not isinstance(url, str):
        line_errors.append(f"url {url!r} is not a string")
        url = None

    clips = record.get("clip")
    if clips is None:
        return [_bad_line(source, "; ".join([*line_errors, "missing 'clip' list"]), video_id, url)]
    if not isinstance(clips, list):
        return [_bad_line(source, "; ".join([*line_errors, f"'clip' is a {type(clips).__name__}, not a list"]), video_id, url)]
    if not clips:
        return [_bad_line(source, "; ".join([*line_errors, "the video has an empty clip list"]), video_id, url)]
    return [_clip_row(clip, i, video_id, url, source, line_errors) for i, clip in enumerate(clips)]


def _clip_row(clip: object, index: int, video_id: str | None, url: str | None, source: str, line_errors: list[str]) -> ClipRow:
    errors = list(line_errors)
    if not isinstance(clip, dict):
        errors.append(f"clip {index} is a {type(clip).__name__}, not an object")
        return ClipRow(None, None, video_id, url, None, None, BAD_METADATA, f"{source}: {'; '.join(errors)}", source)

    clip_id = key = start = end = None
    raw_id = clip.get("clip_id")
    if isinstance(raw_id, str) and raw_id.strip():
        clip_id, key = raw_id, clip_key(raw_id)
    elif raw_id is None:
        errors.append(f"clip {index}: missing clip_id")
    else:
        errors.append(f"clip {index}: clip_id {raw_id!r} is not a non-empty string")

    span = clip.get("span")
    if span is None:
        errors.append(f"clip {index}: missing span")
    elif not isinstance(span, list) or len(span) != 2:
        errors.append(f"clip {index}: span {span!r} is not [start, end]")
    else:
        try:
            start = parse_timestamp(span[0])
        except ValueError as err:
            errors.append(f"clip {index}: span start: {err}")
        try:
            end = parse_timestamp(span[1])
        except ValueError as err:
            errors.append(f"clip {index}: span end: {err}")
        if start is not None and end is not None:
            if start > end:
                errors.append(f"clip {index}: reversed span, start {start:.3f} s > end {end:.3f} s")
            elif start == end:
                errors.append(f"clip {index}: zero-length span at {start:.3f} s")

    status, error = (BAD_METADATA, f"{source}: {'; '.join(errors)}") if errors else (None, None)
    return ClipRow(key, clip_id, video_id, url, start, end, status, error, source)


# --------------------------------------------------------------------------------------------------
# captions


def read_caption_lists(csv_path: str | Path) -> dict[str, list[str]]:
    """Every caption of every clip of a ``part_id, clip_id, caption`` CSV (header required), in
    file order. Quotes, commas and newlines inside quoted captions are fine; an empty caption is
    skipped (a clip with only empty captions is absent: it has no caption). pyarrow reads a quote
    left open at the very end of the file as closed there. Raises ValueError naming the missing columns, or the file and the parser's complaint.
    """
    path = Path(csv_path)
    try:
        table = pa_csv.read_csv(
            path,
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types={"part_id": pa.string(), "clip_id": pa.string(), "caption": pa.string()},
                strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as err:
        raise ValueError(f"cannot read captions CSV {path}: {err}") from err
    missing = [c for c in CAPTION_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(
            f"captions CSV {path}: missing column(s) {', '.join(missing)}; expected a header "
            f"'part_id,clip_id,caption', found: {', '.join(table.column_names) or '(none)'}"
        )
    captions: dict[str, list[str]] = {}
    for clip_id, caption in zip(table.column("clip_id").to_pylist(), table.column("caption").to_pylist()):
        if not clip_id or not caption or not caption.strip():
            continue
        captions.setdefault(clip_id, []).append(caption)
    return captions


def read_captions(csv_path: str | Path) -> dict[str, str]:
    """clip_id -> its first caption (the official CSV has one caption per 64 frames of a clip)."""
    return {clip_id: texts[0] for clip_id, texts in read_caption_lists(csv_path).items()}
