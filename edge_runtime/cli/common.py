"""What every command shares: the help formatter, the output flags (``--json FILE``, ``-o/--out``) and
the guard that checks every output's folder before any work, the host-tool import, progress lines."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any, TextIO

from ..errors import EdgeRuntimeError, UsageError

Command = Callable[[argparse.Namespace], int]
STDOUT = "-"  # an output file argument meaning standard output

# where '--json -' writes: the real stdout, while the human-readable output goes to stderr
_json_stream: TextIO | None = None


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions wrapped per paragraph, example epilogs kept as written; ``{MODELS}`` in an
    argument's help becomes the model registry's names, read only when help is shown (the registry
    is host code: torch)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return "\n".join(super(HelpFormatter, self)._fill_text(part, width, indent) for part in text.split("\n"))

    def _expand_help(self, action: argparse.Action) -> str:
        text = super()._expand_help(action)
        return text.replace("{MODELS}", model_names()) if "{MODELS}" in text else text


def model_names() -> str:
    """Every model ``export --model`` builds, from ``converters.models.MODELS``."""
    try:
        from converters.models import MODELS
    except ImportError as exc:
        return f"(the list needs the host tool chain: {exc.name} is missing)"
    return ", ".join(MODELS)


def add_command(sub: argparse._SubParsersAction, name: str, func: Command, help: str | None, description: str,
                examples: list[str]) -> argparse.ArgumentParser:
    """A subcommand with a one-line ``help`` (None: a hidden command), its ``description`` and an
    examples epilog, dispatched to ``func``; outputs registered with :func:`add_output_file` /
    :func:`add_output_folder` are checked before ``func`` runs."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    # no help= at all keeps a command out of the list (help=SUPPRESS prints '==SUPPRESS==' on 3.11)
    listed = {} if help is None else {"help": help}
    parser = sub.add_parser(name, description=description, epilog=epilog, formatter_class=HelpFormatter, **listed)
    parser.set_defaults(func=func, output_files=(), output_folders=(), stdout_outputs=(), output_suffixes={})
    return parser


def _record(parser: argparse.ArgumentParser, kind: str, dest: str) -> None:
    parser.set_defaults(**{kind: (*parser.get_default(kind), dest)})


def add_output_file(parser: argparse.ArgumentParser, *flags: str, help: str, stdout: bool = False,
                    suffixes: tuple[str, ...] = (), **kwargs: Any) -> argparse.Action:
    """An argument naming a file the command writes; its folder must exist and be writable. ``stdout``:
    '-' means standard output; ``suffixes``: the file types the writer can make."""
    action = parser.add_argument(*flags, help=help, **{"default": None, "metavar": "FILE", **kwargs})
    _record(parser, "output_files", action.dest)
    if stdout:
        _record(parser, "stdout_outputs", action.dest)
    if suffixes:
        parser.set_defaults(output_suffixes={**parser.get_default("output_suffixes"), action.dest: suffixes})
    return action


def add_output_folder(parser: argparse.ArgumentParser, *flags: str, help: str, **kwargs: Any) -> argparse.Action:
    """An argument naming a folder the command writes into (made, with its parents, when missing)."""
    action = parser.add_argument(*flags, help=help, **{"default": None, "metavar": "DIR", **kwargs})
    _record(parser, "output_folders", action.dest)
    return action


def add_json_option(parser: argparse.ArgumentParser, what: str) -> argparse.Action:
    """``--json FILE``: ``what`` as JSON; '-' writes it on stdout and the rest of the output to stderr."""
    return add_output_file(parser, "--json", help=f"write {what} as JSON to FILE ('-': stdout, the other output then "
                                                  "goes to stderr)", stdout=True)


def add_out_option(parser: argparse.ArgumentParser, what: str, folder: bool = False, **kwargs: Any) -> argparse.Action:
    """``-o/--out``: what the command writes (a file, or a folder with ``folder``)."""
    add = add_output_folder if folder else add_output_file
    return add(parser, "-o", "--out", help=what, **kwargs)


def add_package_argument(parser: argparse.ArgumentParser, help: str = "package folder (manifest.json and the "
                                                                       "model artifacts)") -> None:
    parser.add_argument("package", help=help)


def add_threads_option(parser: argparse.ArgumentParser, default: int | None = None, help: str | None = None) -> None:
    parser.add_argument("--threads", type=int, default=default,
                        help=help or "inference threads [physical cores]")


def add_device_options(parser: argparse.ArgumentParser, host_help: str, remote_dir: str, required: bool) -> None:
    """``--host`` and how to reach and install on it (deploy, select): one meaning in both commands."""
    parser.add_argument("--host", required=required, default=None, help=host_help)
    parser.add_argument("--port", type=int, default=22, help="ssh port [22]")
    parser.add_argument("--identity", default=None, help="ssh private key [ssh's default]")
    parser.add_argument("--remote-dir", default=remote_dir, help=f"folder on the device [~/{remote_dir}]")
    parser.add_argument("--ssh-option", dest="ssh_options", action="append", default=[], metavar="KEY=VALUE",
                        help="extra ssh option (ssh -o), repeatable (e.g. --ssh-option "
                             "StrictHostKeyChecking=accept-new)")
    parser.add_argument("--remote-python", default="python3", help="Python on the device [python3]")
    parser.add_argument("--pip-index-url", default=None, help="package index for the device's pip (a local mirror)")


