"""Self-describing outputs: package versions, counts by status, and the end-of-run summary table."""

from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "follow-your-pose", "torch", "torchvision", "numpy", "pyarrow", "pandas", "ray", "img2dataset",
    "webdataset", "mediapipe", "mmcv", "mmdet", "mmpose", "mmengine", "opencv-python", "av", "diffusers",
    "transformers", "accelerate", "xtcocotools",
)  # fmt: skip


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex): which file an output was made from, whatever its path becomes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def count_statuses(meta_dir: Path, statuses: tuple[str, ...]) -> dict[str, int]:
    """Rows per status over every parquet file in ``meta_dir`` (every known status listed, 0 too)."""
    import pyarrow.dataset as ds

    counts = {s: 0 for s in statuses}
    files = sorted(meta_dir.glob("*.parquet"))
    if files:
        table = ds.dataset([str(f) for f in files], format="parquet").to_table(columns=["status"])
        for entry in table.column("status").value_counts().to_pylist():
            counts[entry["values"]] = counts.get(entry["values"], 0) + int(entry["counts"])
    return counts


def format_summary(counts: dict[str, int], total: int, title: str) -> str:
    width = max(len(s) for s in [*counts, "status"])
    lines = [title, f"  {'status'.ljust(width)}  {'rows':>9}  {'share':>6}"]
    for status, n in counts.items():
        share = 100.0 * n / total if total else 0.0
        lines.append(f"  {status.ljust(width)}  {n:>9,}  {share:>5.1f}%")
    lines.append(f"  {'total'.ljust(width)}  {total:>9,}")
    return "\n".join(lines)


def print_summary(counts: dict[str, int], total: int, title: str) -> None:
    print(format_summary(counts, total, title), flush=True)
