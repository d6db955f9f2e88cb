"""Deploy bundles (edge_runtime.deploy.bundle) and deploy over ssh (edge_runtime.deploy.remote) against a real sshd.

The "device" is this machine: a throwaway sshd (Debian's openssh-server) on 127.0.0.1 with its own host
and user keys, logged into as the current user, with the remote folders under tmp_path. The one real
install (a venv with numpy, OpenCV and onnxruntime) happens once per session.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_runtime.deploy.bundle import inspect_bundle, make_bundle
from edge_runtime.deploy.remote import check_free_space, deploy
from edge_runtime.errors import EdgeRuntimeError

SSHD = Path("/usr/sbin/sshd")
HOST_ONLY = ("torch", "onnx=", "onnxslim", "tensorflow", "openvino", "nncf")
CLIENT_OPTIONS = ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR"]
# pip could not get the runtime wheels at all (no index, no cached copy): an environment limit, not a bug
NO_INDEX = ("No matching distribution", "Could not find a version", "connection", "Network is unreachable")


@dataclass(frozen=True)
class Sshd:
    port: int
    user: str
    key: Path  # authorised
    stranger_key: Path  # not in authorized_keys

    @property
    def host(self) -> str:
        return f"{self.user}@127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edge-runtime-test", "-f", str(path)],
                   check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> Iterator[Sshd]:
    if not SSHD.exists():
        pytest.skip(f"{SSHD} not found: the deploy tests need Debian's openssh-server (apt-get install openssh-server)")
    if shutil.which("ssh") is None or shutil.which("scp") is None:
        pytest.skip("the deploy tests need the ssh and scp clients (apt-get install openssh-client)")
    root = tmp_path_factory.mktemp("sshd")
    host_key = _keygen(root / "host_ed25519")
    key, stranger = _keygen(root / "user_ed25519"), _keygen(root / "stranger_ed25519")
    authorized = root / "authorized_keys"
    authorized.write_text(Path(f"{key}.pub").read_text())
    authorized.chmod(0o600)
    port = _free_port()
    config = root / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {host_key}", f"AuthorizedKeysFile {authorized}",
        f"PidFile {root / 'sshd.pid'}", "StrictModes no", "UsePAM no", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "PermitRootLogin prohibit-password",
        "Subsystem sftp internal-sftp",  # scp talks SFTP since OpenSSH 9
        "LogLevel ERROR", ""]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
    with open(root / "sshd.log", "w") as log:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for_port(port, proc, root / "sshd.log")
            yield Sshd(port=port, user=getpass.getuser(), key=key, stranger_key=stranger)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)


@pytest.fixture(scope="session")
def wheel_dir(tmp_path_factory, nanodet_plus_package) -> Path:
    """The edge-runtime wheel, built once (make_bundle without wheel_dir builds it)."""
    first = make_bundle(nanodet_plus_package, "x86", tmp_path_factory.mktemp("first") / "b.tar.gz")
    out = tmp_path_factory.mktemp("wheels")
    with tarfile.open(first) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".whl"))
        member.name = Path(member.name).name
        tar.extract(member, out, filter="data")
    return out


@pytest.fixture(scope="session")
def bundle(tmp_path_factory, nanodet_plus_package, wheel_dir) -> Path:
    return make_bundle(nanodet_plus_package, "x86", tmp_path_factory.mktemp("bundle") / "nanodet-x86.tar.gz",
                       wheel_dir=wheel_dir)


def _extract(bundle: Path, dst: Path) -> Path:
    with tarfile.open(bundle) as tar:
        tar.extractall(dst, filter="data")
    return dst / inspect_bundle(bundle).top


def _deploy(bundle: Path, sshd: Sshd, remote_dir: Path, **kw) -> dict:
    kw.setdefault("identity", sshd.key)
    kw.setdefault("port", sshd.port)
    return deploy(bundle, kw.pop("host", sshd.host), remote_dir=str(remote_dir), ssh_options=CLIENT_OPTIONS,
                  smoke_iters=3, **kw)


@pytest.fixture(scope="session")
def deployed(nanodet_plus_package, wheel_dir, sshd, tmp_path_factory) -> dict:
    """One full deploy through the CLI, the README's Raspberry Pi commands with this sshd's address:
    package (x86 profile) then deploy (probe, copy, unpack, install.sh in a real venv, run.sh)."""
    from test_cli import run_cli

    root = tmp_path_factory.mktemp("remote")
    bundle, result = root / "nanodet-x86.tar.gz", root / "deploy.json"
    made = run_cli("bundle", str(nanodet_plus_package), "--target", "x86", "-o", str(bundle),
                   "--wheel-dir", str(wheel_dir))
    assert made.returncode == 0, made.stderr
    options = [arg for option in CLIENT_OPTIONS for arg in ("--ssh-option", option)]
    proc = run_cli("deploy", str(bundle), "--host", sshd.host, "--port", str(sshd.port), "--identity", str(sshd.key),
                   "--remote-dir", str(root / "edge-runtime"), *options, "--smoke-iters", "3", "--json", str(result))
    if proc.returncode != 0 and "install.sh failed" in proc.stderr and any(s in proc.stderr for s in NO_INDEX):
        pytest.skip(f"no package index or cached wheels for the device venv: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert "FPS on" in proc.stdout, proc.stdout
    return json.loads(result.read_text())


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


# --- (a) the bundle -------------------------------------------------------------------------------

def test_bundle_holds_the_target_artifacts_pinned_runtime_and_checksums(bundle, tmp_path):
    top = _extract(bundle, tmp_path)
    names = {p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file()}
    wheel = [n for n in names if n.startswith("wheels/")]
    assert {"package/manifest.json", "package/model.onnx", "requirements-x86.txt", "install.sh", "run.sh",
            "SHA256SUMS"} <= names and len(wheel) == 1 and wheel[0].endswith("-py3-none-any.whl"), names
    assert os.access(top / "install.sh", os.X_OK) and os.access(top / "run.sh", os.X_OK)

    reqs = [line for line in (top / "requirements-x86.txt").read_text().splitlines() if not line.startswith("#")]
    pinned = dict(line.split("==") for line in reqs)
    assert set(pinned) == {"numpy", "opencv-python-headless", "onnxruntime", "lap"}, reqs  # lap: run --track
    assert all(v and v[0].isdigit() for v in pinned.values()), reqs
    assert not any(line.lower().startswith(h) for line in reqs for h in HOST_ONLY), reqs

    listed = {line.split("  ", 1)[1] for line in (top / "SHA256SUMS").read_text().splitlines()}
    assert listed == names - {"SHA256SUMS"}
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=top, capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr

    from edge_runtime.manifest import load_manifest

    manifest = load_manifest(top / "package")
    assert [(a.format, a.precision) for a in manifest.artifacts] == [("onnx", "fp32")]
    manifest.artifact_path(manifest.artifacts[0], verify=True)  # checksums still match the copied files
    assert 'MIN_PYTHON="3.' in (top / "install.sh").read_text()


def test_bundle_keeps_only_the_artifacts_the_target_runs(nanodet_plus_package, wheel_dir, tmp_path):
    """A package with an extra tflite-int8 artifact: x86 (onnx/fp32) leaves it out, a tflite-only target
    gets a one-line error naming what the package has and what the target wants."""
    pkg = tmp_path / "pkg"
    shutil.copytree(nanodet_plus_package, pkg)
    (pkg / "model_int8.tflite").write_bytes(b"not really a model")
    data = json.loads((pkg / "manifest.json").read_text())
    from edge_runtime.manifest import sha256_file

    data["artifacts"].append({**data["artifacts"][0], "file": "model_int8.tflite", "format": "tflite",
                              "precision": "int8", "sha256": sha256_file(pkg / "model_int8.tflite")})
    (pkg / "manifest.json").write_text(json.dumps(data))
    (pkg / ".convert-abc").mkdir()  # what an interrupted convert leaves: an unverified model, never shipped
    (pkg / ".convert-abc" / "model_fp32.tflite").write_bytes(b"unverified")
    top = _extract(make_bundle(pkg, "x86", tmp_path / "b.tar.gz", wheel_dir=wheel_dir), tmp_path / "x")
    assert not (top / "package" / "model_int8.tflite").exists()
    assert not list((top / "package").glob(".*")), list((top / "package").iterdir())
    assert [a["file"] for a in json.loads((top / "package" / "manifest.json").read_text())["artifacts"]] \
        == ["model.onnx"]

    profile = tmp_path / "tfl.toml"
    profile.write_text('name = "tfl"\narch = "aarch64"\nthreads = 4\nbackends = ["tflite"]\nprecisions = ["fp16"]\n')
    with pytest.raises(EdgeRuntimeError) as excinfo:
        make_bundle(pkg, str(profile), tmp_path / "c.tar.gz", wheel_dir=wheel_dir)
    message = _one_line_error(excinfo)
    assert "onnx-fp32, tflite-int8" in message and "tflite" in message and "fp16" in message, message


# --- (b) a full deploy ----------------------------------------------------------------------------

def test_deploy_installs_and_benchmarks_on_the_device(deployed, sshd):
    assert deployed["host"] == sshd.host
    assert deployed["fps"]["model.onnx"] > 0, deployed
    assert deployed["install_s"] > 0 and deployed["run_s"] > 0
    bench = json.loads((Path(deployed["bundle_dir"]) / "bench.json").read_text())
    assert bench["iters"] == 3 and bench["results"][0]["artifact"] == "model.onnx"
    listed = subprocess.run([str(Path(deployed["bundle_dir"]) / "venv" / "bin" / "python"), "-m", "pip", "list",
                             "--format=json"], capture_output=True, text=True, check=True).stdout
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert {"numpy", "opencv-python-headless", "onnxruntime", "edge-runtime"} <= installed
    assert not installed & {"torch", "onnx", "tensorflow", "openvino"}, installed


# --- (b2) a target whose accelerator comes in its own distribution (ONNX Runtime's QNN plugin) ----------

@pytest.fixture(scope="session")
def qnn_package(demo_package, tmp_path_factory) -> Path:
    """The demo-shapes package with a verified ONNX INT8 artifact: what the ort-qnn target runs."""
    from conftest import fixture_path

    from converters.convert import convert_package

    pkg = tmp_path_factory.mktemp("qnn") / "demo"
    shutil.copytree(demo_package, pkg)
    convert_package(pkg, ["onnx"], ["int8"], calib=fixture_path("images/calib-coco-val2017"), calib_size=16,
                    options={"onnx_quantizer": "ort"}, int8_min_cosine=0)
    return pkg


def _requirements(top: Path, target: str) -> list[str]:
    return [line for line in (top / f"requirements-{target}.txt").read_text().splitlines() if not line.startswith("#")]


def test_ort_qnn_bundle_requires_onnxruntime_qnn_and_says_in_one_line_it_has_no_aarch64_wheel(
        qnn_package, wheel_dir, tmp_path, caplog):
    """PyPI's onnxruntime-qnn (a plugin next to onnxruntime) has no Linux aarch64 wheel: the bundle still names
    it (a wheel built on the device can be given through PIP_FIND_LINKS) and says so when it is made, in the
    requirements and when install.sh's pip fails."""
    import onnxruntime

    with caplog.at_level("WARNING"):
        bundle = make_bundle(qnn_package, "ort-qnn", tmp_path / "qnn.tar.gz", wheel_dir=wheel_dir)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    note = warnings[0]
    assert note.startswith("target ort-qnn: the package index has no linux-aarch64 wheel of onnxruntime-qnn (only "
                           "linux-x86_64, windows-amd64, windows-arm64)") and "PIP_FIND_LINKS" in note, note
    top = _extract(bundle, tmp_path / "x")
    reqs = _requirements(top, "ort-qnn")
    assert reqs[-2:] == [f"onnxruntime=={onnxruntime.__version__}", "onnxruntime-qnn"], reqs
    assert f"# NOTE: {note}" in (top / "requirements-ort-qnn.txt").read_text()
    assert (top / "target.toml").read_text() == (Path(__file__).parents[1] / "targets" / "ort-qnn.toml").read_text()
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    proc = subprocess.run(["bash", "install.sh"], cwd=top, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(empty),
                               "PIP_CONFIG_FILE": os.devnull})
    assert proc.returncode == 13, proc.stdout + proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1] == f"install.sh: {note}", proc.stderr