def add_max_drop_option(parser: argparse.ArgumentParser) -> None:
    """``--max-drop BUDGET``: the accuracy budget of ``--backend auto`` (``edge_runtime.budget``)."""
    parser.add_argument("--max-drop", default=None, metavar="BUDGET",
                        help="accuracy budget of --backend auto: it picks the fastest artifact whose drop against "
                             "FP32, as convert recorded it, is within BUDGET: cos:D (1 - mean per-image output "
                             "cosine on held-out images, e.g. cos:0.01), map:P (COCO mAP points, e.g. map:0.5; an "
                             "artifact without a recorded mAP drop is judged by cos when BUDGET also names it, "
                             "else not chosen), map:P,cos:D, or off. An FP32 with no record (the exported ONNX) "
                             "counts as no drop [the INT8 budget convert recorded in the package, else cos:0.01]")


def max_drop_budget(args: argparse.Namespace) -> Any:
    """``--max-drop`` read before any work (a bad value: one usage line, exit status 2); None when not given."""
    from ..budget import parse_budget

    return None if args.max_drop is None else parse_budget(args.max_drop)


def add_precisions_option(p: argparse.ArgumentParser, default: str | None, help: str) -> None:
    """``--precisions a,b``: a list (the singular ``--precision`` elsewhere is one value; it stays
    accepted here, hidden)."""
    p.add_argument("--precisions", default=default, metavar="LIST", help=help)
    p.add_argument("--precision", dest="precisions", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def check_output_file(value: str, pending: tuple[Path, ...] = ()) -> None:
    """A usage error unless ``value`` can be written: its folder exists (or is one of the ``pending``
    folders the command makes first), is a folder and is writable, and ``value`` is not a folder."""
    path = Path(value)
    folder = path.parent
    if path.is_dir():
        raise UsageError(f"{value}: is a folder (expected a file name)")
    absolute = folder.absolute()
    if any(absolute == p or p in absolute.parents for p in pending):
        return
    if not folder.exists():
        raise UsageError(f"{value}: folder does not exist")
    if not folder.is_dir():
        raise UsageError(f"{value}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{value}: folder is not writable")


def check_output_folder(value: str) -> None:
    """A usage error unless the folder ``value`` exists and is writable, or can be made (its nearest
    existing parent is a writable folder)."""
    path = Path(value)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{value}: exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"{value}: folder is not writable")
        return
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir():
        raise UsageError(f"{value}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{value}: folder {parent} is not writable")


def guard_outputs(args: argparse.Namespace) -> None:
    """Every output of the command checked before it starts: a typo in a folder name fails in a
    second with one line, not after the whole run."""
    folders = [value for value in (getattr(args, dest) for dest in args.output_folders) if value]
    for folder in folders:
        check_output_folder(folder)
    pending = tuple(Path(folder).absolute() for folder in folders)
    for dest in args.output_files:
        value = getattr(args, dest)
        flag = "--" + dest.replace("_", "-")
        if value == STDOUT and dest not in args.stdout_outputs:
            raise UsageError(f"{flag} -: only --json and --summary-json write to stdout; name a file")
        if value and value != STDOUT:
            check_output_file(value, pending)
            suffixes = args.output_suffixes.get(dest, ())
            if suffixes and Path(value).suffix.lower() not in suffixes:
                raise UsageError(f"{value}: {flag} writes {' or '.join(suffixes)} files")


@contextmanager
def json_on_stdout(args: argparse.Namespace) -> Iterator[None]:
    """With an output file '-' (``--json -``), stdout carries that JSON only: everything else the
    command prints goes to stderr while it runs."""
    global _json_stream
    if not any(getattr(args, dest) == STDOUT for dest in args.output_files):
        yield
        return
    _json_stream = sys.stdout
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        _json_stream = None


def json_target(value: str) -> str | TextIO:
    """An output file argument as a writer takes it: the path, or stdout for '-'."""
    return (_json_stream or sys.stdout) if value == STDOUT else value


def write_json(value: str, data: Any, announce: bool = True, **dumps: Any) -> None:
    """``data`` as JSON to the file ``value`` (written atomically, then named on stdout when
    ``announce``) or, for '-', to stdout."""
    if value == STDOUT:
        stream = json_target(value)
        stream.write(json.dumps(data, **{"indent": 2, **dumps}) + "\n")
        stream.flush()
        return
    from ..io.pipeline import write_json_atomic

    write_json_atomic(value, data, **dumps)
    if announce:
        print(f"json: {value}")


def split_list(text: str | None) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c']."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def progress(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr)


@contextmanager
def host_tools(command: str) -> Iterator[None]:
    """Imports of the host tool chain (converters: torch, onnx, ...) become one line on a device install."""
    try:
        yield
    except ImportError as exc:
        raise EdgeRuntimeError(f"{command} needs the host tool chain ({exc.name} is missing): "
                               f"pip install 'edge-runtime[convert]'") from None
