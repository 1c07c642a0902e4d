"""Downloads a hostile URL list cannot turn against the machine: the address classifier and resolver step for
every range (no connection is made to any of them), and end to end through img2dataset's real downloader
against servers on 127.0.0.1 / 127.0.0.2 only: loopback refused (by address, by name, after a redirect),
non-http schemes refused, bodies bounded, a trickling server cut at the deadline."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import bad_images
from conftest import Route
from pose_data.http import safe_http
from pose_data.http.safe_http import BlockedAddress, address_block_reason, resolve_checked
from pose_data.laion.download import DownloadOptions, download_shard


@pytest.mark.parametrize(
    "address, reason",
    [
        ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
        ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("172.31.255.254", "private"), ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"), ("169.254.1.1", "link-local"), ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"),
        ("fc00::1", "private"), ("fd12:3456::1", "private"),
        ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("240.0.0.1", "private"), ("100.64.0.1", "not globally routable"),
        ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"), ("::ffff:169.254.169.254", "link-local"),
        ("8.8.8.8", None), ("1.1.1.1", None), ("2606:4700:4700::1111", None), ("172.32.0.1", None),
    ],
)  # fmt: skip
def test_address_classifier(address, reason):
    assert address_block_reason(address) == reason


def test_the_resolver_step_checks_every_answer_without_connecting(monkeypatch):
    answers = {
        "internal.example": ["10.0.0.7"],
        "metadata.example": ["169.254.169.254"],
        "mixed.example": ["93.184.216.34", "192.168.0.10"],  # one bad answer is enough to refuse
        "public.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    }

    def fake_getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    for host, reason in (("internal.example", "private"), ("metadata.example", "link-local"), ("mixed.example", "private")):
        with pytest.raises(BlockedAddress, match=rf"blocked address \({reason}\)"):
            resolve_checked(host, 80, allow_private=False)
    assert len(resolve_checked("public.example", 443, allow_private=False)) == 2
    assert len(resolve_checked("internal.example", 80, allow_private=True)) == 1


def fetch(urls, **options) -> tuple[list, list]:
    shard = download_shard(0, urls, DownloadOptions(image_size=64, timeout=5, threads=4, min_image_size=0, **options))
    return shard.status, shard.error


def test_loopback_names_redirects_and_other_schemes_are_refused(local_site, monkeypatch):
    photo = local_site.add("safe/photo.jpg", Route(bad_images.real_photo_jpeg()))
    by_name = photo.replace("127.0.0.1", "localhost")
    # a "public" server (127.0.0.2, declared public for this test only) that redirects to the loopback server
    real = safe_http.address_block_reason
    monkeypatch.setattr(safe_http, "address_block_reason", lambda a: None if a == "127.0.0.2" else real(a))

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", photo)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.2", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        redirect = f"http://127.0.0.2:{server.server_address[1]}/go"
        urls = [photo, by_name, redirect, "file:///etc/passwd", "ftp://127.0.0.1/x.jpg", "data:image/png;base64,iVBORw0KGgo="]
        hits = local_site.hits.get("safe/photo.jpg", 0)
        status, error = fetch(urls)
    finally:
        server.shutdown()
    assert status == ["download_failed"] * 6
    for i in range(3):
        assert "blocked address (loopback)" in error[i] and "--allow-private-addresses" in error[i]
    for i, scheme in ((3, "file"), (4, "ftp"), (5, "data")):
        assert f"only http and https URLs are fetched, not {scheme}:" in error[i]
    assert local_site.hits.get("safe/photo.jpg", 0) == hits  # the loopback server never saw a request
    assert "root:" not in "".join(error)  # nothing of /etc/passwd was read
    status, error = fetch([photo], allow_private_addresses=True)  # the switch for local serving
    assert status == [None]


def test_bodies_are_bounded_by_content_length_and_while_read(local_site):
    big = local_site.add("safe/big.jpg", Route(b"\xff\xd8" + b"\0" * 3_000_000))

    class NoLength(BaseHTTPRequestHandler):  # HTTP/1.0, no Content-Length: the body ends when the socket closes
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"\0" * 65536)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NoLength)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        status, error = fetch([big, f"http://127.0.0.1:{server.server_address[1]}/x.jpg"], allow_private_addresses=True, max_image_bytes=1_000_000)
    finally:
        server.shutdown()
    assert status == ["download_failed", "download_failed"]
    assert error[0] == "body larger than 1,000,000 bytes (Content-Length 3,000,002)"
    assert error[1] == "body larger than 1,000,000 bytes"


def test_a_trickling_server_is_cut_at_the_deadline():
    class Trickle(BaseHTTPRequestHandler):  # a byte every 0.2 s: no single read ever times out
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        start = time.monotonic()
        status, error = fetch([f"http://127.0.0.1:{server.server_address[1]}/slow.jpg"], allow_private_addresses=True, deadline=1.5)
        took = time.monotonic() - start
    finally:
        server.shutdown()
    assert status == ["download_failed"] and error[0] == "no complete answer within the 1.5 s deadline"
    assert took < 6, took


@pytest.mark.parametrize(
    "url",
    ["https://127.0.0.1:9/x.jpg", "http://2130706433:9/x.jpg", "http://0x7f.1:9/x.jpg", "http://[::1]:9/x.jpg",
     "http://[::ffff:127.0.0.1]:9/x.jpg", "http://127.1:9/x.jpg"],
)  # fmt: skip
def test_other_spellings_of_loopback_and_https_are_checked_before_connecting(url):
    """The check runs on what the resolver answers, so every spelling of an address meets it, https too (before TLS)."""
    with pytest.raises(OSError, match=r"blocked address \(loopback\)"):
        safe_http.build_opener().open(url, timeout=2)


def _serve(handler_body) -> tuple[socket.socket, int]:
    """A raw server on 127.0.0.1: ``handler_body(conn)`` per connection, in its own thread."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handler_body, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener, listener.getsockname()[1]


