"""``DIR/preview.png``: kept images with their skeletons overlaid, and the counts by status."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pose_data.atomic import atomic_path

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
