"""Ray set-up shared by the pipelines: start or join a cluster, check it can hold the actors, and redo the shards
whose work a cluster lost (a node or a worker process gone)."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
from collections.abc import Iterator

log = logging.getLogger(__name__)

SHARD_ATTEMPTS = 3  # a shard whose work the cluster lost is run again, up to this many attempts in all


def init_ray(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Join ``address`` (a cluster: ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``) or start a local Ray; returns
    True when this call started or joined it.

    Without an address the run is local even where ``ray start`` left a cluster behind on this machine (plain
    ``ray.init()`` would join that one). Reuses a Ray already initialised in this process (the tests' cluster)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    if address:
        check_reachable(address)
        ray.init(address=address, **kwargs)
    else:
        # Ray's workers find the project's packages through the working directory / sys.path.
        ray.init(address="local", num_cpus=num_cpus, **kwargs)
    return True


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A cluster address that nothing answers at stops the run in one line within ``timeout`` seconds (Ray itself
    keeps retrying for minutes). ``auto`` is left to Ray, which says at once when it finds no cluster."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray-address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err)).lower()
        raise ConnectionError(
            f"--ray-address {address}: no Ray cluster answers there ({reason}); start one with `ray start --head` "
            "on that machine, or leave --ray-address out for a local run"
        ) from None


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


def worker_location() -> dict[str, str]:
    """Where the calling task runs: ``host`` name and ``ray_node`` id (empty outside Ray), for a shard's stats."""
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    return {"host": socket.gethostname(), "ray_node": node or ""}


def is_lost_work(err: BaseException) -> bool:
    """True when Ray lost the work (a node left, a worker process died, an object is gone), so running the shard
    again can succeed; False for an exception of the task's own code, which would fail the same way again."""
    import ray

    return isinstance(err, ray.exceptions.RayError) and not isinstance(err, ray.exceptions.RayTaskError)


class ShardAttempts:
    """Shards whose work the cluster lost go back on ``todo``, up to :data:`SHARD_ATTEMPTS` attempts each; the
    rest of the run goes on meanwhile. :meth:`check` at the end stops the run, in one line, if any shard never
    finished: the finished ones are kept, and running the same command again resumes."""

    def __init__(self, todo: collections.deque, limit: int = SHARD_ATTEMPTS) -> None:
        self.todo, self.limit = todo, limit
        self.attempts: collections.Counter = collections.Counter()
        self.failed: dict[int, str] = {}

    def result(self, shard: int, ref):
        """``ray.get(ref)`` of ``shard``'s work; None when the cluster lost it (the shard is queued again or, after
        the last attempt, kept for :meth:`check`). An exception of the task's own code is raised as it is."""
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayError as err:
            self.lost(shard, err)
            return None

    def lost(self, shard: int, err: BaseException) -> None:
        """``err`` came from ``shard``'s work: requeue the shard when the cluster lost it, else re-raise ``err``."""
        if not is_lost_work(err):
            raise err
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        self.requeue(shard, f"{type(err).__name__}: {first[:200]}")

    def requeue(self, shard: int, reason: str) -> None:
        """``shard``'s work was lost for ``reason``: run it again, or after the last attempt keep it for :meth:`check`."""
        self.attempts[shard] += 1
        if self.attempts[shard] < self.limit:
            log.warning("shard %05d: its work was lost (%s); running it again (attempt %d of %d)",
                        shard, reason, self.attempts[shard] + 1, self.limit)  # fmt: skip
            self.todo.append(shard)
        else:
            self.failed[shard] = reason

    def check(self) -> None:
        if self.failed:
            listed = "; ".join(f"{s:05d}: {why}" for s, why in sorted(self.failed.items())[:5])
            raise RuntimeError(
                f"{len(self.failed)} shard(s) not finished: the Ray cluster lost their work {self.limit} times ({listed}). "
                "The finished shards are kept: run the same command again to resume"
            )


class ActorPool:
    """Actors doing the same work; each call goes to the actor with the fewest unfinished calls."""

    def __init__(self, actors: list, method: str) -> None:
        self.actors, self.method = actors, method
        self.outstanding: list[list] = [[] for _ in actors]

    def submit(self, *args):
        """``actor.<method>.remote(*args)`` on the least busy actor; returns its object ref."""
        import ray

        for refs in self.outstanding:
            if refs:
                done = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0])
                refs[:] = [r for r in refs if r not in done]
        k = min(range(len(self.actors)), key=lambda j: len(self.outstanding[j]))
        ref = getattr(self.actors[k], self.method).remote(*args)
        self.outstanding[k].append(ref)
        return ref
