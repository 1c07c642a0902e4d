"""HTTP(S) fetching that a hostile URL list cannot turn against the machine that runs it.

A LAION-scale crawl visits hundreds of millions of URLs on domains that change owners, so some will point at
the crawler's own network. :func:`build_opener` makes the ``urllib`` opener that img2dataset's downloader uses
(installed process-wide with ``urllib.request.install_opener`` in the download task), with:

- **public addresses only** (unless ``allow_private_addresses``): every connection, redirects included,
  resolves the host itself and connects to a checked address, so a name that resolves to 127.0.0.1, a redirect
  to ``localhost`` or to the cloud metadata address 169.254.169.254, and a DNS answer that changes between check
  and connect (the connection goes to the address checked) are all refused. Refused: loopback, private (10/8,
  172.16/12, 192.168/16, fc00::/7), link-local (169.254/16, fe80::/10), multicast, unspecified, reserved, shared
  (100.64/10) and every other not globally routable range, IPv4-mapped IPv6 addresses by their IPv4 address.
- **http and https only**: no ``file:``, ``ftp:``, ``data:`` handler exists in the opener, and no proxy handler
  (environment proxies are not used: they would be the ones deciding where a request goes).
- **bounded bodies**: a body longer than ``max_bytes`` (by its Content-Length, or as it is read) is refused.
- **a total deadline** per request, redirects included (at most :data:`MAX_REDIRECTS`): a watchdog shuts the
  sockets down ``deadline`` seconds after the request started (the TLS socket too, for https), so a server
  that trickles one byte a second cannot hold a download thread (the read timeout alone is per socket read);
- a body cut short of its Content-Length is an error (``IncompleteRead``), not a shorter image.

Refusals say why without naming what an internal host answered: "blocked address (loopback)",
"body larger than 20,971,520 bytes", "no answer within the 60 s deadline".
"""

from __future__ import annotations

import functools
import heapq
import http.client
import ipaddress
import socket
import threading
import time
import urllib.error
import urllib.request
import weakref

#: The defaults a LAION-scale operator wants: LAION images are rarely above a few MB (20 MiB keeps any
#: real photo), and a minute is far beyond what a good server needs for that.
DEFAULT_MAX_BYTES = 20 * 2**20
DEFAULT_DEADLINE_S = 60.0
#: Redirects followed per request (urllib's default is 10; image URLs need one or two).
MAX_REDIRECTS = 5


class BlockedAddress(OSError):
    """The URL's host resolves to an address that is not fetched."""


class DownloadLimit(OSError):
    """The body is too large, or the request outlived its deadline."""


def address_block_reason(address: str) -> str | None:
    """Why ``address`` (an IP literal) is not fetched, or None for a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for name, test in (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if test:
            return name
    return None if ip.is_global else "not globally routable"


def resolve_checked(host: str, port: int, *, allow_private: bool) -> list[tuple]:
    """``getaddrinfo`` answers for ``host`` (TCP); BlockedAddress when any of them is not public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise OSError(f"cannot resolve host ({err.strerror})") from None
    if not allow_private:
        for info in infos:
            reason = address_block_reason(info[4][0])
            if reason is not None:
                raise BlockedAddress(f"blocked address ({reason}); only public addresses are fetched (--allow-private-addresses)")
    return infos


class _Watchdog:
    """One thread that shuts sockets down when their deadline passes (a timer thread per request would not scale)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._cv = threading.Condition()
        self._count = 0
        threading.Thread(target=self._run, name="http-deadline-watchdog", daemon=True).start()

    def watch(self, sock: socket.socket, deadline: float) -> None:
        with self._cv:
            self._count += 1
            heapq.heappush(self._heap, (deadline, self._count, sock))
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap:
                    self._cv.wait()
                deadline, _, sock = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                heapq.heappop(self._heap)
            _expired.add(sock)
            try:
                sock.shutdown(socket.SHUT_RDWR)  # a blocked read returns at once; a closed socket raises
            except OSError:
                pass


#: Sockets the watchdog cut: a read that then ends early is the deadline's doing, not the server's.
_expired: weakref.WeakSet = weakref.WeakSet()


_watchdog: _Watchdog | None = None
_watchdog_lock = threading.Lock()


def _watch_until(sock: socket.socket, when: float) -> None:
    """Shut ``sock`` down at ``when`` (``time.monotonic()`` seconds)."""
    global _watchdog
    with _watchdog_lock:
        if _watchdog is None:
            _watchdog = _Watchdog()
    _watchdog.watch(sock, when)


def checked_create_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None, *,
                              allow_private: bool = False, deadline_at: float | None = None, **_ignored) -> socket.socket:  # fmt: skip
    """``socket.create_connection`` that resolves ``address``'s host once, refuses it unless every answer is public
    (or ``allow_private``), connects to an address it checked, and (with ``deadline_at``) has the watchdog shut
    the socket down at that time. Also stands in for yt-dlp's own ``create_connection``."""
    host, port = address[0], address[1]
    last: OSError | None = None
    for family, kind, proto, _name, sockaddr in resolve_checked(host, port, allow_private=allow_private):
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)  # the address that was checked, not a second lookup
            if deadline_at is not None:
                _watch_until(sock, deadline_at)
            return sock
        except OSError as err:
            sock.close()
            last = err
    raise last or OSError("no address to connect to")


