"""A self-contained deploy bundle: one .tar.gz a device can install and benchmark with bash and python3.

Layout, under one top folder ``<model>-<target>/``::

    package/                  the package, only the artifacts the target runs
    wheels/                   the edge-runtime wheel built from this source tree
    requirements-<target>.txt numpy, OpenCV, the backend libraries and lap for --track (pinned to this host's
                              versions) and the distribution that brings the target's accelerator (onnxruntime-qnn)
    target.toml               the target profile, so the device runs with its delegate / execution provider
    install.sh                venv + pinned requirements + the wheel (--no-deps)
    run.sh                    checks SHA256SUMS, then ``edge-runtime bench package/ --target target.toml``
    SHA256SUMS                sha256 of every other file
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..backends import BACKENDS, AcceleratorPackage
from ..errors import EdgeRuntimeError, UnsafePathError, first_line
from ..fsutil import atomic_output
from ..hostfit import target_mismatch
from ..manifest import MANIFEST_NAME, Artifact, Manifest, load_manifest, sha256_file
from ..versions import package_version
from .targets import Target, load_target, target_file

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_REQUIREMENTS = ("numpy", "opencv-python-headless")
#: optional device libraries a bundle pins when the host has them: (distribution, what needs it)
OPTIONAL_REQUIREMENTS = (("lap", "run --track"),)
# ``pip wheel`` builds in the source folder; these never belong in a wheel and stale build/ output would leak in
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                                     ".pytest_cache", "shared")
_DEFAULT_MIN_PYTHON = (3, 9)
TARGET_FILE = "target.toml"  # the profile, in the bundle: run.sh benchmarks with its accelerator


def make_bundle(package: Path, target: str, out: Path, wheel_dir: Path | None = None,
                progress: Callable[[str], None] = lambda msg: None) -> Path:
    """Write the bundle for running ``package`` on ``target`` (a profile name or .toml) to ``out``."""
    package, out = Path(package), Path(out)
    profile, profile_file = load_target(target), target_file(target)
    manifest = load_manifest(package)
    kept = artifacts_for_target(manifest, profile)
    top = safe_name(f"{manifest.name}-{profile.name}")
    with tempfile.TemporaryDirectory(prefix="edge-bundle-") as tmp:
        stage = Path(tmp) / top
        progress(f"package: {', '.join(a.file for a in kept)} for target {profile.name}")
        copy_package(manifest, kept, stage / "package")
        shutil.copyfile(profile_file, stage / TARGET_FILE)
        wheel = _stage_wheel(stage / "wheels", wheel_dir, Path(tmp) / "build", progress)
        requirements = f"requirements-{profile.name}.txt"
        formats = [a.format for a in kept]
        notes = missing_wheel_notes(profile, formats)
        for note in notes:
            log.warning("%s", note)
        (stage / requirements).write_text(requirements_text(formats, profile)
                                          + "".join(f"# NOTE: {note}\n" for note in notes))
        min_python = wheel_min_python(wheel)
        _write_script(stage / "install.sh", install_script(profile.name, requirements, min_python, notes))
        _write_script(stage / "run.sh", run_script(profile.name))
        write_sha256sums(stage)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(out) as tmp_out, tarfile.open(tmp_out, "w:gz") as tar:
            tar.add(stage, arcname=top, filter=_normalise)
    progress(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB)")
    return out


def artifacts_for_target(manifest: Manifest, target: Target) -> list[Artifact]:
    """The package's verified artifacts whose format and precision the target runs; an error when there
    is none. One that failed its check against FP32 never ships, nor one whose record does not hold on the
    target's CPUs (``hostfit.target_mismatch``: 8-bit INT8 measured with VNNI, for the x86 profile)."""
    wanted = [a for a in manifest.artifacts
              if a.format in target.backends and a.precision in target.precisions and a.format in BACKENDS]
    unfit = {a.key: why for a in wanted if a.verified and (why := target_mismatch(a, target))}
    kept = [a for a in wanted if a.verified and a.key not in unfit]
    for art in wanted:
        if not art.verified:
            log.warning("%s: not bundling %s: failed its check against FP32 (%s)", manifest.path, art.file,
                        art.verdict.describe())
        elif art.key in unfit:
            log.warning("%s: not bundling %s: %s; reconvert it with --target %s (7-bit weights)", manifest.path,
                        art.file, unfit[art.key], target.name)
    if not kept:
        have = ", ".join(f"{a.key}{'' if a.verified else ' (failed its check)'}"
                         f"{' (its record does not hold on the target CPU)' if a.key in unfit else ''}"
                         for a in manifest.artifacts)
        raise EdgeRuntimeError(f"{manifest.path}: no artifact that target {target.name} runs (package has: {have}; "
                               f"target wants backends {', '.join(target.backends)} and precisions "
                               f"{', '.join(target.precisions)})")
    return kept


