"""The web view in a real browser: Debian's headless chromium opens the page of a live
``edge-runtime run --serve --track --count-line`` (bundled demo model, generated clip); its screenshot must
show the annotated stream and its DOM the live statistics, per class and the line's counts included.
Nothing here reads ../shared."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from test_cli import REPO
from test_serve import get_json, read_mjpeg_frame, wait_for_stats

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup.sh "
                                "installs it where apt-get and root or passwordless sudo are available)")
pytest.importorskip("torch", reason="the demo package is exported with torch (host side)")

from converters.demo_data import CLASS_NAMES, clip_frames, write_clip
from edge_runtime.io.draw import track_color

PAGE_BACKGROUND = (17, 17, 17)  # body background #111 of serve.PAGE
CLIP_SECONDS, MAX_FPS = 6, 8  # 48 frames at 8 FPS: the run outlasts the browser's few seconds


def box_colour_pixels(image: np.ndarray, ids: range) -> int:
    """Pixels within JPEG error of a colour draw.py paints tracked boxes and label tags with."""
    colours = np.array([track_color(i) for i in ids])
    return int((np.abs(image[:, :, None].astype(int) - colours).max(-1) < 30).any(-1).sum())


def streamed_image(screenshot: np.ndarray) -> np.ndarray:
    """The part of the screenshot where the <img> sits: the block of columns painted over most of
    the window's height (text lines are far shorter), then the rows painted almost all across it."""
    painted = np.abs(screenshot.astype(int) - PAGE_BACKGROUND).max(2) > 8
    cols = np.flatnonzero(painted.sum(0) > 300)
    assert cols.size, "nothing but page background in the screenshot"
    block = painted[:, cols[0]:cols[-1] + 1]
    rows = np.flatnonzero(block.mean(1) > 0.8)
    assert rows.size, "no image-like block in the screenshot"
    return screenshot[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def test_headless_chromium_shows_the_annotated_stream_and_stats(demo_package, tmp_path):
    clip = write_clip(tmp_path / "shapes.avi", seconds=CLIP_SECONDS, progress=False)
    run = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "run", str(demo_package), "--source", str(clip),
                            "--serve", "127.0.0.1:0", "--max-fps", str(MAX_FPS), "--track", "--count-line",
                            "mid=0,240,640,240"],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = run.stderr.readline()
        assert first.startswith("live view: http://127.0.0.1:"), first
        base = first.split()[-1]
        wait_for_stats(base + "stats.json")
        direct = read_mjpeg_frame(base + "stream.mjpg")
        png = tmp_path / "view.png"
        browser = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
             f"--screenshot={png}", "--dump-dom", "--window-size=1280,900", "--virtual-time-budget=3000", base],
            capture_output=True, text=True, timeout=60, check=False)
        stats = get_json(base + "stats.json")
        assert run.poll() is None, "the run ended before the browser was done: the screenshot may be stale"
        out, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 0, err
    assert browser.returncode == 0 and png.is_file(), browser.stderr[-2000:]

    shot = cv2.imread(str(png), cv2.IMREAD_COLOR)
    assert shot is not None and shot.shape == (900, 1280, 3)
    view = streamed_image(shot)
    assert view.shape == direct.shape == (480, 640, 3)  # the stream's frame, shown unscaled
    assert view.std() > 20  # a picture, not a blank or uniform box
    # the boxes and tags are what tells an annotated frame from a raw one: the raw clip has few of their
    # colours, the streamed frames hundreds of pixels and ten times the raw frame's. More track ids (a busy
    # machine drops frames, tracks restart) mean more colours, which the raw shapes match more often
    ids = range(1, stats["tracking"]["ids"] + 1)
    raw = box_colour_pixels(next(clip_frames()), ids)
    shown = box_colour_pixels(view, ids)
    assert shown > max(300, 10 * raw) and box_colour_pixels(direct, ids) > max(300, 10 * raw), (raw, shown)
    assert np.abs(view.mean((0, 1)) - direct.mean((0, 1))).max() < 15  # the same clip as the stream

    page = re.search(r'<pre id="stats">([^<]*)</pre>', browser.stdout)
    assert page, browser.stdout[-2000:]
    text = page.group(1)
    assert "demo-shapes on shapes.avi" in text and " FPS, latency " in text
    assert re.search(r"tracking: \d+ tracked now, \d+ ids\nline mid: in .* \| out ", text), text
    shown = re.findall(r"(\w+) (\d+) \(run (\d+)\)", text.split("per class: ", 1)[1].splitlines()[0])
    assert shown and {name for name, _, _ in shown} <= set(CLASS_NAMES), text
    assert all(int(total) >= int(now) for _, now, total in shown)

    assert set(stats["class_totals"]) <= set(CLASS_NAMES) and sum(stats["class_totals"].values()) > 0
    assert set(stats["class_counts"]) <= set(CLASS_NAMES)
    assert sum(stats["class_counts"].values()) == len(stats["detections"])
    assert all(d["track_id"] in ids for d in stats["detections"]) and set(stats["tracking"]["lines"]) == {"mid"}
    assert "FPS end to end (threaded)" in out
