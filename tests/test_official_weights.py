"""Official-weights registry and downloader against a loopback HTTP mirror serving the real fixture
files (never the internet): checksum, cache hit, mismatch, 404, no network, trust on first use."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import logging
import shutil
import socket
import threading
from pathlib import Path

import pytest
from test_cli import assert_one_line_error, run_cli

from converters.download import DownloadError
from converters.official import (
    CACHE_ENV,
    MIRROR_ENV,
    OFFICIAL,
    cached_path,
    fetch,
    resolve,
)

YFV2 = "weights/yolo-fastestv2/coco2017-0.241078ap-model.pth"
NANODET = "weights/nanodet-plus-m/nanodet-plus-m_coco.ckpt"


class Mirror:
    """A folder served over HTTP on 127.0.0.1 (ephemeral port) that counts the requests it gets."""

    def __init__(self, root: Path) -> None:
        self.root, self.requests = root, []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                mirror.requests.append(self.path)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, src: Path, name: str | None = None) -> Path:
        return Path(shutil.copyfile(src, self.root / (name or src.name)))


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    (tmp_path / "mirror").mkdir()
    server = Mirror(tmp_path / "mirror")
    monkeypatch.setenv(MIRROR_ENV, server.url)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_published_checksums_are_those_of_the_official_files(fixtures):
    """The fixtures hold byte-identical copies of these official files: the table must match them."""
    checked = 0
    for weights in OFFICIAL.values():
        for file in weights.files:
            if file.sha256 is None:
                continue
            folder = "yolo-fastestv2" if weights.name == "yolo-fastestv2" else "yolo-fastest-1.1"
            assert sha256(fixtures("weights", folder, file.filename)) == file.sha256, file.filename
            checked += 1
    assert checked == 5


def test_download_verifies_and_the_cache_answers_the_second_time(mirror, fixtures):
    official = fixtures(YFV2)
    mirror.add(official)
    (path,) = fetch(OFFICIAL["yolo-fastestv2"], progress=False)
    assert path == cached_path(OFFICIAL["yolo-fastestv2"], OFFICIAL["yolo-fastestv2"].files[0])
    assert sha256(path) == sha256(official)
    assert mirror.requests == ["/coco2017-0.241078ap-model.pth"]
    assert fetch(OFFICIAL["yolo-fastestv2"], progress=False) == [path]
    assert len(mirror.requests) == 1  # cache hit: no second request
    assert not list(path.parent.glob("*.part")) and not path.with_name(path.name + ".sha256").exists()


def test_checksum_mismatch_keeps_nothing(mirror, fixtures):
    served = mirror.add(fixtures(YFV2))
    served.write_bytes(served.read_bytes()[:100_000])  # a truncated download
    with pytest.raises(DownloadError, match="coco2017-0.241078ap-model.pth: sha256 .* does not match the published"):
        fetch(OFFICIAL["yolo-fastestv2"], progress=False)
    cache = cached_path(OFFICIAL["yolo-fastestv2"], OFFICIAL["yolo-fastestv2"].files[0]).parent
    assert list(cache.iterdir()) == []  # neither the file nor a temp file stays behind


def test_http_404_and_no_network_are_one_line_errors(mirror, monkeypatch):
    with pytest.raises(DownloadError, match=r"coco2017-0.241078ap-model.pth: HTTP 404"):
        fetch(OFFICIAL["yolo-fastestv2"], progress=False)
    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{closed}")
    with pytest.raises(DownloadError, match="cannot connect .*no network"):
        fetch(OFFICIAL["yolo-fastestv2"], progress=False)


def test_unpublished_checksum_is_trusted_on_first_use_then_enforced(mirror, fixtures, caplog):
    entry = OFFICIAL["nanodet-plus-m-416"]
    assert entry.files[0].sha256 is None  # the official release's bytes are not known here
    mirror.add(fixtures(NANODET), "nanodet-plus-m_416_checkpoint.ckpt")
    with caplog.at_level(logging.WARNING):
        (path,) = fetch(entry, progress=False)
    assert "trusting this first download" in caplog.text
    record = path.with_name(path.name + ".sha256")
    assert record.read_text().split() == [sha256(fixtures(NANODET)), path.name]
    assert fetch(entry, progress=False) == [path] and len(mirror.requests) == 1
    with open(path, "ab") as f:  # the cached file changes afterwards
        f.write(b"\0")
    with pytest.raises(DownloadError, match="does not match the sha256 recorded at first download"):
        fetch(entry, progress=False)


def test_resolve_picks_the_checkpoint_for_the_model_and_size():
    assert resolve("official", "nanodet-plus-m", None).name == "nanodet-plus-m-416"
    assert resolve("official", "nanodet-plus-m", 320).name == "nanodet-plus-m-320"
    assert resolve("official", "nanodet-plus-m-1.5x", 320).name == "nanodet-plus-m-1.5x-320"
    assert resolve("official", "yolo-fastestv2", None).name == "yolo-fastestv2"
    assert resolve("official:nanodet-plus-m-320", "nanodet-plus-m", 416).name == "nanodet-plus-m-320"
    with pytest.raises(ValueError, match="unknown official weights"):
        resolve("official:resnet", "nanodet-plus-m")
    with pytest.raises(ValueError, match="not --model yolo-fastestv2"):
        resolve("official:yolo-fastest-1.1", "yolo-fastestv2")
    with pytest.raises(ValueError, match="no official checkpoint is registered for --model nanodet-m"):
        resolve("official", "nanodet-m")


def test_cli_export_official_and_fetch(mirror, fixtures, tmp_path):
    pytest.importorskip("torch")
    mirror.add(fixtures(YFV2))
    env = {MIRROR_ENV: mirror.url, CACHE_ENV: str(tmp_path / "cache")}
    proc = run_cli("export", "--model", "yolo-fastestv2", "--weights", "official", "--out", str(tmp_path / "pkg"),
                   env=env)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert manifest["produced_by"]["source_weights"] == "coco2017-0.241078ap-model.pth"
    assert manifest["produced_by"]["source_sha256"] == OFFICIAL["yolo-fastestv2"].files[0].sha256
    listing = run_cli("fetch", "--list", env=env)
    assert listing.returncode == 0
    assert [line.split()[-1] for line in listing.stdout.splitlines() if line.startswith("yolo-fastestv2 ")] == ["yes"]
    fetched = run_cli("fetch", "yolo-fastestv2", env=env)
    assert fetched.returncode == 0 and fetched.stdout.strip().endswith("coco2017-0.241078ap-model.pth")
    assert len(mirror.requests) == 1  # export downloaded it once; fetch found it in the cache
    assert_one_line_error(run_cli("fetch", "yolo-fastest-1.1", env=env), "HTTP 404")
    assert_one_line_error(run_cli("export", "--model", "yolo-fastestv2", "--weights", "official:nanodet-plus-m-416",
                                  "--out", str(tmp_path / "x"), env=env), "not --model yolo-fastestv2", status=2)
