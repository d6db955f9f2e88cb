"""One exception family. Every message names the file (or source) and the problem on one line;
the CLI prints it as ``error: <message>`` and exits with the class's ``exit_status``: 1 for a runtime
failure, 2 for a usage error (and for a live source given up on, the status services restart on)."""


class EdgeRuntimeError(Exception):
    """Base class for user-facing errors."""

    exit_status = 1


class UsageError(EdgeRuntimeError):
    """Arguments that cannot work together or name an impossible output (caught before any work)."""

    exit_status = 2


class ManifestError(EdgeRuntimeError):
    """A package's manifest.json is missing, malformed or inconsistent."""


class ModelLoadError(EdgeRuntimeError):
    """An artifact is missing, corrupt, truncated or does not match the manifest."""


class SourceError(EdgeRuntimeError):
    """An input (image, folder, video, camera, stream) cannot be read."""


class SourceLostError(SourceError):
    """A live source (camera, stream) stopped delivering and did not come back within its reconnect
    tries. ``summary`` holds what the run measured until then (set by ``run_pipeline``). Exit status 2,
    as docs/service.md documents for ``Restart=on-failure`` units."""

    exit_status = 2
    summary: object = None


class CheckpointError(EdgeRuntimeError):
    """A training checkpoint cannot be loaded into the requested model."""


class BackendUnavailableError(EdgeRuntimeError):
    """The backend an artifact needs is not installed on this machine."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """A library exception's first line (or its type), to quote inside our one-line messages."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


class UnsafePathError(EdgeRuntimeError, OSError):
    """A write would go through a symbolic link (or a path escapes its package). Also an OSError, so
    callers that tolerate an unwritable file (the autoselect cache) treat it as one."""
