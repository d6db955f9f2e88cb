"""``run``: a package on an image, folder, video, camera or stream."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..backends import ALL_PRECISIONS, BACKENDS
from ..errors import UsageError
from ..urls import redact_url
from .common import (
    add_command,
    add_json_option,
    add_max_drop_option,
    add_output_file,
    add_output_folder,
    add_package_argument,
    add_threads_option,
    json_target,
    max_drop_budget,
    write_json,
)

log = logging.getLogger("edge_runtime")


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    """The package and how to run it (run's flags; --precision is one value)."""
    add_package_argument(p)
    p.add_argument("--backend", default="auto", choices=["auto", *BACKENDS],
                   help="artifact format to run, or auto (the fastest this host can run within --max-drop, "
                        "measured once and cached in the package) [auto]")
    add_max_drop_option(p)
    p.add_argument("--precision", default=None, choices=ALL_PRECISIONS, help="artifact precision to run [any]")
    add_threads_option(p)
    p.add_argument("--device", default=None,
                   help="OpenVINO device (CPU, GPU, NPU, AUTO) or ONNX Runtime execution provider; falls back to "
                        "CPU with a warning when unavailable [CPU]")
    p.add_argument("--delegate", default=None, metavar="LIB",
                   help="TFLite external delegate library (e.g. libedgetpu.so.1); CPU fallback with a warning")
    p.add_argument("--target", default=None,
                   help="target profile (name from 'edge-runtime targets', or a .toml path): sets threads and "
                        "the backend/precision order unless given explicitly")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "run", cmd_run, help="detect on an image, folder, video, camera index or RTSP/HTTP URL",
        description="Run a package on a source; print a per-stage timing table at the end. Ctrl-C or SIGTERM "
                    "ends the run normally (frames in flight finished, results written, exit status 0).",
        examples=["edge-runtime run pkg/ --source street.jpg --save out/ --json out/dets.jsonl",
                  "edge-runtime run pkg/ --source 0 --serve 8080 --json - | jq .detections   # headless camera",
                  "edge-runtime run pkg/ --source walk.mp4 --track --count-line door=0,300,640,300 --json t.jsonl"])
    add_runtime_options(p)
    p.add_argument("--source", required=True, help="image, folder, video file, camera index (0) or rtsp/http URL")
    add_output_folder(p, "--save", help="write annotated images (or an annotated video for video/camera sources) "
                                        "here (made when missing)")
    add_json_option(p, "the detections, one line per frame as each frame is done,")
    p.add_argument("--show", choices=["auto", "yes", "no"], default="auto",
                   help="display window: auto = for video/camera when a display exists [auto]")
    p.add_argument("--conf", type=float, default=None, help="score threshold [manifest's]")
    p.add_argument("--iou", type=float, default=None, help="NMS IoU threshold [manifest's]")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    add_output_file(p, "--summary-json", help="write the timing summary as JSON at the end (also after Ctrl-C / "
                                              "SIGTERM; '-': stdout)", stdout=True)
    p.add_argument("--reconnect-tries", type=int, default=None, metavar="N",
                   help="camera/stream: reopen a lost source at most N times in a row, then exit with an error "
                        "(status 2) [no limit]")
    p.add_argument("--reconnect-backoff", default=None, metavar="FIRST[:MAX]",
                   help="seconds before the first reopen, doubled each time up to MAX [0.5:30]")
    p.add_argument("--max-fps", type=float, default=None, metavar="N",
                   help="read at most N frames a second (live sources drop the frames in between) [no limit]")
    p.add_argument("--pipeline", choices=["threaded", "sequential"], default="threaded",
                   help="threaded: read/preprocess, inference and drawing overlap; sequential: one after the "
                        "other [threaded]")
    p.add_argument("--serve", default=None, metavar="[HOST:]PORT",
                   help="live web view of the annotated stream and statistics; PORT alone binds 127.0.0.1, "
                        "other interfaces must be named (0.0.0.0:8080)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="with --serve: also accept requests for this host name (IP addresses and localhost always "
                        "work; other names are refused against DNS rebinding); repeatable")
    p.add_argument("--token", default=os.environ.get("EDGE_RUNTIME_SERVE_TOKEN"),
                   help="with --serve: require ?token=TOKEN or 'Authorization: Bearer TOKEN' on every request "
                        "[$EDGE_RUNTIME_SERVE_TOKEN]")
    add_tracking_options(p)


def add_tracking_options(p: argparse.ArgumentParser) -> None:
    from ..tracking import TrackerSettings

    defaults = TrackerSettings()
    g = p.add_argument_group("tracking and counting")
    g.add_argument("--track", action="store_true",
                   help="follow objects across frames (ByteTrack-style, per class): each box gets an id, kept "
                        "while the object is seen, drawn and written to --json as track_id; only tracked boxes "
                        "are shown")
    g.add_argument("--track-low", type=float, default=None, metavar="SCORE",
                   help="with --track: detections from this score up to --conf only continue existing tracks "
                        f"(carrying them through occlusions) [{defaults.low_score:g}]")
    g.add_argument("--track-buffer", type=float, default=None, metavar="SECONDS",
                   help=f"with --track: how long a track that is no longer seen keeps its id [{defaults.max_lost_s:g}]")
    g.add_argument("--count-line", action="append", default=[], metavar="[NAME=]X1,Y1,X2,Y2",
                   help="count tracks whose box centre crosses this segment (pixels of the source frame), per class; "
                        "'in' is crossing from its left to its right looking from the first point to the second "
                        "(0,300,640,300: downwards); implies --track; repeatable")
    g.add_argument("--zone", default=None, metavar="FILE",
                   help="JSON file of zones (polygons) and lines: occupancy and dwell time per zone and class, "
                        'e.g. {"zones": [{"name": "door", "polygon": [[100,80],[300,80],[300,400]]}], '
                        '"lines": [{"name": "entry", "points": [[0,300],[640,300]]}]}; implies --track')


def tracking_from_args(args: argparse.Namespace) -> Any:
    """The ``Tracking`` stage the tracking flags ask for, or None without them."""
    from ..tracking import TrackerSettings, Tracking, load_regions, parse_line
    from ..tracking.regions import reused_name

    wanted = args.track or args.count_line or args.zone
    if not wanted:
        for flag, value in (("--track-low", args.track_low), ("--track-buffer", args.track_buffer)):
            if value is not None:
                raise UsageError(f"{flag} applies to tracking: add --track (or --count-line / --zone)")
        return None
    try:
        lines = [parse_line(spec, i) for i, spec in enumerate(args.count_line, 1)]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    zones = []
    if args.zone:
        file_lines, zones = load_regions(args.zone)
        lines += file_lines
    if dup := reused_name([*lines, *zones]):
        raise UsageError(f"--count-line / --zone: the name {dup!r} is used twice")
    defaults = TrackerSettings()
    low = defaults.low_score if args.track_low is None else args.track_low
    if not 0 <= low <= 1:
        raise UsageError(f"--track-low {low:g}: must be between 0 and 1")
    buffer_s = defaults.max_lost_s if args.track_buffer is None else args.track_buffer
    if not 0 <= buffer_s <= 3600:
        raise UsageError(f"--track-buffer {buffer_s:g}: must be 0 to 3600 seconds")
    return Tracking(TrackerSettings(low_score=low, max_lost_s=buffer_s), lines=lines, zones=zones)


def warn_float_ops(detector: Any) -> None:
    """A delegate that runs only integer ops (Edge TPU, NXP VX) hands every float op back to the CPU."""
    from ..deploy.targets import full_integer_check

    if not detector.backend.options.get("delegate"):
        return
    check = full_integer_check(detector.manifest, detector.artifact)
    if check is not None and not check[0]:
        log.warning("%s", check[1])


def reconnect_backoff(spec: str | None) -> tuple[float, float]:
    """``--reconnect-backoff FIRST[:MAX]`` -> (first, max) seconds."""
    from ..io.sources import RECONNECT_BACKOFF

    if spec is None:
        return RECONNECT_BACKOFF
    first, _, most = spec.partition(":")
    try:
        values = (float(first), float(most) if most else max(float(first), RECONNECT_BACKOFF[1]))
    except ValueError:
        values = (-1.0, -1.0)
    if not 0 < values[0] <= values[1] <= 86400:  # at most a day: Event.wait overflows on inf
        raise UsageError(f"--reconnect-backoff {spec}: expected FIRST[:MAX] seconds, 0 < FIRST <= MAX "
                         "<= 86400 (e.g. 0.5:30)")
    return values


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[str]]:
    """Ctrl-C (SIGINT) and a service manager's stop (SIGTERM) end a run normally: ``stop`` is set, the
    pipeline finishes the frames in flight and the results are written; a second signal interrupts at
    once. Yields the names of the signals received. The handler only sets a flag: printing there could
    re-enter a stderr write the main thread was in the middle of."""
    import signal

    received: list[str] = []

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        received.append(signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield received
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _report_run(summary: Any, summary_json: str | None) -> None:
    print(summary.table())
    for kind, path in summary.outputs.items():
        print(f"{kind}: {path}")
    if summary_json:
        write_json(summary_json, summary.to_dict(), announce=False)


def cmd_run(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from ..detector import Detector
    from ..errors import SourceLostError
    from ..io.pipeline import display_available, run_pipeline
    from ..io.sources import open_source

    if args.max_fps is not None and args.max_fps <= 0:
        raise UsageError(f"--max-fps {args.max_fps:g}: must be above 0")
    if args.reconnect_tries is not None and args.reconnect_tries < 0:
        raise UsageError(f"--reconnect-tries {args.reconnect_tries}: must be 0 or more")
    backoff = reconnect_backoff(args.reconnect_backoff)
    budget = max_drop_budget(args)
    tracking = tracking_from_args(args)  # a bad regions file fails before the model and camera are opened
    stop = threading.Event()
    with ExitStack() as cleanup:
        signals = cleanup.enter_context(stop_on_signals(stop))
        server = None
        if args.serve:  # bind first: a busy port fails before the model and camera are opened
            from ..io.serve import FrameServer, parse_address

            server = cleanup.enter_context(FrameServer(parse_address(args.serve), tuple(args.allow_host), args.token))
            print(f"live view: {server.url}", file=sys.stderr, flush=True)  # the token is not printed
        # --device / --delegate override the --target profile's delegate, execution provider or device
        flags = {k: v for k, v in (("device", args.device), ("delegate", args.delegate)) if v}
        detector = Detector(args.package, target=args.target, backend=args.backend, precision=args.precision,
                            threads=args.threads, options=flags, score_threshold=args.conf, nms_iou=args.iou,
                            max_drop=budget)
        if detector.auto_choice is not None:
            print(detector.auto_choice.explain(), file=sys.stderr)
        warn_float_ops(detector)
        source = open_source(args.source, reconnect_tries=args.reconnect_tries, reconnect_backoff=backoff)
        show = args.show == "yes" or (args.show == "auto" and source.stream and display_available())
        if args.show == "yes" and not display_available():
            log.warning("no display available (headless OpenCV or no $DISPLAY): running without a window")
            show = False
        print(f"{detector.describe()}\nsource: {redact_url(args.source)}{' (window)' if show else ''}", file=sys.stderr)
        try:
            summary = run_pipeline(detector, source, save_dir=args.save,
                                   json_path=json_target(args.json) if args.json else None, show=show,
                                   max_frames=args.max_frames, mode=args.pipeline, max_fps=args.max_fps,
                                   on_result=server.publish if server else None, stop=stop, track=tracking)
        except SourceLostError as exc:  # the run so far is reported and written, then the one-line error
            if exc.summary is not None:
                _report_run(exc.summary, args.summary_json)
            raise
    if signals:
        summary.stopped = f"{signals[0]} received"
        print(f"{signals[0]}: stopped reading, finished the frames in flight", file=sys.stderr)
    _report_run(summary, args.summary_json)
    return 0
