"""Download a file into a cache, verified by sha256: temp file, checksum, atomic rename.

Where no checksum is published, the first download is trusted (trust on first use): its sha256 is
recorded in ``<file>.sha256`` beside it and every later use is verified against that record, so a
file that changes in the cache (or a mirror that changes what it serves) is caught.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from edge_runtime import __version__
from edge_runtime.errors import EdgeRuntimeError, first_line

log = logging.getLogger(__name__)
CHUNK = 1 << 16


class DownloadError(EdgeRuntimeError):
    """A download failed: HTTP error, no network, or content that does not match its checksum."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def record_path(path: Path) -> Path:
    """Where the trust-on-first-use checksum of ``path`` is kept."""
    return path.with_name(path.name + ".sha256")


def verify_cached(path: Path, sha256: str | None) -> None:
    """Check a cached file against the published checksum, or else against the one recorded when
    it was first downloaded."""
    record = record_path(path)
    want = sha256 or (record.read_text().split()[0] if record.exists() else None)
    if want is None:
        raise DownloadError(f"{path}: cached without a checksum record ({record.name}); delete it to download again")
    got = sha256_of(path)
    if got != want:
        source = "the published checksum" if sha256 else f"the sha256 recorded at first download ({record})"
        raise DownloadError(f"{path}: sha256 {got[:16]}... does not match {source} {want[:16]}... "
                            f"(file changed or corrupt; delete it to download again)")


def download(url: str, dest: Path, sha256: str | None, progress: bool = True, timeout: float = 30.0) -> Path:
    """Fetch ``url`` to ``dest`` unless a verified copy is already there; returns ``dest``."""
    if dest.exists():
        verify_cached(dest, sha256)
        log.debug("%s: cached, checksum verified", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": f"edge-runtime/{__version__}"})
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress,
                      leave=False) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        got = digest.hexdigest()
        if sha256 is not None and got != sha256:
            raise DownloadError(f"{url}: sha256 {got[:16]}... does not match the published {sha256[:16]}... "
                                f"(truncated, corrupt or replaced download; nothing was kept)")
        os.replace(tmp, dest)  # atomic: a cache never holds a half-written file under the real name
        if sha256 is None:
            record_path(dest).write_text(f"{got}  {dest.name}\n")
            log.warning("%s: no published sha256; trusting this first download (sha256 %s), recorded in %s "
                        "and verified on every later use", dest.name, got, record_path(dest))
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = first_line(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
        raise DownloadError(f"{url}: cannot connect ({reason}; no network, or the host is down)") from None
    except TimeoutError:
        raise DownloadError(f"{url}: timed out after {timeout:.0f} s (slow or no network)") from None
    except OSError as exc:  # connection dropped mid-transfer, disk full
        raise DownloadError(f"{url}: download failed ({first_line(exc)})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest
