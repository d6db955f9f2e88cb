"""Real time on this machine (issue 5): end-to-end video FPS of ``run_pipeline`` against the backend
alone, the bundled demo model on one inference thread, and the official NanoDet demo loop as a baseline.

Prepare the packages once (host tool chain; F=../shared/fixtures):

    edge-runtime export --model nanodet-plus-m --weights $F/weights/nanodet-plus-m/nanodet-plus-m_320_coco.ckpt \\
        --imgsz 320 --out pkg320/
    edge-runtime convert pkg320/ --to onnx,openvino,tflite --precisions fp32,int8 \\
        --calib $F/images/calib-coco-val2017 --calib-size 32
    edge-runtime export --model demo-shapes --out shapes/

then run everything in one go (a few minutes on 2 cores; run it on a quiet machine):

    python bench/realtime.py pkg320/ --shapes shapes/ --video $F/video/vtest.avi --json realtime.json

For every artifact and inference thread count (default: one core left to the pipeline's other
threads, and all cores), in its own process (as edge_runtime.bench: two runtimes' thread pools in
one process distort each other's timings), backend-only and e2e with the same thread count:

  backend only   frames / total ``Detector.infer`` time over every frame of the video (each frame
                 read and preprocessed first, untimed): the model alone, all cores to itself
  e2e            ``run_pipeline`` (threaded) over the whole video, wall clock: no drawing, and
                 drawing every frame (boxes + FPS overlay, nothing written)
  ratio          e2e / backend only. Issue 5 targets: >= 0.95, and >= 60 FPS with the best artifact
  CPU cores      process CPU time / wall time: how many cores each run kept busy

With a core left over, reading, preprocessing, decoding and drawing hide behind inference, so the
ratio measures the pipeline's own overhead. With every core given to inference there is nothing to
overlap with: the other stages' few ms of CPU per frame come out of the model's share.

The demo-shapes package runs the same way on its generated clip with 1 inference thread
(target: >= 30 FPS end to end). The baseline is the official NanoDet demo's video loop
(``OfficialDemo`` below) on the same video with the package's FP32 ONNX, compared with our e2e run
of the same artifact. Prints markdown tables; ``--json`` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import resource
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_runtime.deploy.hostinfo import cpu_summary, physical_cores
from edge_runtime.detector import Detector
from edge_runtime.io.pipeline import run_pipeline
from edge_runtime.io.sources import open_source
from edge_runtime.manifest import load_manifest
from edge_runtime.timing import StageTimes

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
STAGES = ("read", "preprocess", "inference", "postprocess", "draw")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def backend_only(det: Detector, video: str, frames: int | None) -> dict[str, Any]:
    """The model alone on the video's preprocessed frames: only the infer calls are timed."""
    with open_source(video) as source:
        tensors = (det.preprocess(f.image)[0] for f in islice(source, frames))
        first = next(tensors)
        for _ in range(5):  # first calls allocate and (OpenVINO, XNNPACK) pack weights
            det.infer(first)
        times, cpu = [], 0.0
        for tensor in tensors:
            c0, t0 = cpu_seconds(), time.perf_counter()
            det.infer(tensor)
            times.append(time.perf_counter() - t0)
            cpu += cpu_seconds() - c0
    total = sum(times)
    return {"frames": len(times), "fps": len(times) / total, "p50_ms": float(np.median(times)) * 1e3,
            "cpu_cores": cpu / total}


def pipeline_run(det: Detector, video: str, frames: int | None, draw: bool) -> dict[str, Any]:
    """``run_pipeline`` as ``edge-runtime run`` does it; ``draw``: annotate every frame (an
    ``on_result`` consumer makes the pipeline draw) but write nothing."""
    c0 = cpu_seconds()
    summary = run_pipeline(det, open_source(video), max_frames=frames, progress=False,
                           on_result=(lambda canvas, stats: None) if draw else None)
    return {"frames": summary.frames, "fps": summary.fps, "cpu_cores": (cpu_seconds() - c0) / summary.wall_s,
            "detections": summary.detections,
            "p50_ms": {stage: summary.stages[stage]["p50"] for stage in STAGES if stage in summary.stages}}


def measure_artifact(package: str, fmt: str, precision: str, video: str, threads: int,
                     frames: int | None) -> dict[str, Any]:
    det = Detector(package, backend=fmt, precision=precision, threads=threads)
    backend = backend_only(det, video, frames)  # also warms the backend up for the pipeline runs
    plain = pipeline_run(det, video, frames, draw=False)
    drawn = pipeline_run(det, video, frames, draw=True)
    return {"artifact": det.artifact.file, "format": fmt, "precision": precision, "threads": threads,
            "backend": det.backend.describe(), "backend_only": backend, "e2e": plain, "e2e_draw": drawn,
            "ratio": plain["fps"] / backend["fps"], "ratio_draw": drawn["fps"] / backend["fps"]}


class OfficialDemo:
    """The official NanoDet demo's video loop, re-implemented here as the baseline (RangiLyu/nanodet):

    - demo/demo.py: the ``video`` branch of ``main`` and ``Predictor.inference`` / ``visualize``
    - nanodet/data/transform/warp.py: ``ShapeTransform.__call__``, ``get_resize_matrix``, ``warp_boxes``
    - nanodet/data/transform/color.py: ``color_aug_and_norm`` / ``_normalize`` (val pipeline: no augmentation)
    - nanodet/model/head/nanodet_plus_head.py: ``post_process``, ``get_bboxes``, ``get_single_level_center_priors``
    - nanodet/util/box_transform.py: ``distance2bbox``; nanodet/model/module/nms.py: ``multiclass_nms``, ``batched_nms``
    - nanodet/util/visualization.py: ``overlay_bbox_cv``

    Only the model forward differs: the package's FP32 ONNX through onnxruntime (the same model and
    thread count as ours), so the comparison isolates the pipeline. Hence the graph already applies
    the sigmoid and the distribution integral that ``get_bboxes`` would. torchvision (its ``nms``
    kernel) is not installed here: OpenCV's C++ greedy NMS stands in, on the same class-offset
    boxes. ``cv2.imshow`` and the printed viz time are left out (headless, and not pipeline work).
    """

    def __init__(self, package: str, threads: int) -> None:
        import onnxruntime as ort
        import torch

        torch.set_num_threads(threads)
        manifest = load_manifest(package)
        art = manifest.artifact("onnx", "fp32")
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(manifest.artifact_path(art)), so, providers=["CPUExecutionProvider"])
        self.input_name, self.output_names = manifest.input.name, list(art.outputs)
        self.h, self.w = manifest.input.size_hw
        self.mean = np.array(manifest.input.mean, np.float32).reshape(1, 1, 3) / 255
        self.std = np.array(manifest.input.std, np.float32).reshape(1, 1, 3) / 255
        self.strides = manifest.decoder["strides"]
        self.class_names = manifest.class_names
        self.colors = np.random.default_rng(0).random((len(self.class_names), 3))  # stands in for _COLORS
        self.times = StageTimes()

    def inference(self, img: np.ndarray) -> tuple[dict[str, Any], dict[int, list]]:
        import torch

        t0 = time.perf_counter()
        height, width = img.shape[:2]
        meta = {"img_info": {"id": 0, "file_name": None, "height": height, "width": width}, "raw_img": img}
        # ShapeTransform: centre, (identity) augmentations, translate back, then the resize matrix
        c, t, rs = np.eye(3), np.eye(3), np.eye(3)
        c[0, 2], c[1, 2] = -width / 2, -height / 2
        t[0, 2], t[1, 2] = 0.5 * width, 0.5 * height
        rs[0, 0], rs[1, 1] = self.w / width, self.h / height  # keep_ratio False (the COCO configs)
        m = rs @ (t @ c)
        warped = cv2.warpPerspective(img, m, dsize=(self.w, self.h))
        meta["warp_matrix"] = m
        normed = (warped.astype(np.float32) / 255 - self.mean) / self.std  # color_aug_and_norm
        meta["img"] = torch.from_numpy(normed.transpose(2, 0, 1)).unsqueeze(0)
        t1 = time.perf_counter()
        with torch.no_grad():
            scores, distances = self.session.run(self.output_names, {self.input_name: meta["img"].numpy()})
            t2 = time.perf_counter()
            dets = self.post_process(torch.from_numpy(scores), torch.from_numpy(distances), meta)
        for stage, start, end in (("preprocess", t0, t1), ("inference", t1, t2), ("postprocess", t2, time.perf_counter())):
            self.times.add(stage, (end - start) * 1e3)
        return meta, dets

    def post_process(self, scores, distances, meta) -> dict[int, list]:
        import torch

        priors = []
        for stride in self.strides:  # get_single_level_center_priors, per frame as the official code does
            fh, fw = math.ceil(self.h / stride), math.ceil(self.w / stride)
            y, x = torch.meshgrid(torch.arange(fh, dtype=torch.float32) * stride,
                                  torch.arange(fw, dtype=torch.float32) * stride, indexing="ij")
            x, y = x.flatten(), y.flatten()
            s = x.new_full((x.shape[0],), stride)
            priors.append(torch.stack([x, y, s, s], dim=-1).unsqueeze(0))
        center_priors = torch.cat(priors, dim=1)
        dis = distances * center_priors[..., 2, None]
        points = center_priors[..., :2]
        bboxes = torch.stack([(points[..., 0] - dis[..., 0]).clamp(min=0, max=self.w),  # distance2bbox
                              (points[..., 1] - dis[..., 1]).clamp(min=0, max=self.h),
                              (points[..., 0] + dis[..., 2]).clamp(min=0, max=self.w),
                              (points[..., 1] + dis[..., 3]).clamp(min=0, max=self.h)], -1)
        score = torch.cat([scores[0], scores[0].new_zeros(scores.shape[1], 1)], dim=1)  # dummy background
        det_bboxes, det_labels = self.multiclass_nms(bboxes[0], score, score_thr=0.05, iou=0.6, max_num=100)
        det_bboxes = det_bboxes.numpy()
        info = meta["img_info"]
        det_bboxes[:, :4] = warp_boxes(det_bboxes[:, :4], np.linalg.inv(meta["warp_matrix"]),
                                       info["width"], info["height"])
        classes = det_labels.numpy()
        return {i: np.concatenate([det_bboxes[classes == i, :4], det_bboxes[classes == i, 4:5]], axis=1).tolist()
                for i in range(len(self.class_names))}

    @staticmethod
    def multiclass_nms(multi_bboxes, multi_scores, score_thr: float, iou: float, max_num: int):
        import torch

        num_classes = multi_scores.size(1) - 1
        bboxes = multi_bboxes[:, None].expand(multi_scores.size(0), num_classes, 4)
        scores = multi_scores[:, :-1]
        valid = scores > score_thr
        bboxes = torch.masked_select(bboxes, torch.stack((valid, valid, valid, valid), -1)).view(-1, 4)
        scores = torch.masked_select(scores, valid)
        labels = valid.nonzero(as_tuple=False)[:, 1]
        if bboxes.numel() == 0:
            return multi_bboxes.new_zeros((0, 5)), labels
        # batched_nms: offset each class so that boxes of different classes never overlap
        offset = bboxes + (labels.to(bboxes) * (bboxes.max() + 1))[:, None]
        xywh = torch.cat([offset[:, :2], offset[:, 2:] - offset[:, :2]], 1).numpy().astype(np.float64)
        keep = torch.from_numpy(np.asarray(cv2.dnn.NMSBoxes(xywh, scores.numpy(), 0.0, iou), np.int64).reshape(-1))
        dets = torch.cat([bboxes[keep], scores[keep][:, None]], -1)
        return dets[:max_num], labels[keep][:max_num]

    def visualize(self, dets: dict[int, list], meta: dict[str, Any], score_thresh: float = 0.35) -> np.ndarray:
        img = meta["raw_img"]  # overlay_bbox_cv draws on the frame itself
        all_box = []
        for label, boxes in dets.items():
            for bbox in boxes:
                if bbox[-1] > score_thresh:
                    x0, y0, x1, y1 = (int(i) for i in bbox[:4])
                    all_box.append([label, x0, y0, x1, y1, bbox[-1]])
        all_box.sort(key=lambda v: v[5])
        font = cv2.FONT_HERSHEY_SIMPLEX
        for label, x0, y0, x1, y1, score in all_box:
            color = (self.colors[label] * 255).astype(np.uint8).tolist()
            text = f"{self.class_names[label]}:{score * 100:.1f}%"
            txt_color = (0, 0, 0) if np.mean(self.colors[label]) > 0.5 else (255, 255, 255)
            txt_size = cv2.getTextSize(text, font, 0.5, 2)[0]
            cv2.rectangle(img, (x0, y0), (x1, y1), color, 2)
            cv2.rectangle(img, (x0, y0 - txt_size[1] - 1), (x0 + txt_size[0] + txt_size[1], y0 - 1), color, -1)
            cv2.putText(img, text, (x0, y0 - 1), font, 0.5, txt_color, thickness=1)
        return img


