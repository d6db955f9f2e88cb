"""Deploy a bundle (see bundle.py) to a device over ssh: check, copy, install, smoke-benchmark.

Only the system ``ssh``/``scp`` clients are used (the user's keys, agent and ~/.ssh/config apply), always
with BatchMode so a missing key fails at once instead of waiting for a password nobody types. Local
commands are argument lists; every value put into a remote command line goes through ``shlex.quote``.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import EdgeRuntimeError
from .bundle import TARGET_FILE, inspect_bundle

VENV_BYTES = 300 * 2**20  # a venv with numpy, OpenCV and one backend, plus pip's cache of their wheels
CONNECT_TIMEOUT_S = 10
# exit statuses of our own remote probe and of install.sh / run.sh (see bundle.py)
_NO_PYTHON, _NO_DIR = 90, 91
_CHECKSUM, _INSTALL_MESSAGES = 3, (3, 4, 10, 11, 12)
_SAFE_PATH = re.compile(r"[A-Za-z0-9._/+@-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def deploy(bundle: Path, host: str, port: int = 22, identity: Path | None = None, remote_dir: str = "edge-runtime",
           ssh_options: Sequence[str] = (), smoke_iters: int = 10, remote_python: str = "python3",
           install_env: dict[str, str] | None = None,
           progress: Callable[[str], None] = lambda msg: None) -> dict:
    """Copy ``bundle`` to ``host`` (``user@host``), run its install.sh and ``run.sh --iters smoke_iters``.

    ``remote_dir`` is relative to the remote home unless absolute; ``ssh_options`` are ``Key=Value`` for
    ``-o``; ``install_env`` is set for install.sh (e.g. ``PIP_INDEX_URL`` of a mirror the device reaches).
    Returns host, remote_dir, bundle_dir, python, fps (artifact file -> FPS), install_s, run_s and bench (the
    device's ``edge-runtime bench`` report, None when it could not be read).
    """
    bundle = Path(bundle)
    if not bundle.is_file():
        raise EdgeRuntimeError(f"{bundle}: no such bundle file")
    info = inspect_bundle(bundle)
    top = info.top
    ssh = _Ssh(host, port, identity, ssh_options)
    rdir = _remote_path(remote_dir)
    env = _env_prefix(install_env or {})
    qdir, qtop, qpy = shlex.quote(rdir), shlex.quote(top), shlex.quote(remote_python)

    progress(f"{host}: checking python and free space in {rdir}")
    probe = ssh.run(f"command -v {qpy} >/dev/null 2>&1 || exit {_NO_PYTHON}; {qpy} --version 2>&1; "
                    f"mkdir -p -- {qdir} || exit {_NO_DIR}; df -Pk -- {qdir}", "checking the device", 60)
    minimum = ".".join(map(str, info.min_python))
    if probe.returncode == _NO_PYTHON:
        raise EdgeRuntimeError(f"{host}: {remote_python} not found on the device; install Python >= {minimum} "
                               f"(Debian/Raspberry Pi OS: sudo apt install python3 python3-venv)")
    if probe.returncode == _NO_DIR:
        raise EdgeRuntimeError(f"{host}: cannot create {rdir} ({_last_line(probe.stderr)})")
    if probe.returncode != 0:
        raise EdgeRuntimeError(f"{host}: checking the device failed: {_last_line(probe.stderr + probe.stdout)}")
    python = _python_version(host, remote_python, probe.stdout, info.min_python)
    check_free_space(host, rdir, probe.stdout, bundle.stat().st_size * 4 + VENV_BYTES)

    remote_tar = f"{rdir}/{top}.tar.gz"
    progress(f"{host}: copying {bundle.name} ({bundle.stat().st_size / 2**20:.1f} MB) to {remote_tar}")
    ssh.copy(bundle, remote_tar)
    progress(f"{host}: unpacking into {rdir}/{top}")
    untar = ssh.run(f"cd -- {qdir} && rm -rf -- {qtop} && tar -xzf {shlex.quote(top + '.tar.gz')} && "
                    f"rm -f -- {shlex.quote(top + '.tar.gz')}", "unpacking", 300)
    if untar.returncode != 0:
        raise EdgeRuntimeError(f"{host}: unpacking {remote_tar} failed: {_last_line(untar.stderr)}")

    progress(f"{host}: bash install.sh (venv + pinned runtime; minutes on a Raspberry Pi)")
    t0 = time.perf_counter()
    install = ssh.run(f"cd -- {qdir}/{qtop} && {env}PYTHON={qpy} bash install.sh", "install.sh", 3600)
    install_s = time.perf_counter() - t0
    if install.returncode != 0:
        raise EdgeRuntimeError(f"{host}: {_install_error(install)}")

    progress(f"{host}: bash run.sh --iters {smoke_iters}")
    t0 = time.perf_counter()
    run = ssh.run(f"cd -- {qdir}/{qtop} && bash run.sh --iters {int(smoke_iters)}", "run.sh", 1800)
    run_s = time.perf_counter() - t0
    if run.returncode != 0:
        line = _script_message(run.stderr, "run.sh:") or _last_line(run.stderr + run.stdout)
        raise EdgeRuntimeError(f"{host}: {line if line.startswith('run.sh:') else 'run.sh failed: ' + line}")
    report = ssh.run(f"cat -- {qdir}/{qtop}/bench.json", "reading bench.json", 60)
    bench = _bench_report(report.stdout) if report.returncode == 0 else None
    fps = _fps(bench)
    if not fps:
        fps = {m[1]: float(m[2]) for m in re.finditer(r"^FPS (.+?) \(.*\): ([0-9.]+)$", run.stdout, re.MULTILINE)}
    if not fps:
        raise EdgeRuntimeError(f"{host}: run.sh finished but reported no FPS: {_last_line(run.stdout)}")
    for name, value in fps.items():
        progress(f"{host}: {name}: {value:.1f} FPS")
    return {"host": host, "remote_dir": rdir, "bundle_dir": f"{rdir}/{top}", "python": python, "fps": fps,
            "install_s": round(install_s, 2), "run_s": round(run_s, 2), "bench": bench}


def bench_remote(deployed: dict, package: Path, port: int = 22, identity: Path | None = None,
                 ssh_options: Sequence[str] = (), iters: int = 10,
                 progress: Callable[[str], None] = lambda msg: None) -> dict:
    """``edge-runtime bench`` of another ``package`` on a device that ``deploy`` installed (``deployed`` is its
    result): the package is copied next to that bundle and benchmarked with its venv and its target profile
    (threads, delegate / execution provider), so a series of packages for one target costs one install.
    Returns the device's bench report."""
    package = Path(package)
    name = package.name
    if not _SAFE_PATH.fullmatch(name) or name.startswith("-"):
        raise EdgeRuntimeError(f"{package}: use letters, digits and . _ - + @ in the package folder's name")
    ssh = _Ssh(deployed["host"], port, identity, ssh_options)
    rdir = f"{deployed['bundle_dir']}/more-packages"
    qdir, qname = shlex.quote(rdir), shlex.quote(name)
    with tempfile.TemporaryDirectory(prefix="edge-runtime-remote-") as tmp:
        archive = Path(tmp) / f"{name}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(package, arcname=name)
        made = ssh.run(f"mkdir -p -- {qdir}", "making the package folder", 60)
        if made.returncode != 0:
            raise EdgeRuntimeError(f"{deployed['host']}: cannot create {rdir} ({_last_line(made.stderr)})")
        progress(f"{deployed['host']}: copying {name} ({archive.stat().st_size / 2**20:.1f} MB)")
        ssh.copy(archive, f"{rdir}/{name}.tar.gz")
    script = (f"cd -- {qdir} && rm -rf -- {qname} && tar -xzf {qname}.tar.gz && rm -f -- {qname}.tar.gz && "
              f"../venv/bin/edge-runtime bench {qname} --target ../{TARGET_FILE} --iters {int(iters)} "
              f"--json {qname}/bench.json >/dev/null && "
              f"cat -- {qname}/bench.json")
    progress(f"{deployed['host']}: edge-runtime bench {name}")
    run = ssh.run(script, "edge-runtime bench", 1800)
    bench = _bench_report(run.stdout) if run.returncode == 0 else None
    if bench is None:
        raise EdgeRuntimeError(f"{deployed['host']}: bench of {name} failed: {_last_line(run.stderr + run.stdout)}")
    return bench


class _Ssh:
    """ssh/scp argument lists for one host, and the mapping of their failures to one-line errors."""

    def __init__(self, host: str, port: int, identity: Path | None, options: Sequence[str]) -> None:
        if not host or host.startswith("-") or any(c.isspace() for c in host):
            raise EdgeRuntimeError(f"host {host!r}: expected user@host")
        self.host, self.port = host, int(port)
        common = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"]
        if identity is not None:
            if not Path(identity).is_file():
                raise EdgeRuntimeError(f"{identity}: no such identity (private key) file")
            common += ["-i", str(identity)]
        for opt in options:
            opt = opt[2:].strip() if opt.startswith("-o") else opt.strip()
            if "=" not in opt and " " not in opt:
                raise EdgeRuntimeError(f"ssh option {opt!r}: expected Key=Value (as for ssh -o)")
            common += ["-o", opt]
        self.ssh = ["ssh", *common, "-p", str(self.port)]
        self.scp = ["scp", "-q", *common, "-P", str(self.port)]

    def run(self, command: str, step: str, timeout: float) -> subprocess.CompletedProcess:
        """Run ``command`` (already quoted) remotely; connection and login failures raise."""
        proc = self._call([*self.ssh, "--", self.host, command], step, timeout)
        if proc.returncode == 255:
            raise ssh_error(self.host, self.port, proc.stderr, step)
        return proc

    def copy(self, local: Path, remote: str) -> None:
        proc = self._call([*self.scp, "--", str(local), f"{self.host}:{remote}"], "copying the bundle", 3600)
        if proc.returncode != 0:
            raise ssh_error(self.host, self.port, proc.stderr, "copying the bundle")

    def _call(self, args: list[str], step: str, timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except FileNotFoundError:
            raise EdgeRuntimeError(f"{args[0]}: not installed on this machine (Debian/Ubuntu: "
                                   f"sudo apt install openssh-client)") from None
        except subprocess.TimeoutExpired:
            raise EdgeRuntimeError(f"{self.host}: {step} timed out after {timeout:.0f} s") from None


def ssh_error(host: str, port: int, stderr: str, step: str = "ssh") -> EdgeRuntimeError:
    """One-line error for a failed ssh/scp from its stderr (ssh exits 255 for its own failures)."""
    text = stderr.strip()
    low = text.lower()
    name = host.rsplit("@", 1)[-1]
    if "could not resolve hostname" in low or "name or service not known" in low \
            or "temporary failure in name resolution" in low or "nodename nor servname" in low:
        return EdgeRuntimeError(f"{host}: cannot resolve host name {name!r} (check the name, or use the "
                                f"device's IP address)")
    if "connection refused" in low:
        return EdgeRuntimeError(f"{host}: connection refused on port {port} (is the SSH server running on "
                                f"the device, and is the port right?)")
    if "no route to host" in low or "network is unreachable" in low or "host is unreachable" in low:
        return EdgeRuntimeError(f"{host}: unreachable ({_last_line(text)}); is the device on and on this network?")
    if "timed out" in low:
        return EdgeRuntimeError(f"{host}: connection to port {port} timed out after {CONNECT_TIMEOUT_S} s "
                                f"(device off, wrong address or a firewall)")
    if "permission denied (" in low:  # "(publickey,password)"; a remote file's "Permission denied" is not login
        return EdgeRuntimeError(f"{host}: authentication failed (Permission denied); pass the right --identity "
                                f"key or install yours with: ssh-copy-id -p {port} {host}")
    if "host key verification failed" in low or "remote host identification has changed" in low:
        return EdgeRuntimeError(f"{host}: host key verification failed (unknown or changed host key; "
                                f"check ~/.ssh/known_hosts)")
    return EdgeRuntimeError(f"{host}: {step} failed: {_last_line(text) or 'ssh exited with status 255'}")


def check_free_space(host: str, rdir: str, df_output: str, need: int) -> int:
    """Free bytes from ``df -Pk`` output (its last line); an error when below ``need``."""
    rows = [line.split() for line in df_output.strip().splitlines() if line.strip()]
    try:
        free = int(rows[-1][3]) * 1024
    except (IndexError, ValueError):
        raise EdgeRuntimeError(f"{host}: cannot read the free space of {rdir} from df: "
                               f"{_last_line(df_output)!r}") from None
    if free < need:
        raise EdgeRuntimeError(f"{host}: too little disk space in {rdir}: {free / 2**20:.0f} MB free, "
                               f"{need / 2**20:.0f} MB needed (bundle, unpacked copy and venv)")
    return free


def _python_version(host: str, remote_python: str, stdout: str, minimum: tuple[int, int]) -> str:
    found = re.search(r"Python (\d+)\.(\d+)\S*", stdout)
    if not found:
        raise EdgeRuntimeError(f"{host}: {remote_python} --version printed no version: {_last_line(stdout)!r}")
    if (int(found[1]), int(found[2])) < minimum:
        raise EdgeRuntimeError(f"{host}: {found[0]} is too old, edge-runtime needs Python >= "
                               f"{'.'.join(map(str, minimum))} "
                               f"(or pass another interpreter as remote_python)")
    return found[0]


def _install_error(proc: subprocess.CompletedProcess) -> str:
    """install.sh's own message, or for a pip failure the last line of pip's error."""
    if proc.returncode in _INSTALL_MESSAGES:
        return _script_message(proc.stderr, "install.sh:") or f"install.sh failed: {_last_line(proc.stderr)}"
    errors = [line.strip() for line in (proc.stderr + "\n" + proc.stdout).splitlines()
              if line.strip().startswith("ERROR:")]
    return f"install.sh failed: {errors[-1] if errors else _last_line(proc.stderr + proc.stdout)}"


def _script_message(stderr: str, prefix: str) -> str | None:
    lines = [line.strip() for line in stderr.splitlines() if line.strip().startswith(prefix)]
    return lines[-1] if lines else None


def _bench_report(bench_json: str) -> dict | None:
    """run.sh's bench.json (``edge-runtime bench --json``), None when it does not parse."""
    try:
        report = json.loads(bench_json)
    except ValueError:
        return None
    return report if isinstance(report, dict) and isinstance(report.get("results"), list) else None


def _fps(bench: dict | None) -> dict[str, float]:
    try:
        return {row["artifact"]: float(row["fps"]) for row in bench["results"]}
    except (KeyError, TypeError, ValueError):
        return {}


def _remote_path(remote_dir: str) -> str:
    """``~/x`` -> ``x`` (ssh and scp start in the home folder); only plain path characters, because
    scp's remote path is not shell-quoted the same way by every scp version."""
    path = remote_dir.strip()
    path = "." if path in ("~", "~/") else path.removeprefix("~/")
    path = path.rstrip("/") or "/"
    if not _SAFE_PATH.fullmatch(path) or path.startswith("-"):
        raise EdgeRuntimeError(f"remote dir {remote_dir!r}: use letters, digits and . _ - + @ / only")
    return path


def _env_prefix(env: dict[str, str]) -> str:
    for name in env:
        if not _ENV_NAME.fullmatch(name):
            raise EdgeRuntimeError(f"install environment: {name!r} is not a variable name")
    return "".join(f"{name}={shlex.quote(value)} " for name, value in env.items())


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