def test_https_is_cut_at_the_deadline_too(monkeypatch):
    """The watchdog must watch the TLS socket the response reads from, not only the TCP socket under it."""
    import ssl

    from conftest import REPO

    tls = REPO / "tests" / "data" / "tls"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(tls / "cert.pem"), str(tls / "key.pem"))

    def trickle(conn):
        try:
            s = context.wrap_socket(conn, server_side=True)
            s.recv(65536)
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            for _ in range(100):
                s.sendall(b"\0")
                time.sleep(0.2)
        except OSError:
            pass

    listener, port = _serve(trickle)
    client = ssl.create_default_context(cafile=str(tls / "cert.pem"))  # trust the test certificate, verify as usual
    monkeypatch.setattr(ssl, "_create_default_https_context", lambda *a, **k: client)
    start = time.monotonic()
    try:
        with pytest.raises(safe_http.DownloadLimit, match="within the 1.5 s deadline"):
            safe_http.build_opener(allow_private_addresses=True, deadline=1.5).open(f"https://127.0.0.1:{port}/x.jpg", timeout=5).read()
    finally:
        listener.close()
    assert time.monotonic() - start < 4


def test_the_deadline_covers_redirects_and_a_cut_body_is_an_error():
    def slow_redirects(conn):
        try:
            request = conn.recv(65536).decode()
            hop = int(request.split(" ")[1].strip("/") or 0)
            time.sleep(0.8)
            conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: /{hop + 1}\r\nContent-Length: 0\r\n\r\n".encode())
        except OSError:
            pass
        finally:
            conn.close()

    listener, port = _serve(slow_redirects)
    start = time.monotonic()
    try:
        with pytest.raises((safe_http.DownloadLimit, OSError)):
            safe_http.build_opener(allow_private_addresses=True, deadline=1.0).open(f"http://127.0.0.1:{port}/0", timeout=5).read()
    finally:
        listener.close()
    assert time.monotonic() - start < 2.5  # one deadline for the request and its redirects, not one per hop

    def cut(conn):
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n" + b"\0" * 500)
        conn.close()

    listener, port = _serve(cut)
    try:
        status, error = fetch([f"http://127.0.0.1:{port}/cut.jpg"], allow_private_addresses=True)
    finally:
        listener.close()
    assert status == ["download_failed"] and "IncompleteRead(500 bytes read, 500 more expected)" in error[0]