def test_qnn_bundle_installs_the_plugin_and_benchmarks_on_the_qnn_provider(qnn_package, wheel_dir, tmp_path,
                                                                            caplog):
    """On x86-64 Linux PyPI has onnxruntime-qnn (with the HTP simulator): a profile for it gets a bundle whose
    install.sh installs the plugin and whose run.sh benchmarks on QNNExecutionProvider, not on the CPU."""
    profile = tmp_path / "qnn-x86.toml"
    profile.write_text('name = "qnn-x86"\narch = "x86_64"\nthreads = 2\nbackends = ["onnx"]\nprecisions = ["int8"]\n'
                       'execution_provider = "QNNExecutionProvider"\n'
                       'provider_options = { backend_path = "libQnnHtp.so" }\n')
    with caplog.at_level("WARNING"):
        top = _extract(make_bundle(qnn_package, str(profile), tmp_path / "b.tar.gz", wheel_dir=wheel_dir),
                       tmp_path / "x")
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert "onnxruntime-qnn" in _requirements(top, "qnn-x86")
    install = subprocess.run(["bash", "install.sh"], cwd=top, capture_output=True, text=True, timeout=900,
                             check=False)
    if install.returncode == 13 and any(s in install.stdout + install.stderr for s in NO_INDEX):
        pytest.skip(f"no package index or cached wheels for the bundle's venv: {install.stderr.strip()[-300:]}")
    assert install.returncode == 0, install.stdout + install.stderr
    run = subprocess.run(["bash", "run.sh", "--iters", "3", "--warmup", "1"], cwd=top, capture_output=True,
                         text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    [result] = json.loads((top / "bench.json").read_text())["results"]
    assert result["artifact"] == "model_int8.onnx" and "QNNExecutionProvider" in result["backend"], result
    assert result["fps"] > 0 and "FPS model_int8.onnx (onnx int8)" in run.stdout
    # host detection names the installed plugin, which ONNX Runtime lists only once it is registered
    listed = subprocess.run([str(top / "venv" / "bin" / "python"), "-c", "from edge_runtime.backends.onnxruntime "
                             "import OrtBackend; print(OrtBackend.list_devices())"], capture_output=True, text=True,
                            timeout=120, check=True).stdout
    assert "QNNExecutionProvider" in listed, listed


def test_qnn_provider_without_its_plugin_runs_on_the_cpu_naming_the_package(qnn_package, caplog):
    import importlib.util

    from edge_runtime.backends import open_artifact
    from edge_runtime.manifest import load_manifest

    if importlib.util.find_spec("onnxruntime_qnn") is not None:
        pytest.skip("onnxruntime-qnn is installed here: the provider is registered, not missing")
    manifest = load_manifest(qnn_package)
    with caplog.at_level("WARNING"):
        backend = open_artifact(manifest, manifest.artifact("onnx", "int8"), 1, {"device": "QNNExecutionProvider"})
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "QNNExecutionProvider is not available" in warning and "pip install onnxruntime-qnn" in warning, warning
    assert "CPUExecutionProvider" in backend.describe()


# --- (c) checksums --------------------------------------------------------------------------------

def _corrupt(bundle: Path, tmp_path: Path) -> Path:
    """A copy of ``bundle`` whose model.onnx has one byte flipped."""
    top = _extract(bundle, tmp_path / "corrupt")
    model = top / "package" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    out = tmp_path / "corrupt.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    return out


def test_run_sh_refuses_a_corrupted_artifact(bundle, tmp_path):
    top = _extract(_corrupt(bundle, tmp_path), tmp_path / "x")
    for script in ("run.sh", "install.sh"):
        proc = subprocess.run(["bash", script, "--iters", "1"], cwd=top, capture_output=True, text=True, timeout=60,
                              check=False)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert f"{script}: checksum mismatch: package/model.onnx" in proc.stderr, proc.stderr
    assert not (top / "venv").exists()  # refused before installing anything


def test_deploy_of_a_corrupted_bundle_fails_with_the_checksum_message(bundle, sshd, tmp_path):
    with pytest.raises(EdgeRuntimeError) as excinfo:
        _deploy(_corrupt(bundle, tmp_path), sshd, tmp_path / "remote")
    message = _one_line_error(excinfo)
    assert message.startswith(sshd.host) and "checksum mismatch: package/model.onnx" in message, message


# --- (d) one-line errors --------------------------------------------------------------------------

def test_wrong_port_is_connection_refused(bundle, sshd, tmp_path):
    with pytest.raises(EdgeRuntimeError) as excinfo:
        _deploy(bundle, sshd, tmp_path / "remote", port=_free_port())
    assert "connection refused on port" in _one_line_error(excinfo)


def test_unknown_key_is_an_authentication_failure(bundle, sshd, tmp_path):
    with pytest.raises(EdgeRuntimeError) as excinfo:
        _deploy(bundle, sshd, tmp_path / "remote", identity=sshd.stranger_key)
    message = _one_line_error(excinfo)
    assert "authentication failed (Permission denied)" in message and "ssh-copy-id" in message, message


def test_unknown_host_name(bundle, sshd, tmp_path):
    with pytest.raises(EdgeRuntimeError) as excinfo:
        _deploy(bundle, sshd, tmp_path / "remote", host=f"{sshd.user}@no-such-device.invalid")
    assert "cannot resolve host name 'no-such-device.invalid'" in _one_line_error(excinfo)


def test_missing_remote_python(bundle, sshd, tmp_path):
    with pytest.raises(EdgeRuntimeError) as excinfo:
        _deploy(bundle, sshd, tmp_path / "remote", remote_python="/nonexistent/python3")
    message = _one_line_error(excinfo)
    assert "/nonexistent/python3 not found on the device" in message, message
    assert not (tmp_path / "remote").exists() or not any((tmp_path / "remote").iterdir())  # nothing copied


def test_install_failure_reports_pips_last_error_line(bundle, sshd, tmp_path):
    """No index and an empty find-links folder on the device: pip's own last ERROR line comes back."""
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    with pytest.raises(EdgeRuntimeError) as excinfo:
        _deploy(bundle, sshd, tmp_path / "remote",
                install_env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(empty), "PIP_CONFIG_FILE": os.devnull})
    message = _one_line_error(excinfo)
    assert "install.sh failed: ERROR: No matching distribution found for numpy==" in message, message


