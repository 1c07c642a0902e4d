"""``DIR/preview.png``: kept images with their skeletons overlaid, and the counts by status."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pose_data.files.atomic import atomic_path

THUMB = 192


def overlay_skeleton(image: np.ndarray, skeleton: np.ndarray) -> np.ndarray:
    """Skeleton pixels (non-black) replace the image's; (H, W, 3) uint8 both."""
    mask = skeleton.max(axis=2, keepdims=True) > 0
    return np.where(mask, skeleton, image)


def contact_sheet(tiles: list[tuple[np.ndarray, str]], header: list[str], columns: int = 4) -> Image.Image:
    """Tiles (image, caption) in a grid under a few header lines of text."""
    rows = max(1, -(-len(tiles) // columns))
    line_h, cap_h = 14, 14
    top = line_h * len(header) + 8
    sheet = Image.new("RGB", (columns * THUMB, top + rows * (THUMB + cap_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, text in enumerate(header):
        draw.text((4, 4 + k * line_h), text, fill=(0, 0, 0))
    for k, (tile, caption) in enumerate(tiles):
        img = Image.fromarray(tile)
        img.thumbnail((THUMB, THUMB))
        x, y = (k % columns) * THUMB, top + (k // columns) * (THUMB + cap_h)
        sheet.paste(img, (x + (THUMB - img.width) // 2, y + (THUMB - img.height) // 2))
        draw.text((x + 2, y + THUMB), caption[:30], fill=(0, 0, 0))
    return sheet


def write_laion_pose_preview(out_dir: Path, counts: dict[str, int], max_images: int = 16) -> Path:
    import webdataset as wds

    tiles = []
    tars = sorted(str(p) for p in (out_dir / "shards").glob("*.tar"))
    if tars:
        for sample in wds.WebDataset(tars, shardshuffle=False, empty_check=False):
            image = np.asarray(Image.open(io.BytesIO(sample["jpg"])).convert("RGB"))
            skeleton = np.asarray(Image.open(io.BytesIO(sample["pose.png"])).convert("RGB"))
            tiles.append((overlay_skeleton(image, skeleton), sample["txt"].decode("utf-8")))
            if len(tiles) >= max_images:
                break
    total = sum(counts.values())
    header = [f"{out_dir.name}: {counts.get('ok', 0)} kept of {total} rows"]
    header.append(", ".join(f"{s}: {n}" for s, n in counts.items() if n))
    path = out_dir / "preview.png"
    with atomic_path(path) as tmp:
        contact_sheet(tiles, header).save(tmp, format="PNG")
    return path


def clip_frames(video_path: str, start: float, end: float, num_frames: int) -> list[np.ndarray]:
    """The first, middle and last kept frame of a clip span, as RGB arrays (decoded once)."""
    from pose_data.media.video_decode import decode_span

    wanted = sorted({0, num_frames // 2, max(num_frames - 1, 0)})
    frames: list[np.ndarray] = []
    seen = 0

    def keep(frame, _t: float) -> None:
        nonlocal seen
        if seen in wanted:
            frames.append(frame.to_ndarray(format="rgb24"))
        seen += 1

    decode_span(video_path, start, end, on_frame=keep)
    return frames


def write_hdvila_preview(out_dir: Path, counts: dict[str, int], max_clips: int = 12) -> Path:
    """``OUT/preview.png``: first / middle / last frame of the first kept clips, counts by status."""
    import pyarrow.dataset as ds

    files = sorted(str(p) for p in (out_dir / "index").glob("*.parquet"))
    tiles = []
    if files:
        table = ds.dataset(files, format="parquet").to_table(
            columns=["clip_id", "status", "video_path", "span_start", "span_end", "num_frames"]
        )
        for row in table.to_pylist():
            if row["status"] != "ok":
                continue
            frames = clip_frames(row["video_path"], row["span_start"], row["span_end"], row["num_frames"])
            tiles += [(f, f"{row['clip_id']} {label}") for f, label in zip(frames, ("first", "middle", "last"))]
            if len(tiles) >= 3 * max_clips:
                break
    total = sum(counts.values())
    header = [f"{out_dir.name}: {counts.get('ok', 0)} kept of {total} clips", ", ".join(f"{s}: {n}" for s, n in counts.items() if n)]
    path = out_dir / "preview.png"
    with atomic_path(path) as tmp:
        contact_sheet(tiles, header, columns=3).save(tmp, format="PNG")
    return path
