"""Kill a Ray actor's process in the middle of a run: what the fault tests of the pipelines share."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path


def actor_pids(actor_class: str) -> set[int]:
    """The processes of the live Ray actors of ``actor_class`` (Ray names them ``ray::ClassName``)."""
    out = subprocess.run(["pgrep", "-f", f"ray::{actor_class}"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def run_and_kill_mid_run(work: Callable[[], dict], marker: Path, actor_class: str, *, timeout: float = 180) -> tuple[dict, set[int]]:
    """Run ``work`` in a thread; once ``marker`` exists (part of the run done), SIGKILL the ``actor_class`` actors
    that started meanwhile; wait for the run to end. Returns what ``work`` returned and the killed pids."""
    before = actor_pids(actor_class)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(value=work()))
    thread.start()
    deadline = time.time() + timeout
    while not marker.exists():
        assert thread.is_alive() and time.time() < deadline, f"the run ended before a {actor_class} actor could be killed"
        time.sleep(0.05)
    killed = actor_pids(actor_class) - before
    assert killed, f"no {actor_class} actor of this run found"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert "value" in result, f"the run did not complete after its {actor_class} actor was killed"
    return result["value"], killed