def test_too_little_disk_space():
    df = ("Filesystem     1024-blocks    Used Available Capacity Mounted on\n"
          "/dev/mmcblk0p2    29000000 28900000    102400     100% /\n")
    assert check_free_space("pi@rpi", "edge-runtime", df, 50 * 2**20) == 102400 * 1024
    with pytest.raises(EdgeRuntimeError) as excinfo:
        check_free_space("pi@rpi", "edge-runtime", df, 400 * 2**20)
    assert _one_line_error(excinfo) == ("pi@rpi: too little disk space in edge-runtime: 100 MB free, 400 MB needed "
                                        "(bundle, unpacked copy and venv)")


def test_too_little_disk_space_on_the_device(bundle, sshd, tmp_path, monkeypatch):
    """The real probe's df output goes through the same check (a venv that cannot fit anywhere)."""
    monkeypatch.setattr("edge_runtime.deploy.remote.VENV_BYTES", 2**60)
    with pytest.raises(EdgeRuntimeError) as excinfo:
        _deploy(bundle, sshd, tmp_path / "remote")
    assert "too little disk space in" in _one_line_error(excinfo)


@pytest.mark.parametrize("stderr, expected", [
    ("ssh: connect to host 192.0.2.7 port 22: No route to host", "pi@rpi: unreachable ("),
    ("ssh: connect to host 192.0.2.7 port 22: Network is unreachable", "pi@rpi: unreachable ("),
    ("ssh: connect to host 192.0.2.7 port 22: Connection timed out", "pi@rpi: connection to port 22 timed out"),
    ("Connection timed out during banner exchange", "pi@rpi: connection to port 22 timed out"),
    ("ssh: Could not resolve hostname rpi: Temporary failure in name resolution", "cannot resolve host name 'rpi'"),
    ("Host key verification failed.", "pi@rpi: host key verification failed"),
    ('scp: dest open "edge-runtime/x.tar.gz": Permission denied', "pi@rpi: copying failed: scp: dest open"),
])
def test_ssh_failures_map_to_one_line_errors(stderr, expected):
    """Failures a loopback sshd cannot produce, from the clients' real messages."""
    from edge_runtime.deploy.remote import ssh_error

    message = str(ssh_error("pi@rpi", 22, f"Warning: Permanently added 'rpi' to the list of known hosts.\n{stderr}\n",
                            "copying"))
    assert expected in message and "\n" not in message, message