def copy_package(manifest: Manifest, kept: list[Artifact], dst: Path) -> None:
    """Copy the package without the dropped artifacts' files; the manifest lists only the kept ones (a
    bundle's package, the package ``select`` writes, one copied to a device beside an installed bundle).

    The JSON is filtered rather than re-serialised so every field the converters wrote survives as is."""
    keep_files = {p.resolve() for a in kept for p in manifest.artifact_files(a)}
    dropped = {p.resolve() for a in manifest.artifacts for p in manifest.artifact_files(a)} - keep_files
    for art in kept:
        manifest.artifact_path(art, verify=True)  # a corrupt source package must not be shipped
    entries = sorted(manifest.root.rglob("*"))
    # a link would ship whatever it points at (a key, a home folder) inside the bundle: refuse, before copying
    if link := next((p for p in [manifest.path, *entries] if p.is_symlink()), None):
        raise UnsafePathError(f"{link}: symbolic link inside the package; refusing to bundle it (replace it "
                              f"with the file itself or remove it)")
    for src in entries:
        if src.is_dir() or src.resolve() in dropped or src == manifest.path:
            continue
        rel = src.relative_to(manifest.root)
        # caches, and hidden leftovers of an interrupted write or conversion (an unverified model in a
        # .convert-* staging folder, a .manifest.json.*.tmp) are never shipped
        if "__pycache__" in rel.parts or any(part.startswith(".") for part in rel.parts):
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    data = json.loads(manifest.path.read_text())
    keys = {(a.file, a.format, a.precision) for a in kept}
    data["artifacts"] = [a for a in data["artifacts"] if (a["file"], a["format"], a["precision"]) in keys]
    (dst / MANIFEST_NAME).write_text(json.dumps(data, indent=2) + "\n")
    bundled = load_manifest(dst)
    for art in bundled.artifacts:  # the device verifies these checksums on load
        bundled.artifact_path(art, verify=True)