def warp_boxes(boxes: np.ndarray, m: np.ndarray, width: int, height: int) -> np.ndarray:
    """nanodet/data/transform/warp.py ``warp_boxes`` (the official post_process maps boxes back with it)."""
    n = len(boxes)
    if not n:
        return boxes
    xy = np.ones((n * 4, 3))
    xy[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)
    xy = xy @ m.T
    xy = (xy[:, :2] / xy[:, 2:3]).reshape(n, 8)
    x, y = xy[:, [0, 2, 4, 6]], xy[:, [1, 3, 5, 7]]
    xy = np.concatenate((x.min(1), y.min(1), x.max(1), y.max(1))).reshape(4, n).T
    xy[:, [0, 2]] = xy[:, [0, 2]].clip(0, width)
    xy[:, [1, 3]] = xy[:, [1, 3]].clip(0, height)
    return xy.astype(np.float32)


def measure_official(package: str, video: str, threads: int, frames: int | None) -> dict[str, Any]:
    """The official video loop: read, Predictor.inference, Predictor.visualize, frame after frame."""
    demo = OfficialDemo(package, threads)
    cap = cv2.VideoCapture(video)
    ok, frame = cap.read()
    for _ in range(5):  # warmed up as ours are (by their backend-only pass)
        demo.inference(frame.copy())
    demo.times = StageTimes()
    count = shown = 0
    c0, t0 = cpu_seconds(), time.perf_counter()
    while ok and (frames is None or count < frames):
        meta, res = demo.inference(frame)
        shown += sum(b[-1] > 0.35 for boxes in res.values() for b in boxes)
        t1 = time.perf_counter()
        demo.visualize(res, meta)
        demo.times.add("draw", (time.perf_counter() - t1) * 1e3)
        count += 1
        ok, frame = cap.read()
    wall = time.perf_counter() - t0
    cap.release()
    return {"frames": count, "fps": count / wall, "cpu_cores": (cpu_seconds() - c0) / wall,
            "detections_over_0.35": int(shown),
            "p50_ms": {stage: s["p50"] for stage, s in demo.times.summary().items()}}


