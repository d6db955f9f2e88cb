"""Installed versions of distributions (for manifests, bundles and the backends' descriptions)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version(dist: str) -> str | None:
    """Installed version of a distribution, or None when it is not installed."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return None
