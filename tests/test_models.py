"""Torch models: strict loading of the official checkpoints and numerical parity with the
official implementations (YOLO-FastestV2 reference tensors, NanoDet-Plus ncnn files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the converters' torch models need torch")

from converters.checkpoints import load_model, read_state_dict  # noqa: E402
from converters.models import get_spec  # noqa: E402
from edge_runtime.errors import CheckpointError  # noqa: E402

NANODET_PLUS_416 = "weights/nanodet-plus-m/nanodet-plus-m_coco.ckpt"
NANODET_PLUS_320 = "weights/nanodet-plus-m/nanodet-plus-m_320_coco.ckpt"
YOLO_FASTESTV2 = "weights/yolo-fastestv2/coco2017-0.241078ap-model.pth"
NANODET_M_CUSTOM = "weights/nanodet-m-custom/nanodet_m256.pth"


def _single_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg, f"error message spans several lines: {msg!r}"
    return msg


# ------------------------------------------------------------------------------ strict loading

@pytest.mark.parametrize("model_name, weights, num_classes, num_tensors", [
    ("nanodet-plus-m", NANODET_PLUS_416, 80, 645),
    ("nanodet-plus-m", NANODET_PLUS_320, 80, 645),
    ("yolo-fastestv2", YOLO_FASTESTV2, 80, 444),
    ("nanodet-m", NANODET_M_CUSTOM, 8, 421),
])
def test_official_checkpoint_loads_strictly(fixtures, model_name, weights, num_classes, num_tensors):
    path = fixtures(weights)
    spec = get_spec(model_name)
    model, nc = load_model(spec, path)
    assert nc == num_classes
    assert not model.training
    # the same weights into a fresh model with strict=True: zero missing, zero unexpected keys
    state = read_state_dict(path)
    assert len(state) == num_tensors
    fresh = spec.build(nc)
    result = fresh.load_state_dict(state, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert set(fresh.state_dict()) == set(state)
    # and load_model really put them in
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """Load a checkpoint as stored, apply ``edit(state_dict)`` in place and torch.save it to ``dst``."""
    obj = torch.load(src, map_location="cpu", weights_only=True)
    edit(obj["state_dict"] if "state_dict" in obj else obj)
    torch.save(obj, dst)
    return dst


@pytest.mark.parametrize("model_name, weights, prefix", [
    ("nanodet-plus-m", NANODET_PLUS_416, "model."),  # NanoDet .ckpt layout
    ("yolo-fastestv2", YOLO_FASTESTV2, ""),  # plain state_dict
    ("nanodet-m", NANODET_M_CUSTOM, ""),  # {'state_dict': ...} without prefix
])
def test_extra_key_is_rejected(fixtures, tmp_path, model_name, weights, prefix):
    bad = _rewrite(fixtures(weights), tmp_path / "extra.pth",
                   lambda sd: sd.__setitem__(prefix + "head.not_a_layer.weight", torch.zeros(3)))
    with pytest.raises(CheckpointError) as info:
        load_model(get_spec(model_name), bad)
    msg = _single_line(info.value)
    assert str(bad) in msg
    assert "1 unexpected" in msg and "head.not_a_layer.weight" in msg


@pytest.mark.parametrize("model_name, weights, removed", [
    ("nanodet-plus-m", NANODET_PLUS_416, "model.fpn.reduce_layers.0.conv.weight"),
    ("yolo-fastestv2", YOLO_FASTESTV2, "fpn.cls_head_2.block.0.weight"),
    ("nanodet-m", NANODET_M_CUSTOM, "head.gfl_reg.2.bias"),
])
def test_missing_key_is_rejected(fixtures, tmp_path, model_name, weights, removed):
    bad = _rewrite(fixtures(weights), tmp_path / "missing.pth", lambda sd: sd.pop(removed))
    with pytest.raises(CheckpointError) as info:
        load_model(get_spec(model_name), bad)
    msg = _single_line(info.value)
    assert str(bad) in msg
    assert "1 missing" in msg and removed.removeprefix("model.") in msg


def test_shape_mismatch_is_rejected(fixtures, tmp_path):
    key = "backbone.first_conv.0.weight"
    bad = _rewrite(fixtures(YOLO_FASTESTV2), tmp_path / "shape.pth",
                   lambda sd: sd.__setitem__(key, torch.zeros(8, 3, 3, 3)))
    with pytest.raises(CheckpointError) as info:
        load_model(get_spec("yolo-fastestv2"), bad)
    msg = _single_line(info.value)
    assert str(bad) in msg and key in msg


def test_checkpoint_of_another_architecture_is_rejected(fixtures):
    path = fixtures(YOLO_FASTESTV2)
    with pytest.raises(CheckpointError) as info:
        load_model(get_spec("nanodet-plus-m"), path)
    assert str(path) in _single_line(info.value)


@pytest.mark.parametrize("content", [
    pytest.param(np.random.default_rng(0).bytes(4096), id="random-bytes"),
    pytest.param(b"", id="empty"),
    pytest.param(b"# a comment\n", id="text-comment"),
    pytest.param(b"PK\x03\x04 not really a zip", id="fake-zip"),
    pytest.param(b"state_dict: not a checkpoint\n", id="text-yaml"),
    pytest.param(b"hello world\n", id="text-plain"),
])
def test_non_checkpoint_file_is_rejected(tmp_path, content):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_model(get_spec("nanodet-plus-m"), path)
    assert str(path) in _single_line(info.value)


def test_non_tensor_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    assert str(path) in _single_line(info.value)


def test_missing_checkpoint_file_is_rejected(tmp_path):
    path = tmp_path / "nope.ckpt"
    with pytest.raises(CheckpointError) as info:
        load_model(get_spec("yolo-fastestv2"), path)
    assert str(path) in _single_line(info.value)


def test_pickled_code_is_not_executed(tmp_path):
    """weights_only loading refuses arbitrary pickled objects instead of running them."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"state_dict": Evil()}, protocol=2))
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    assert not (tmp_path / "pwned").exists()