def in_process(fn, *args) -> Any:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def markdown(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def artifact_rows(results: list[dict[str, Any]]) -> list[list[Any]]:
    return [[f"{r['format']} {r['precision']}", r["threads"], r["backend_only"]["fps"], r["e2e"]["fps"],
             f"{r['ratio']:.3f}", r["e2e_draw"]["fps"], f"{r['ratio_draw']:.3f}",
             f"{r['backend_only']['cpu_cores']:.2f} / {r['e2e']['cpu_cores']:.2f}"] for r in results]


def stage_rows(results: list[dict[str, Any]]) -> list[list[Any]]:
    """Where the pipeline's time goes: per-stage p50 against the model's p50 with the cores to itself."""
    return [[f"{r['format']} {r['precision']}", r["threads"], r["backend_only"]["p50_ms"],
             *(r["e2e"]["p50_ms"].get(s, float("nan")) for s in STAGES[:4]), 1e3 / r["e2e"]["fps"]]
            for r in results]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package", help="NanoDet-Plus-m-320 package converted to onnx/openvino/tflite fp32+int8")
    ap.add_argument("--video", default=str(FIXTURES / "video" / "vtest.avi"), help="video to run [fixtures vtest.avi]")
    ap.add_argument("--shapes", default=None,
                    help="demo-shapes package (edge-runtime export --model demo-shapes) [skip that part]")
    ap.add_argument("--clip", default=None, help="demo clip [generated with converters.demo_data.write_clip]")
    cores = physical_cores()
    ap.add_argument("--threads", default=",".join(str(t) for t in sorted({max(1, cores - 1), cores})),
                    help="inference thread counts, comma separated [physical cores - 1 and physical cores]")
    ap.add_argument("--frames", type=int, default=None, help="frames per run [the whole video]")
    ap.add_argument("--json", default=None, help="write every figure here")
    args = ap.parse_args()

    thread_counts = [int(t) for t in args.threads.split(",")]
    report: dict[str, Any] = {"host": cpu_summary(), "video": args.video, "threads": thread_counts,
                              "load_before": os.getloadavg()}
    artifacts = [(a.format, a.precision) for a in load_manifest(args.package).artifacts]
    results, official = [], {}
    for threads in thread_counts:
        for fmt, precision in artifacts:
            print(f"  {fmt} {precision}, {threads} threads", flush=True)
            results.append(in_process(measure_artifact, args.package, fmt, precision, args.video, threads,
                                      args.frames))
        print(f"  official NanoDet demo loop (onnx fp32), {threads} threads", flush=True)
        official[threads] = in_process(measure_official, args.package, args.video, threads, args.frames)
    report["nanodet"], report["official"] = results, official
    if args.shapes:
        clip = args.clip
        if clip is None:
            from converters.demo_data import write_clip

            clip = str(write_clip(Path(tempfile.mkdtemp()) / "shapes.avi", progress=False))
        report["shapes"] = []
        for fmt, precision in ((a.format, a.precision) for a in load_manifest(args.shapes).artifacts):
            print(f"  demo-shapes {fmt} {precision}", flush=True)
            report["shapes"].append(in_process(measure_artifact, args.shapes, fmt, precision, clip, 1, None))
    report["load_after"] = os.getloadavg()

    host = report["host"]
    print(f"\n{host['cpu']} ({host['physical_cores']} cores), load average before {report['load_before'][0]:.2f}, "
          f"after {report['load_after'][0]:.2f}\n")
    headers = ["artifact", "threads", "backend-only FPS", "e2e FPS", "e2e/backend", "e2e FPS drawing",
               "drawing/backend", "CPU cores backend / e2e"]
    print(f"NanoDet-Plus-m-320 on {Path(args.video).name}\n")
    print(markdown(headers, artifact_rows(results)))
    print("\nper-stage p50 ms in the threaded pipeline (no drawing) vs the model alone\n")
    print(markdown(["artifact", "threads", "backend-only inference", "read", "preprocess", "inference",
                    "postprocess", "ms per frame e2e"], stage_rows(results)))
    best = max(results, key=lambda r: r["e2e"]["fps"])
    ratios = {t: [r["ratio"] for r in results if r["threads"] == t] for t in thread_counts}
    report["summary"] = {"best": best["artifact"], "best_threads": best["threads"], "best_e2e_fps": best["e2e"]["fps"],
                         "ratio_range": {t: [min(v), max(v)] for t, v in ratios.items()}}
    print(f"\nbest: {best['format']} {best['precision']}, {best['threads']} threads, {best['e2e']['fps']:.1f} FPS "
          "end to end (target >= 60)")
    for t, v in ratios.items():
        print(f"e2e/backend-only with {t} inference threads: {min(v):.3f} .. {max(v):.3f} (target >= 0.95)")
    print("\nofficial NanoDet demo loop vs ours, same FP32 ONNX and threads, drawing every frame\n")
    stages = ["preprocess", "inference", "postprocess", "draw"]
    rows, report["summary"]["vs_official"] = [], {}
    for threads, off in official.items():
        ours = next(r for r in results if (r["format"], r["precision"], r["threads"]) == ("onnx", "fp32", threads))
        report["summary"]["vs_official"][threads] = ours["e2e_draw"]["fps"] / off["fps"]
        rows += [[f"official demo (re-implemented), {threads} threads", off["fps"],
                  *(off["p50_ms"][s] for s in stages), off["detections_over_0.35"]],
                 [f"ours: run_pipeline threaded, {threads} threads", ours["e2e_draw"]["fps"],
                  *(ours["e2e_draw"]["p50_ms"][s] for s in stages), ours["e2e_draw"]["detections"]]]
    print(markdown(["loop", "FPS", *(f"{s} p50 ms" for s in stages), "detections > 0.35"], rows))
    print("\nours / official: " + ", ".join(f"{v:.2f}x ({t} threads)" for t, v in report["summary"]["vs_official"].items()))
    if args.shapes:
        print("\ndemo-shapes on the generated clip, 1 inference thread (target >= 30 FPS end to end)\n")
        print(markdown(headers, artifact_rows(report["shapes"])))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
