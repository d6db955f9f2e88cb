"""File writes that neither follow symbolic links nor leave half-written files.

A package may come from someone else: a ``manifest.json`` or ``autoselect.json`` that is a link to
``~/.bashrc`` must not make a routine save overwrite that file. Every write goes to a temporary file
in the target's own folder and is moved over the target with ``os.replace`` (atomic on POSIX; a
crash leaves the old file or the new one, never a mix), after refusing a target that is a link.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UnsafePathError


def refuse_link(path: str | Path) -> None:
    """One-line error when ``path`` is a symbolic link (dangling ones included)."""
    if Path(path).is_symlink():
        raise UnsafePathError(f"{path}: is a symbolic link; refusing to write through it")


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` (same suffix) for a writer that takes a file name
    (onnx.save, quantize_static); moved over ``path`` when the block succeeds, removed when it fails."""
    path = Path(path)
    refuse_link(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}"
    # O_EXCL: never reuse (or follow) an existing name; 0o666 so the umask decides, as for a plain open()
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        replace_file(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_file(src: str | Path, dst: str | Path) -> None:
    """Move ``src`` over ``dst`` with ``os.replace``, refusing a ``dst`` that is a link."""
    refuse_link(Path(dst))
    os.replace(src, dst)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_image(path: str | Path, image: object) -> Path:
    """Encode ``image`` (BGR uint8) in the format ``path``'s suffix names and write it whole or not at all."""
    import cv2

    from .errors import EdgeRuntimeError

    path = Path(path)
    try:
        ok, encoded = cv2.imencode(path.suffix, image)
    except cv2.error:
        ok = False
    if not ok:
        raise EdgeRuntimeError(f"{path}: OpenCV cannot write images of type {path.suffix or '(no suffix)'!r}")
    return atomic_write_bytes(path, encoded.tobytes())


def require_new_folder(out: str | Path, force: bool = False, hint: str = "pick a new folder") -> Path:
    """``out`` as a Path when it is missing or an empty folder (or any folder with ``force``); else a
    usage error, raised before any work."""
    from .errors import UsageError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if out.exists() and not force and any(out.iterdir()):
        raise UsageError(f"{out}: exists and is not empty ({hint})")
    return out