def _limited_response_class(max_bytes: int, deadline: float):
    class LimitedResponse(http.client.HTTPResponse):
        """Reads at most ``max_bytes`` of body, and says so when the deadline cut the connection."""

        def __init__(self, sock, *args, **kwargs):
            super().__init__(sock, *args, **kwargs)
            self._sock = sock

        def begin(self) -> None:
            try:
                super().begin()
            except (OSError, http.client.HTTPException) as err:
                raise self._late(err) from None
            length = self.getheader("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise DownloadLimit(f"body larger than {max_bytes:,} bytes (Content-Length {int(length):,})")

        def read(self, amt: int | None = None) -> bytes:
            if amt is not None:
                try:
                    data = self._count(super().read(amt))
                except (OSError, http.client.HTTPException) as err:
                    raise self._late(err) from None
                if not data and self._sock in _expired:
                    raise DownloadLimit(f"no complete answer within the {deadline:g} s deadline")
                return data
            parts = []
            while True:
                try:
                    chunk = super().read1(65536)
                except (OSError, http.client.HTTPException) as err:
                    raise self._late(err) from None
                if not chunk:
                    break
                parts.append(self._count(chunk))
            if self._sock in _expired:  # the watchdog ended the body, not the server
                raise DownloadLimit(f"no complete answer within the {deadline:g} s deadline")
            if self.length:  # the server closed before the Content-Length it announced
                raise http.client.IncompleteRead(b"".join(parts), self.length)
            return b"".join(parts)

        def _count(self, chunk: bytes) -> bytes:
            self._read_so_far = getattr(self, "_read_so_far", 0) + len(chunk)
            if self._read_so_far > max_bytes:
                self.close()
                raise DownloadLimit(f"body larger than {max_bytes:,} bytes")
            return chunk

        def _late(self, err: Exception) -> Exception:
            if self._sock in _expired:
                return DownloadLimit(f"no complete answer within the {deadline:g} s deadline")
            return err

    return LimitedResponse


def _connection_classes(allow_private: bool, max_bytes: int, deadline: float):
    response_class = _limited_response_class(max_bytes, deadline)

    class Checked:
        """Connects through :func:`checked_create_connection` (the TCP socket watched from the start, the TLS handshake
        included) and reads through the limited response."""

        def __init__(self, *args, deadline_at: float, **kwargs):
            super().__init__(*args, **kwargs)
            self.deadline_at = deadline_at
            self._create_connection = functools.partial(checked_create_connection, allow_private=allow_private, deadline_at=deadline_at)
            self.response_class = response_class

    class Connection(Checked, http.client.HTTPConnection):
        pass

    class SecureConnection(Checked, http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()  # TLS is wrapped around the checked TCP socket with the URL's host name
            _watch_until(self.sock, self.deadline_at)  # the TLS socket the response reads from

    return Connection, SecureConnection


def _request_deadline(req, seconds: float) -> float:
    """The request's absolute deadline, set when it is first opened and carried over redirects."""
    at = getattr(req, "_fyp_deadline_at", None)
    if at is None:
        at = req._fyp_deadline_at = time.monotonic() + seconds
    return at


def build_opener(*, allow_private_addresses: bool = False, max_bytes: int = DEFAULT_MAX_BYTES,
                 deadline: float = DEFAULT_DEADLINE_S) -> urllib.request.OpenerDirector:  # fmt: skip
    """An opener for http and https only, with the address check, the body limit and the deadline above."""
    if max_bytes < 1 or deadline <= 0:
        raise ValueError(f"max_bytes must be >= 1 and deadline > 0, got {max_bytes}, {deadline}")
    Connection, SecureConnection = _connection_classes(allow_private_addresses, max_bytes, deadline)

    class GuardedHTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(functools.partial(Connection, deadline_at=_request_deadline(req, deadline)), req)

    class GuardedHTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(functools.partial(SecureConnection, deadline_at=_request_deadline(req, deadline)), req, context=self._context)

    class Redirects(urllib.request.HTTPRedirectHandler):
        max_redirections = MAX_REDIRECTS

        def redirect_request(self, req, fp, code, msg, headers, newurl):
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None:  # one deadline for the request and all its redirects
                new._fyp_deadline_at = getattr(req, "_fyp_deadline_at", None)
            return new

    class OnlyHttpHandler(urllib.request.BaseHandler):
        def unknown_open(self, req):
            raise urllib.error.URLError(f"only http and https URLs are fetched, not {req.type}:")

    opener = urllib.request.OpenerDirector()
    for handler in (GuardedHTTPHandler(), GuardedHTTPSHandler(), Redirects(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(),
                    OnlyHttpHandler()):  # fmt: skip
        opener.add_handler(handler)
    return opener
