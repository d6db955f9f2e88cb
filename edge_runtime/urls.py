"""Stream URLs as shown to people: without the ``user:password@`` a camera URL often carries."""

from __future__ import annotations

import re

# scheme://userinfo@ ; userinfo has no '/', '?' or '#' (RFC 3986), so a path's '@' is left alone
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]*@")


def redact_url(spec: str) -> str:
    """``rtsp://user:pw@cam/stream`` -> ``rtsp://***@cam/stream`` for logs, stats and JSON; anything
    without credentials (a path, a camera index, a plain URL) comes back unchanged. The stream itself
    is still opened with the full URL."""
    return _USERINFO.sub(r"\1***@", spec, count=1)
