"""Count objects crossing a line, and print each crossing as it happens, in a screenful of code on the public API.

    python demos/count_crossings.py pkg/ video.mp4 0,300,640,300      # any source `edge-runtime run` accepts
    python demos/count_crossings.py pkg/ 0 0,240,640,240 --classes person

The line runs from its first point to its second (pixels of the source frame); "in" is crossing it from
its left to its right, looking along it (0,300 -> 640,300: downwards). The same as
`edge-runtime run pkg/ --source video.mp4 --track --count-line 0,300,640,300`, as a Python loop.
"""

import argparse

from edge_runtime import Detector, EdgeRuntimeError, Tracking, iter_pipeline, open_source
from edge_runtime.tracking import parse_line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("package")
    p.add_argument("source")
    p.add_argument("line", help="X1,Y1,X2,Y2")
    p.add_argument("--classes", default=None, help="only these class names, comma-separated")
    args = p.parse_args()
    try:
        line = parse_line(args.line)
    except ValueError as exc:
        p.error(str(exc).replace("--count-line ", "line "))
    wanted = set(args.classes.split(",")) if args.classes else None
    detector = Detector(args.package)
    tracking = Tracking(lines=[line])
    with iter_pipeline(detector, open_source(args.source), progress=False, track=tracking) as run:
        for frame, dets in run:
            for event in tracking.events:  # this frame's crossings (the loop gets each frame once it is tracked)
                if wanted is None or event["label"] in wanted:
                    print(f"{frame.name}: {event['label']} #{event['track_id']} {event['direction']}")
    print(run.summary.table())


if __name__ == "__main__":
    try:
        main()
    except EdgeRuntimeError as exc:
        raise SystemExit(f"error: {exc}") from None
    except KeyboardInterrupt:
        pass
