"""Memory of one download task against the size of the images it decodes (``pose-data build-laion-pose``'s
``download.max_image_area``): peak RSS of a process that downloads one PNG of N megapixels through
``download_shard`` (img2dataset's downloader, our guarded opener and normalizer), against the same process with a
64 x 64 PNG as the baseline. Each size runs in its own process; images are served on 127.0.0.1.

Within a task img2dataset downloads with ``threads`` threads but decodes and resizes one image at a time, so a
task holds at most ``threads x max_image_bytes`` of compressed bodies plus one decoded image.

    .venv/bin/python bench/download_memory.py [--megapixels 10 40 88]
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import subprocess
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def child(folder: str, name: str) -> dict:
    from pose_data.laion.download import DownloadOptions, download_shard

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
    shard = download_shard(0, [url], DownloadOptions(image_size=512, timeout=60, allow_private_addresses=True, max_image_area=200_000_000))
    server.shutdown()
    return {"status": shard.status[0], "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", type=float, nargs="+", default=[10, 40, 88])
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    import cv2
    import numpy as np

    mib = 2**20
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for mp in [0.004, *args.megapixels]:
            side = int((mp * 1e6) ** 0.5)
            image = np.zeros((side, side, 3), np.uint8)
            image[::50] = 255  # stripes: a small file that decodes to a big image
            name = f"{side}.png"
            cv2.imwrite(str(Path(tmp) / name), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
            out = subprocess.run([sys.executable, __file__, "--child", tmp, name], capture_output=True, text=True, check=True)
            rows.append((mp, side, (Path(tmp) / name).stat().st_size, json.loads(out.stdout.strip().splitlines()[-1])))
    base = rows[0][3]["peak_bytes"]
    print(f"\nbaseline (64 x 64 PNG): peak RSS {base / mib:.0f} MiB")
    for mp, side, size, r in rows[1:]:
        extra = r["peak_bytes"] - base
        print(f"{mp:5.0f} MP ({side} x {side}, {size / 1024:.0f} KB PNG): peak RSS {r['peak_bytes'] / mib:6.0f} MiB, "
              f"+{extra / mib:5.0f} MiB = {extra / (mp * 1e6):.1f} bytes per pixel ({r['status'] or 'ok'})")  # fmt: skip


if __name__ == "__main__":
    main()
