"""Ray set-up shared by the pipelines: start or join a cluster, and check it can hold the actors."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)


def init_ray(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Join ``address`` (a cluster) or start a local Ray; returns True when this call started it.

    Reuses a Ray already initialised in this process (tests start one local cluster for all).
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        # Ray's workers find the project's packages through the working directory / sys.path.
        ray.init(num_cpus=num_cpus, **kwargs)
    return True


def require_resources(*, cpus: float, gpus: float, what: str) -> None:
    """Stop early, naming the shortfall, when the cluster cannot ever schedule ``what``."""
    import ray

    have = ray.cluster_resources()
    if cpus > have.get("CPU", 0):
        raise RuntimeError(f"{what} need {cpus:g} CPUs but the Ray cluster has {have.get('CPU', 0):g}")
    if gpus > have.get("GPU", 0):
        raise RuntimeError(f"{what} need {gpus:g} GPUs but the Ray cluster has {have.get('GPU', 0):g}")


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Ray for the ``with`` block: joins/starts it, and shuts down only a Ray this block started."""
    import ray

    started = init_ray(address)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