def test_aux_training_branches_are_accepted_and_dropped(fixtures, tmp_path):
    def add_aux(sd):
        sd["model.aux_head.gfl_cls.0.weight"] = torch.zeros(112, 192, 1, 1)
        sd["model.aux_head.gfl_cls.0.bias"] = torch.zeros(112)
        sd["model.aux_fpn.reduce_layers.0.conv.weight"] = torch.zeros(96, 116, 1, 1)

    path = _rewrite(fixtures(NANODET_PLUS_416), tmp_path / "with_aux.ckpt", add_aux)
    state = read_state_dict(path)
    assert not any(k.startswith(("aux_head.", "aux_fpn.")) for k in state)
    assert len(state) == 645
    model, nc = load_model(get_spec("nanodet-plus-m"), path)
    assert nc == 80
    assert not any(k.startswith("aux") for k in model.state_dict())


def test_ema_weights_win_over_model_weights(fixtures, tmp_path):
    """NanoDet's loader prefers ``avg_model.*`` (EMA) when a checkpoint has both."""
    key = "head.gfl_cls.0.bias"

    def add_ema(sd):
        for k in list(sd):
            sd["avg_model." + k.removeprefix("model.")] = sd[k].clone()
        sd["avg_model." + key] = torch.full_like(sd["model." + key], 0.25)

    path = _rewrite(fixtures(NANODET_PLUS_416), tmp_path / "ema.ckpt", add_ema)
    model, _ = load_model(get_spec("nanodet-plus-m"), path)
    assert torch.all(model.state_dict()[key] == 0.25)


# ------------------------------------------------------------------ YOLO-FastestV2 reference

OFFICIAL_OUTPUTS = ("reg_22", "obj_22", "cls_22", "reg_11", "obj_11", "cls_11")


@pytest.fixture(scope="module")
def yolo_reference(fixtures):
    ref = np.load(fixtures("reference/yolo-fastestv2_000139_official_torch.npz"))
    return {k: ref[k] for k in ref.files}


