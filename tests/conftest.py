"""Shared fixtures: one local Ray cluster for the session, and a local HTTP server with routes."""

from __future__ import annotations

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a torchrun rendezvous or a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Route:
    def __init__(self, body: bytes, content_type: str = "image/jpeg", status: int = 200, delay: float = 0.0):
        self.body, self.content_type, self.status, self.delay = body, content_type, status, delay


class LocalSite:
    """``site.add("a.jpg", Route(...))`` then ``site.url("a.jpg")``; unknown paths answer 404."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                name = self.path.lstrip("/")
                site.hits[name] = site.hits.get(name, 0) + 1
                route = site.routes.get(name)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                if route.delay:
                    time.sleep(route.delay)
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                try:
                    self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, name: str, route: Route) -> str:
        self.routes[name] = route
        return self.url(name)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def local_site():
    site = LocalSite()
    yield site
    site.close()


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray cluster (2 CPUs), shared by every test that needs one."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")  # never a cluster of `ray start`
    yield ray
    ray.shutdown()
