"""VideoIndex (video_id -> file, one walk) and download_video (real yt-dlp against 127.0.0.1)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from conftest import REPO, Route
from pose_data.hdvila.video_download import VideoDownloadError, download_video
from pose_data.hdvila.video_lookup import VideoIndex, video_ids_of_name

BIKES = REPO / "pose_data" / "sample_data" / "hdvila" / "bikes.mp4"


def _touch(path: Path, size: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    return path


def test_names_and_the_ids_they_stand_for():
    assert video_ids_of_name("QMi8x8o55Ns.mp4") == [("QMi8x8o55Ns", True)]
    assert video_ids_of_name("-a_b-c.MKV") == [("-a_b-c", True)]
    assert video_ids_of_name("My clip [QMi8x8o55Ns].webm") == [("My clip [QMi8x8o55Ns]", True), ("QMi8x8o55Ns", False)]
    assert video_ids_of_name("[abc].mp4") == [("[abc]", True), ("abc", False)]
    for not_video in ("QMi8x8o55Ns.mp4.part", "QMi8x8o55Ns.json", "QMi8x8o55Ns", ".mp4", "x.ytdl"):
        assert video_ids_of_name(not_video) == []


def test_walk_finds_nested_videos_of_any_container(tmp_path):
    root = tmp_path / "videos"
    files = {
        "QMi8x8o55Ns": _touch(root / "QMi8x8o55Ns.mp4"),
        "a-b_c": _touch(root / "part_1" / "deep" / "a-b_c.webm"),
        "MKV1": _touch(root / "part_2" / "MKV1.MKV"),
        "avi_1": _touch(root / "avi_1.avi"),
        "yt1": _touch(root / "part_2" / "A title, with [brackets] [yt1].mov"),
    }
    _touch(root / "partial.mp4.part")
    _touch(root / "notes.txt")
    _touch(root / ".hidden" / "secret.mp4")
    _touch(root / ".dot.mp4")
    index = VideoIndex(root)
    for video_id, path in files.items():
        assert index.lookup(video_id) == path
    assert index.lookup("partial") is None and index.lookup("secret") is None and index.lookup(".dot") is None
    assert index.lookup("nope") is None and "nope" not in index and "a-b_c" in index
    # every file's exact stem, plus the bracketed id of the yt-dlp-style name
    assert len(index) == 6
    assert index.ambiguous_ids() == []


def test_several_files_for_one_id_are_chosen_deterministically(tmp_path):
    root = tmp_path / "v"
    big_webm = _touch(root / "x" / "dup.webm", 500)
    small_mp4 = _touch(root / "y" / "dup.mp4", 10)
    bigger_mp4 = _touch(root / "z" / "dup.mp4", 20)
    titled_mp4 = _touch(root / "Title [dup].mp4", 1000)
    index = VideoIndex(root)
    assert index.lookup("dup") == bigger_mp4  # exact name, then mp4, then larger
    assert index.alternatives("dup") == [small_mp4, big_webm, titled_mp4]
    assert index.ambiguous_ids() == ["dup"]
    # equal size: path order decides
    root2 = tmp_path / "w"
    a, b = _touch(root2 / "a" / "same.mp4", 5), _touch(root2 / "b" / "same.mp4", 5)
    assert VideoIndex(root2).lookup("same") == a and VideoIndex(root2).alternatives("same") == [b]


def test_symlink_loops_and_bad_roots(tmp_path):
    root = tmp_path / "v"
    clip = _touch(root / "sub" / "v1.mp4")
    os.symlink(root, root / "sub" / "loop")  # a folder that contains itself
    os.symlink(clip, root / "linked.mp4")
    index = VideoIndex(root)
    assert index.lookup("v1") == clip and index.lookup("linked") == root / "linked.mp4"
    assert index.alternatives("v1") == []
    with pytest.raises(FileNotFoundError, match="--videos folder not found"):
        VideoIndex(tmp_path / "missing")
    with pytest.raises(NotADirectoryError, match="must be a folder"):
        VideoIndex(clip)


def test_one_walk_over_many_files(tmp_path):
    root = tmp_path / "many"
    ids = [f"id{i:05d}-_x" for i in range(3000)]
    for i, video_id in enumerate(ids):
        folder = root / f"p{i % 7}" / f"q{i % 11}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{video_id}.mp4").touch()
    index = VideoIndex(root)
    assert len(index) == 3000
    assert all(index.lookup(v) is not None and index.lookup(v).name == f"{v}.mp4" for v in ids)


def test_add_file_registers_a_new_download_and_rechooses(tmp_path):
    index = VideoIndex(_touch(tmp_path / "v" / "old.webm").parent)
    assert index.lookup("new") is None
    new = _touch(tmp_path / "dl" / "new.mp4")
    assert index.add_file(new) == ["new"]
    assert index.lookup("new") == new
    better = _touch(tmp_path / "dl2" / "old.mp4")
    index.add_file(better)
    assert index.lookup("old") == better and index.alternatives("old") == [tmp_path / "v" / "old.webm"]
    assert index.add_file(tmp_path / "readme.txt") == []


# ------------------------------------------------------------------------------------------ download


def test_download_video_from_a_direct_url_and_reuse(local_site, tmp_path):
    data = BIKES.read_bytes()
    url = local_site.add("hdvila/bikes.mp4", Route(data, "video/mp4"))
    path = download_video(url, "QMi8x8o55Ns", tmp_path / "dl", timeout=5, allow_private_addresses=True)
    assert path == tmp_path / "dl" / "QMi8x8o55Ns.mp4"
    assert path.read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["QMi8x8o55Ns.mp4"]  # no .part left
    # found by the index like any user file
    assert VideoIndex(tmp_path / "dl").lookup("QMi8x8o55Ns") == path
    # one request to resolve the URL, one to fetch it; a second call resolves again but reuses the file
    assert local_site.hits["hdvila/bikes.mp4"] == 2
    assert download_video(url, "QMi8x8o55Ns", tmp_path / "dl", timeout=5, allow_private_addresses=True) == path
    assert local_site.hits["hdvila/bikes.mp4"] == 3
    assert path.read_bytes() == data


def test_download_failures_name_the_reason(local_site, tmp_path):
    with pytest.raises(VideoDownloadError) as err:
        download_video(local_site.url("hdvila/missing.mp4"), "gone", tmp_path, timeout=5, retries=0, allow_private_addresses=True)
    assert "HTTP Error 404: Not Found" in err.value.reason
    page = local_site.add("hdvila/page.html", Route(b"<html><body>no video here</body></html>", "text/html"))
    with pytest.raises(VideoDownloadError, match="Unsupported URL"):
        download_video(page, "page", tmp_path, timeout=5, retries=0, allow_private_addresses=True)
    with pytest.raises(VideoDownloadError, match="cannot be a file name"):
        download_video(local_site.url("hdvila/bikes.mp4"), "../escape", tmp_path)
    with pytest.raises(VideoDownloadError, match="no url"):
        download_video(None, "abc", tmp_path)
    with pytest.raises(ValueError, match="timeout must be > 0"):
        download_video("http://127.0.0.1/x.mp4", "abc", tmp_path, timeout=0)
    assert list(tmp_path.iterdir()) == []


def test_download_guards(local_site, tmp_path):
    """Loopback and non-http URLs refused before yt-dlp sees them; live streams, long and large videos refused from
    the extracted metadata; a body larger than the limit is not kept."""
    from pose_data.hdvila.video_download import _check_media

    url = local_site.add("hdvila/guarded.mp4", Route(BIKES.read_bytes(), "video/mp4"))
    for bad, reason in ((url, "blocked address (loopback)"), (url.replace("127.0.0.1", "localhost"), "blocked address (loopback)"),
                        ("file:///etc/hostname", "only http and https"), ("ftp://127.0.0.1/x.mp4", "only http and https")):  # fmt: skip
        with pytest.raises(VideoDownloadError, match=re.escape(reason)):
            download_video(bad, "guarded", tmp_path / "dl", timeout=5, retries=0)
    assert local_site.hits.get("hdvila/guarded.mp4", 0) == 0
    public = {"url": "http://93.184.216.34/v.mp4"}  # checked, never fetched
    for info, reason in (({**public, "is_live": True}, "live stream"), ({**public, "live_status": "is_upcoming"}, "live stream"),
                         ({**public, "duration": 9000}, "max_video_duration 7200"), ({**public, "filesize": 3 * 2**30}, "max_video_bytes"),
                         ({"requested_formats": [{"url": "http://10.0.0.1/v.mp4"}]}, "blocked address (private)")):  # fmt: skip
        with pytest.raises(VideoDownloadError, match=re.escape(reason)):
            _check_media(info, False, 2 * 2**30, 7200.0)
    _check_media({**public, "duration": 60, "filesize": 10_000_000}, False, 2 * 2**30, 7200.0)  # fine
    with pytest.raises(VideoDownloadError, match="larger than max_video_bytes"):
        download_video(url, "big", tmp_path / "dl", timeout=5, retries=0, allow_private_addresses=True, max_bytes=100_000)
    assert not list((tmp_path / "dl").glob("big*"))


def test_yt_dlp_connections_are_checked_and_sizes_counted(tmp_path, monkeypatch):
    """A "public" page (127.0.0.2, declared public for this test only) redirecting to an internal service on
    127.0.0.1: yt-dlp's own connections are checked, so the internal service never sees a request. A video served
    without Content-Length is cut at max_bytes by counting what arrives."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from pose_data.http import safe_http

    hits = []

    class Internal(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"SECRET")

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    internal = ThreadingHTTPServer(("127.0.0.1", 0), Internal)
    target = f"http://127.0.0.1:{internal.server_address[1]}/latest/meta-data/iam"

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    class NoLength(BaseHTTPRequestHandler):  # HTTP/1.0: the body ends when the connection closes
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.end_headers()
            self.wfile.write(BIKES.read_bytes())

        def log_message(self, *args):
            pass

    public = ThreadingHTTPServer(("127.0.0.2", 0), Redirect)
    plain = ThreadingHTTPServer(("127.0.0.2", 0), NoLength)
    for server in (internal, public, plain):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    real = safe_http.address_block_reason
    monkeypatch.setattr(safe_http, "address_block_reason", lambda a: None if a == "127.0.0.2" else real(a))
    try:
        with pytest.raises(VideoDownloadError, match=re.escape("blocked address (loopback)")):
            download_video(f"http://127.0.0.2:{public.server_address[1]}/v.mp4", "redirected", tmp_path / "dl", timeout=3, retries=0)
        assert hits == []
        with pytest.raises(VideoDownloadError, match="larger than max_video_bytes 100,000"):
            download_video(f"http://127.0.0.2:{plain.server_address[1]}/v.mp4", "unsized", tmp_path / "dl", timeout=3, retries=0, max_bytes=100_000)
        assert not list((tmp_path / "dl").glob("unsized*"))
        with pytest.raises(VideoDownloadError, match="malformed URL"):
            download_video("http://example.com:99999/v.mp4", "badport", tmp_path / "dl")
    finally:
        for server in (internal, public, plain):
            server.shutdown()