def test_yolo_fastestv2_matches_official_torch_outputs(fixtures, yolo_reference):
    model, _ = load_model(get_spec("yolo-fastestv2"), fixtures(YOLO_FASTESTV2))
    x = yolo_reference["input"]
    assert x.shape == (1, 3, 352, 352)
    with torch.no_grad():
        outputs = model(torch.from_numpy(x))
    assert len(outputs) == len(OFFICIAL_OUTPUTS)
    for name, out in zip(OFFICIAL_OUTPUTS, outputs):
        expected = yolo_reference[name]
        assert out.shape == expected.shape, name
        diff = float(np.abs(out.numpy() - expected).max())
        assert diff < 1e-4, f"{name}: max abs diff {diff}"


def test_yolo_fastestv2_runtime_preprocess_matches_official_input(yolo_fastestv2_package, read_image,
                                                                  yolo_reference):
    """The official test.py feeds cv2.resize(INTER_LINEAR) BGR / 255; the package's preprocess must too."""
    from edge_runtime.families import make_family
    from edge_runtime.manifest import load_manifest

    family = make_family(load_manifest(yolo_fastestv2_package))
    tensor, meta = family.preprocess(read_image("000139.jpg"))
    expected = yolo_reference["input"]
    assert tensor.shape == expected.shape and tensor.dtype == np.float32
    diff = float(np.abs(tensor - expected).max())
    assert diff < 1e-6, f"preprocess differs from the official input by {diff}"
    assert (meta.height, meta.width) == (334, 500)


# ------------------------------------------------------------------- NanoDet-Plus vs ncnn

@pytest.mark.parametrize("size, weights", [(320, NANODET_PLUS_320), (416, NANODET_PLUS_416)])
def test_nanodet_plus_matches_official_ncnn(fixtures, size, weights):
    ncnn = pytest.importorskip("ncnn", reason="the ncnn python package is needed for the ncnn cross-check")
    param = fixtures(f"weights/nanodet-plus-m/nanodet-plus-m_{size}.param")
    binary = fixtures(f"weights/nanodet-plus-m/nanodet-plus-m_{size}.bin")
    model, nc = load_model(get_spec("nanodet-plus-m"), fixtures(weights))
    x = np.random.default_rng(size).standard_normal((1, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        raw = model(torch.from_numpy(x))
    assert len(raw) == 4

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 2
    assert net.load_param(str(param)) == 0
    assert net.load_model(str(binary)) == 0
    ex = net.create_extractor()
    ex.input("data", ncnn.Mat(np.ascontiguousarray(x[0])))
    for stride, level in zip((8, 16, 32, 64), raw):
        h = w = -(-size // stride)
        assert level.shape == (1, nc + 32, h, w)
        rc, cls = ex.extract(f"cls{stride}")
        rd, dis = ex.extract(f"dis{stride}")
        assert rc == 0 and rd == 0
        cls, dis = np.array(cls), np.array(dis)
        ours_cls = level[0, :nc].sigmoid().numpy()
        ours_dis = level[0, nc:].permute(1, 2, 0).numpy()
        assert cls.shape == (nc, h, w) and dis.shape == (h, w, 32)
        d_cls = float(np.abs(cls - ours_cls).max())
        d_dis = float(np.abs(dis - ours_dis).max())
        assert d_cls < 1e-3, f"cls{stride}: max abs diff {d_cls}"
        assert d_dis < 1e-3, f"dis{stride}: max abs diff {d_dis}"


def test_nanodet_plus_1_5x_builds_loads_and_runs(tmp_path):
    """No 1.5x checkpoint is among the fixtures: build it, save it in the official .ckpt layout and load it back."""
    torch = pytest.importorskip("torch")
    spec = get_spec("nanodet-plus-m-1.5x")
    model = spec.build(80).eval()
    assert model.backbone.out_channels == (176, 352, 704)
    assert model.head.gfl_cls[0].weight.shape == (112, 128, 1, 1)
    path = tmp_path / "nanodet-plus-m-1.5x.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded, num_classes = load_model(spec, path)
    assert num_classes == 80
    x = torch.randn(1, 3, 320, 320)
    with torch.no_grad():
        outs, again = model(x), loaded(x)
    assert [tuple(o.shape) for o in outs] == [(1, 112, 40, 40), (1, 112, 20, 20), (1, 112, 10, 10), (1, 112, 5, 5)]
    assert max(float((a - b).abs().max()) for a, b in zip(outs, again)) == 0.0
