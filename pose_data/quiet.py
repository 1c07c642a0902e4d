"""A newcomer's terminal shows this project's progress bars, tables and one-line messages, not other libraries' chatter.

Every command calls :func:`quiet_libraries` first (``--verbose`` turns it off). It silences, at the source:

- albumentations' update check (a PyPI request at import, and its warning): ``NO_ALBUMENTATIONS_UPDATE=1``, always;
- transformers' and diffusers' per-load bars ("Loading weights", "Writing model shards") and their info and warning
  logs below ERROR (the hub's download bars stay: a multi-GB first download should show progress);
- the hub's retry warnings when offline (``HF_HUB_VERBOSITY=error``, and its logger at ERROR);
- accelerate's info lines (one per checkpoint file); its warnings stay;
- setuptools' ``pkg_resources`` deprecation warning that mmengine triggers at import;
- Ray's note that token authentication is on (the default; the warning that it is *off* still shows);
- MediaPipe's and TF Lite's native lines ("Created TensorFlow Lite XNNPACK delegate", "Feedback manager requires
  ...", "All log messages before absl::InitializeLog() ..."), written by C++ straight to file descriptor 2: the
  MediaPipe backend runs inside :func:`native_stderr_filtered`, which drops exactly those lines and passes every
  other line through. The choice travels to Ray workers on this machine in the ``FYP_VERBOSE`` environment variable.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

VERBOSE_ENV = "FYP_VERBOSE"
#: Native (C++) log lines of MediaPipe / TF Lite that say nothing to a user.
NATIVE_NOISE = re.compile(
    rb"^(INFO: Created TensorFlow Lite XNNPACK delegate|WARNING: All log messages before absl::InitializeLog\(\))"
    rb"|^[IW]\d{4} [^\n]*(inference_feedback_manager|landmark_projection_calculator|gl_context(_egl)?)\.cc:\d+\]"
)  # only INFO (I) and WARNING (W) lines of those files: their errors (E, F) pass
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


VERBOSE_HELP = "debug logging, and other libraries' messages and bars too"


def add_verbose_flags(parser: argparse.ArgumentParser, subcommands: argparse._SubParsersAction | None = None) -> None:
    """``-v/--verbose`` on ``parser`` and on each of its ``subcommands`` (so it may stand before or after the
    subcommand's name)."""
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    for sub in (subcommands.choices.values() if subcommands is not None else ()):
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def quiet_libraries(verbose: bool = False, *, models: bool = True, progress: bool = True) -> None:
    """Silence other libraries' chatter for this process and the Ray workers it starts (module doc); ``models``:
    also transformers' and diffusers' bars (imports both, so a command that loads no model passes False);
    ``progress=False`` (``--no-progress``): no download bars either."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # a network request at import: never wanted
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    if verbose:
        return
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated", category=UserWarning)
    warnings.filterwarnings("ignore", message=r".*local_dir_use_symlinks.*")  # diffusers passes a retired hub argument
    for name in ("diffusers", "transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # its per-file checkpoint lines drown the progress; its warnings stay
    logging.getLogger(RAY_AUTH_LOGGER).addFilter(_DropMessage("Token authentication is enabled"))
    if not models:
        return
    try:
        import diffusers.utils.logging as diffusers_logging
        import transformers.utils.logging as transformers_logging
        from huggingface_hub.utils import enable_progress_bars
    except ImportError:  # pose-data alone does not need them
        return
    transformers_logging.disable_progress_bar()  # "Loading weights", "Writing model shards"
    diffusers_logging.disable_progress_bar()
    if progress and os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").upper() not in ("1", "ON", "YES", "TRUE"):
        enable_progress_bars()  # transformers' switch also turns off the hub's download bars: keep those


_fd2_lock = threading.RLock()  # file descriptor 2 is the process's: one capture at a time


@contextmanager
def native_stderr_filtered(noise: re.Pattern[bytes] = NATIVE_NOISE) -> Iterator[None]:
    """Run the block with file descriptor 2 captured; afterwards write back every captured line except those matching
    ``noise`` (also when the block raises). A no-op with ``FYP_VERBOSE=1``. Blocks in other threads wait for it.

    Keep the block short (a model's start-up): a process that dies inside it (abort, ``os._exit``) loses what it
    captured, since the lines are written back only when the block ends."""
    if is_verbose():
        yield
        return
    with _fd2_lock, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True) if not noise.search(line)]
            if kept:
                os.write(2, b"".join(kept))
