"""``fyp-app``: the web app (Gradio) over one loaded model, on 127.0.0.1 unless ``--host`` says otherwise.

    fyp-app --base B --pose-encoder P [--video-layers V] | --pipeline DIR  [--host 127.0.0.1] [--port 7860]
            [--device D] [--dtype T] [--max-upload-mb 200] [--pose-backend mmpose]

The model loads as ``fyp-generate`` loads it (:func:`model.generation.cli.load_pipeline`). Gradio is an optional
extra (``pip install .[app]``); without it the command stops with one line saying so. Uploads larger than
``--max-upload-mb`` are refused by Gradio; every temporary file (uploads included) lives in one folder removed when
the app stops (:mod:`model.app.session_files`). The "serving on" line is printed once the server listens; a port
that is taken or an address that cannot be listened on is one ``fyp-app: error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import sys
import time
from types import SimpleNamespace

from model.generation.cli import one_line
from pose_data.pose.estimator import BACKENDS, PoseModelLoadError

log = logging.getLogger("fyp-app")
#: Requests that may wait for the model at once; more are refused by Gradio with "queue is full".
MAX_QUEUE = 16
MISSING_GRADIO = "fyp-app: error: Gradio is not installed; install the app extra: pip install .[app] (or pip install 'gradio>=6.31,<7')"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fyp-app", description="Follow Your Pose in the browser: upload a video, type a prompt, generate")
    m = p.add_argument_group("model (loaded once)")
    src = m.add_mutually_exclusive_group(required=True)
    src.add_argument("--base", metavar="DIR|HUB_ID", help="SD 1.x diffusers folder or hub id (as fyp-generate)")
    src.add_argument("--pipeline", metavar="DIR", help="a saved FollowYourPosePipeline folder")
    m.add_argument("--pose-encoder", metavar="DIR|PTH", help="as fyp-generate --pose-encoder")
    m.add_argument("--video-layers", metavar="DIR|FILE", help="as fyp-generate --video-layers")
    m.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    m.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None, help="default float16 on cuda, float32 on cpu")
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 opens the app to the network)")
    s.add_argument("--port", type=int, default=7860, help="default 7860")
    s.add_argument("--max-upload-mb", type=float, default=200, help="largest upload in MB (default 200)")
    s.add_argument("--pose-backend", choices=BACKENDS, default="mmpose", help="the page's default pose backend for driving videos")
    return p


def load_model(args):
    """The pipeline, loaded as fyp-generate loads it."""
    from model.generation.cli import load_pipeline

    if args.pipeline:
        from model.generation.follow_your_pose_pipeline import is_pipeline_folder

        if not is_pipeline_folder(args.pipeline):
            raise ValueError(f"--pipeline {args.pipeline}: not a saved FollowYourPosePipeline folder (no fyp_pipeline.json)")
    base = args.pipeline or args.base
    return load_pipeline(SimpleNamespace(base=base, pose_encoder=args.pose_encoder, video_layers=args.video_layers, device=args.device, dtype=args.dtype))


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def launch_options(args, examples: list[str]) -> dict:
    """``demo.launch``'s keyword arguments. The upload limit is a whole number of bytes (Gradio reads a size string's
    number as an int: ``"1.5mb"`` would not parse). ``allowed_paths`` is only the bundled examples' folder: the
    sessions' videos are returned through Gradio's cache (under ``GRADIO_TEMP_DIR``), never served from their folder,
    so one session cannot fetch another's files by path."""
    return {"server_name": args.host, "server_port": args.port, "max_file_size": int(args.max_upload_mb * 2**20), "show_error": False,
            "allowed_paths": sorted({os.path.dirname(e) for e in examples}), "quiet": True, "prevent_thread_lock": True}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not 0 < args.max_upload_mb <= 1e6:
        print(f"fyp-app: error: --max-upload-mb must be in (0, 1e6], got {args.max_upload_mb:g}", file=sys.stderr)
        return 2
    if importlib.util.find_spec("gradio") is None:  # not imported yet: Gradio reads GRADIO_TEMP_DIR when imported
        print(MISSING_GRADIO, file=sys.stderr)
        return 2
    if args.base and not args.pose_encoder:
        print("fyp-app: error: --base needs --pose-encoder (the stage-1 output, or the official pose_encoder.pth): the app "
              "makes pose-guided videos", file=sys.stderr)  # fmt: skip
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this address can use the model (the page and its API); "
                    "there is no authentication", args.host)  # fmt: skip
    from model.app.session_files import SessionFiles

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        pipe = load_model(args)
    except (ValueError, OSError, PoseModelLoadError) as err:
        print(f"fyp-app: error: {one_line(err)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # a terminated app cleans up as after Ctrl-C
    with SessionFiles() as files:
        os.environ["GRADIO_TEMP_DIR"] = str(files.uploads)  # Gradio's upload cache inside the app's folder: set before
        from model.app.ui import build_ui, example_videos  # this first import of gradio

        examples = example_videos()
        demo = build_ui(pipe, files, pose_backend=args.pose_backend, examples=examples)
        demo.queue(default_concurrency_limit=1, max_size=MAX_QUEUE)  # one run of the model at a time; a bounded wait
        try:
            demo.launch(**launch_options(args, examples))
            print(f"fyp-app: serving on {demo.local_url} (temporary files in {files.root})", flush=True)
            while demo.is_running:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        except (OSError, ValueError) as err:  # the port taken, an address that cannot be listened on
            print(f"fyp-app: error: cannot serve on {args.host}:{args.port}: {one_line(err)}", file=sys.stderr)
            return 2
        finally:
            demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
