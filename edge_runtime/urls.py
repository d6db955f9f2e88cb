"""Stream URLs as shown to people: without the ``user:password@`` a camera URL often carries, nor
password-like query values."""

from __future__ import annotations

import re

# scheme://userinfo@ up to the LAST '@' of the authority (cameras and FFmpeg take an unescaped '@' in
# a password: rtsp://admin:p@ss@cam/); the authority ends at the first '/', '?' or '#'
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")
# ?user=...&password=... style credentials (some cameras' HTTP snapshot and MJPEG URLs)
_SECRET_QUERY = re.compile(r"([?&;](?:password|passwd|pass|pwd|token|auth|key|secret)=)[^&;#]*", re.IGNORECASE)


def redact_url(spec: str) -> str:
    """``rtsp://user:pw@cam/stream`` -> ``rtsp://***@cam/stream`` and ``...?password=x`` ->
    ``...?password=***`` for logs, stats and JSON; anything without credentials (a path, a camera
    index, a plain URL) comes back unchanged. The stream itself is still opened with the full URL."""
    if "://" not in spec:
        return spec
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", spec, count=1))