def _stage_wheel(dst: Path, wheel_dir: Path | None, build: Path, progress: Callable[[str], None]) -> Path:
    """Copy the edge-runtime wheel from ``wheel_dir``, or build it from this source tree."""
    dst.mkdir(parents=True)
    if wheel_dir is not None:
        found = sorted(Path(wheel_dir).glob("edge_runtime-*.whl"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise EdgeRuntimeError(f"{wheel_dir}: no edge_runtime-*.whl wheel in this folder")
        wheel = found[-1]  # the newest when several versions lie there
    else:
        progress(f"building the edge-runtime wheel from {REPO_ROOT}")
        wheel = build_wheel(build)
    shutil.copy2(wheel, dst / wheel.name)
    return dst / wheel.name


def build_wheel(build: Path) -> Path:
    """The edge-runtime wheel built from this source tree, in ``build``/wheels (``build`` is a new or empty
    folder; the build uses this interpreter's setuptools, no index)."""
    # a clean copy: an in-tree build reuses build/lib, where files deleted from the source live on
    src = build / "src"
    shutil.copytree(REPO_ROOT, src, ignore=_NOT_SOURCE)
    wheels = build / "wheels"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-q", "-w", str(wheels), str(src)],
                          capture_output=True, text=True, check=False)
    found = sorted(wheels.glob("edge_runtime-*.whl"))
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no wheel written").splitlines()[-1]
        raise EdgeRuntimeError(f"{REPO_ROOT}: building the edge-runtime wheel failed: {last}")
    return found[0]


def requirements_text(formats: list[str], target: Target | None = None) -> str:
    """numpy, OpenCV, lap (tracking; only when the host has it) and each format's backend library, ``==`` this
    host's installed version, then the distribution that brings ``target``'s accelerator to a backend
    (onnxruntime-qnn for QNNExecutionProvider): pinned too when it is installed here, else named alone (the
    host cannot say which version works)."""
    unpinned = []
    names = list(BASE_REQUIREMENTS)
    for name, purpose in OPTIONAL_REQUIREMENTS:
        if package_version(name):
            names.append(name)
        else:
            unpinned.append(f"# {name} ({purpose}) is not installed on the host: not included\n")
    for fmt in dict.fromkeys(formats):
        libs = BACKENDS[fmt].libraries
        dist = next((d for _, d in libs if package_version(d)), None)
        if dist is None:
            raise EdgeRuntimeError(f"requirements: cannot pin the {fmt} backend, none of "
                                   f"{', '.join(d for _, d in libs)} is installed on this host "
                                   f"(pip install 'edge-runtime[{BACKENDS[fmt].extra}]')")
        names.append(dist)
    lines = []
    for name in names:
        version = package_version(name)
        if version is None:
            raise EdgeRuntimeError(f"requirements: cannot pin {name}, it is not installed on this host")
        lines.append(f"{name}=={version}")
    for package in _accelerator_packages(target, formats):
        version = package_version(package.dist)
        lines.append(f"{package.dist}=={version}" if version else package.dist)
        if version is None:
            unpinned.append(f"# {package.dist} (the target's accelerator) is not installed on the host: not pinned\n")
    return "# device-side runtime, pinned to the versions edge-runtime was tested with on the host\n" + \
        "".join(unpinned) + "\n".join(lines) + "\n"


def missing_wheel_notes(target: Target, formats: list[str]) -> list[str]:
    """One line per accelerator distribution the package index has no wheel of for the target's Linux
    platform (what the bundle's install.sh runs on), saying what to do instead."""
    platform = f"linux-{target.arch}"
    return [f"target {target.name}: the package index has no {platform} wheel of {package.dist} (only "
            f"{', '.join(package.wheels)}); {package.elsewhere}"
            for package in _accelerator_packages(target, formats)
            if target.arch != "any" and platform not in package.wheels]


def _accelerator_packages(target: Target | None, formats: list[str]) -> list[AcceleratorPackage]:
    if target is None:
        return []
    return [package for fmt in dict.fromkeys(formats) if (package := target.accelerator_package(fmt))]


def wheel_min_python(wheel: Path) -> tuple[int, int]:
    """The lowest Python a wheel's Requires-Python (``>=X.Y``) allows, else 3.9."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            text = zf.read(meta).decode("utf-8", "replace")
    except (OSError, zipfile.BadZipFile, StopIteration) as exc:
        raise EdgeRuntimeError(f"{wheel}: not a readable wheel ({first_line(exc)})") from None
    found = re.search(r"^Requires-Python:.*>=\s*(\d+)\.(\d+)", text, re.MULTILINE)
    return (int(found[1]), int(found[2])) if found else _DEFAULT_MIN_PYTHON


# Shared by install.sh and run.sh: a corrupt copy must fail before anything is installed or run.
_VERIFY = r'''verify_checksums() {
  # $1: the calling script, for the message. sha256sum (GNU, BusyBox) or shasum (macOS, some BSDs).
  local out status=0 bad
  if command -v sha256sum >/dev/null 2>&1; then out=$(sha256sum -c SHA256SUMS 2>&1) || status=$?
  elif command -v shasum >/dev/null 2>&1; then out=$(shasum -a 256 -c SHA256SUMS 2>&1) || status=$?
  else echo "$1: neither sha256sum nor shasum is installed, cannot verify the bundle" >&2; exit 4; fi
  if [ "$status" -ne 0 ]; then
    bad=$(printf '%s\n' "$out" | sed -n 's/: FAILED.*$//p' | tr '\n' ' ' | sed 's/ $//')
    echo "$1: checksum mismatch: ${bad:-SHA256SUMS unreadable} (the bundle is corrupt or was modified; copy it again)" >&2
    exit 3
  fi
}
'''


def install_script(target: str, requirements: str, min_python: tuple[int, int], notes: Sequence[str] = ()) -> str:
    """``notes``: lines install.sh prints when pip cannot install the requirements (what to do then)."""
    major, minor = min_python
    after_pip_error = "".join(f"\n  echo {shlex.quote(f'install.sh: {note}')} >&2" for note in notes)
    return f'''#!/usr/bin/env bash
# Installs edge-runtime for target {target} into ./venv: the pinned runtime from {requirements}, then the
# bundled wheel with --no-deps. PYTHON picks the interpreter [python3]; pip reads PIP_INDEX_URL and
# PIP_FIND_LINKS from the environment (a local mirror or a folder of wheels for an offline device).
# Exit status: 3 checksum mismatch, 10 no python, 11 python too old, 12 no venv module, 13 pip failed.
set -eu
cd "$(dirname "$0")"
MIN_PYTHON="{major}.{minor}"
PYTHON="${{PYTHON:-python3}}"
{_VERIFY}
verify_checksums install.sh
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "install.sh: $PYTHON not found; install Python >= $MIN_PYTHON (Debian/Raspberry Pi OS: sudo apt install python3 python3-venv)" >&2
  exit 10
fi
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= ({major}, {minor}) else 1)' 2>/dev/null; then
  echo "install.sh: $("$PYTHON" --version 2>&1 | head -n 1) is too old, edge-runtime needs Python >= $MIN_PYTHON" >&2
  exit 11
fi
rm -rf venv
if ! "$PYTHON" -m venv venv >venv.log 2>&1; then
  echo "install.sh: '$PYTHON -m venv' failed ($(tail -n 1 venv.log)); Debian/Raspberry Pi OS: sudo apt install python3-venv" >&2
  exit 12
fi
echo "install.sh: pip index ${{PIP_INDEX_URL:-default}}${{PIP_FIND_LINKS:+, find-links $PIP_FIND_LINKS}}"
if ! venv/bin/python -m pip install --disable-pip-version-check --progress-bar off --prefer-binary -r {requirements}; then
  echo "install.sh: pip could not install {requirements} (pip's error is above)" >&2{after_pip_error}
  exit 13
fi
if ! venv/bin/python -m pip install --disable-pip-version-check --progress-bar off --no-deps wheels/*.whl; then
  echo "install.sh: pip could not install the edge-runtime wheel (pip's error is above)" >&2
  exit 13
fi
echo "install.sh: done, run: bash run.sh --iters 50"
'''


def run_script(target: str) -> str:
    return f'''#!/usr/bin/env bash
# Benchmarks the bundled package for target {target} with the venv install.sh made and the profile's
# delegate / execution provider ({TARGET_FILE}), after checking every file against SHA256SUMS. Arguments go
# to 'edge-runtime bench' (e.g. --iters 10 for a smoke run, --threads 4).
# Exit status: 3 checksum mismatch, 5 not installed, else edge-runtime's.
set -eu
cd "$(dirname "$0")"
{_VERIFY}
verify_checksums run.sh
if [ ! -x venv/bin/edge-runtime ]; then
  echo "run.sh: venv/bin/edge-runtime is missing, run 'bash install.sh' first" >&2
  exit 5
fi
rm -f bench.json
venv/bin/edge-runtime bench package/ --target {TARGET_FILE} --json bench.json "$@"
venv/bin/python - <<'EOF'
import json
for row in json.load(open("bench.json"))["results"]:
    print(f"FPS {{row['artifact']}} ({{row['format']}} {{row['precision']}}): {{row['fps']:.1f}}")
EOF
'''


def write_sha256sums(root: Path) -> Path:
    """``SHA256SUMS`` (sha256sum's format, paths relative to ``root``) of every file but itself."""
    lines = [f"{sha256_file(p)}  {p.relative_to(root).as_posix()}" for p in sorted(root.rglob("*"))
             if p.is_file() and p.name != "SHA256SUMS"]
    path = root / "SHA256SUMS"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class BundleInfo:
    top: str  # the single top folder
    min_python: tuple[int, int]  # from install.sh's MIN_PYTHON


def inspect_bundle(bundle: Path) -> BundleInfo:
    """Top folder and minimum Python of a bundle archive; an error when it is not a bundle."""
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            members = tar.getmembers()
            tops = {m.name.split("/", 1)[0] for m in members}
            install = next((m for m in members if m.name.count("/") == 1 and m.name.endswith("/install.sh")), None)
            text = tar.extractfile(install).read().decode("utf-8", "replace") if len(tops) == 1 and install else ""
    except (OSError, EOFError, tarfile.TarError, AttributeError) as exc:
        raise EdgeRuntimeError(f"{bundle}: not a readable .tar.gz bundle ({first_line(exc)})") from None
    found = re.search(r'^MIN_PYTHON="(\d+)\.(\d+)"', text, re.MULTILINE)
    if not found:
        raise EdgeRuntimeError(f"{bundle}: not a bundle made by 'edge-runtime bundle' "
                               f"(expected one top folder with install.sh)")
    return BundleInfo(top=tops.pop(), min_python=(int(found[1]), int(found[2])))


def safe_name(text: str, fallback: str = "bundle") -> str:
    """``text`` as a file or folder name: runs of anything but letters, digits and . _ - become one '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or fallback


def _write_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # no host user names or uids in the archive; the extracting user owns the files
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
