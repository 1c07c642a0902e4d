"""Read LAION-style metadata files (parquet, csv/tsv, jsonl) into Arrow tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

METADATA_SUFFIXES = (".parquet", ".csv", ".tsv", ".jsonl", ".json")


def expand_files(inputs, suffixes: tuple[str, ...], *, recursive: bool = False, what: str = "input") -> list[Path]:
    """Files named on the command line; a folder stands for its files ending in ``suffixes``
    (searched recursively with ``recursive``; hidden and ``_``-prefixed names skipped), sorted.

    A missing input or an empty folder raises FileNotFoundError, another file type ValueError,
    both naming the path and the valid suffixes.
    """
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            candidates = path.rglob("*") if recursive else path.iterdir()
            found = sorted(p for p in candidates if p.is_file() and p.name.lower().endswith(suffixes) and not p.name.startswith((".", "_")))
            if not found:
                raise FileNotFoundError(f"{what} folder {path} holds no {', '.join(suffixes)} file")
            files.extend(found)
        elif path.is_file():
            if not path.name.lower().endswith(suffixes):
                raise ValueError(f"{what} file {path}: unsupported type; use one of {', '.join(suffixes)}")
            files.append(path)
        else:
            raise FileNotFoundError(f"{what} not found: {path}")
    if not files:
        raise ValueError(f"no {what} given")
    return files


def expand_inputs(inputs: list[str]) -> list[Path]:
    """LAION metadata files named on the command line (folders: their metadata files)."""
    return expand_files(inputs, METADATA_SUFFIXES)


def read_metadata(path: Path) -> pa.Table:
    """One metadata file as a table; errors name the file."""
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        if path.suffix in (".csv", ".tsv"):
            parse = pa_csv.ParseOptions(delimiter="\t" if path.suffix == ".tsv" else ",", newlines_in_values=True)
            return pa_csv.read_csv(path, parse_options=parse)
        return pa_json.read_json(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"cannot read metadata file {path}: {err}") from err


def read_metadata_schema(path: Path) -> pa.Schema:
    """The columns of a metadata file (parquet: from its footer, without reading the data)."""
    if path.suffix == ".parquet":
        try:
            return pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise ValueError(f"cannot read metadata file {path}: {err}") from err
    return read_metadata(path).schema


def require_columns(schema: pa.Schema, path: Path, columns: dict[str, str]) -> None:
    """``columns`` maps option name -> column name; a missing one stops the run naming both."""
    for option, column in columns.items():
        if column not in schema.names:
            raise ValueError(f"{path}: no column {column!r} (set by {option}); its columns are: {', '.join(schema.names)}")


def conform_to_schema(table: pa.Table, schema: pa.Schema, path: Path) -> pa.Table:
    """``table`` with ``schema``'s columns in its order: missing ones as nulls, types cast."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            try:
                columns.append(table.column(field.name).cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise ValueError(f"{path}: column {field.name!r} cannot be read as {field.type}: {err}") from err
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def read_metadata_tables(files: list[Path], required_columns: dict[str, str]) -> Iterator[pa.Table]:
    """Every file as a table of ONE schema (a column missing from a file becomes nulls there), so
    every output parquet has the same columns. Checks all files' columns before reading any rows."""
    schemas = [read_metadata_schema(f) for f in files]
    for f, schema in zip(files, schemas):
        require_columns(schema, f, required_columns)
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ValueError(f"input files have incompatible columns: {err}") from err
    return (conform_to_schema(read_metadata(f), schema, f) for f in files)
