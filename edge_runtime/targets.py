"""Target profiles: small TOML files (``targets/*.toml``) describing a device: threads and the
backend/precision order to prefer. A user adds a device by dropping a file, no code."""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import EdgeRuntimeError
from .hostinfo import physical_cores


def search_dirs() -> list[Path]:
    """Repo checkout's targets/, the installed copy, then the user's own folder."""
    return [Path(__file__).resolve().parents[1] / "targets",
            Path(sys.prefix) / "share" / "edge-runtime" / "targets",
            Path.home() / ".config" / "edge-runtime" / "targets"]


@dataclass(frozen=True)
class Target:
    name: str
    arch: str
    description: str
    threads: int
    backends: tuple[str, ...]
    precisions: tuple[str, ...]


def available_targets() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in search_dirs():
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else ():
            found.setdefault(path.stem, path)
    return found


def load_target(name_or_path: str) -> Target:
    path = Path(name_or_path)
    if not path.is_file():
        known = available_targets()
        if name_or_path not in known:
            raise EdgeRuntimeError(f"target {name_or_path!r}: no such profile (known: {', '.join(known) or 'none'})")
        path = known[name_or_path]
    try:
        data = tomllib.loads(path.read_text())
        threads = data.get("threads", "physical")
        return Target(name=data["name"], arch=data["arch"], description=data.get("description", ""),
                      threads=physical_cores() if threads == "physical" else int(threads),
                      backends=tuple(data["backends"]), precisions=tuple(data["precisions"]))
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise EdgeRuntimeError(f"{path}: not a valid target profile ({type(exc).__name__}: {exc})") from None
