"""NanoDet-Plus seed backbones: feature shapes, parameter counts against published figures, BN fusion
and RepVGG re-parameterisation, and each nanodet-plus-<backbone> model exported and converted to
OpenVINO and TFLite with the converters' own parity check. Real numerics, random weights (no
checkpoints needed)."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the converters' torch models need torch")

from torch import nn

from converters.compress.fuse import fuse_model, reparameterize_repvgg
from converters.models import MODELS, get_spec
from converters.models.backbones import BACKBONES, build_backbone
from converters.models.backbones.repvgg import RepVGGBlock

IMGSZ = 160  # divisible by 64 (NanoDet-Plus' extra level); small so the conversions stay quick
SEED_MODELS = [name for name in MODELS if name.startswith("nanodet-plus-") and name.split("-", 2)[2] in BACKBONES]
# converted in the default run: one of each block family (channel shuffle, SE + hard-swish, re-parametrised
# RepVGG); the others take the same converters through the same ops and run with `pytest -m slow`
CONVERTED_BY_DEFAULT = ("nanodet-plus-shufflenetv2-0.5x", "nanodet-plus-mobilenetv3-small", "nanodet-plus-repvgg-a0")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These are small tensors: a second thread costs more in synchronisation than it saves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _bn_buffers(module: nn.Module) -> int:
    """BN running mean + variance elements (Paddle's parameter count includes them)."""
    return sum(2 * m.num_features for m in module.modules() if isinstance(m, nn.BatchNorm2d))


def _settle_batchnorm(model: nn.Module, imgsz: int, seed: int = 0) -> nn.Module:
    """Random BN affine terms and running statistics measured on random inputs (cumulative average),
    so every layer's output is normalised: a randomly initialised detector then gives spread-out
    scores and distances instead of near-constant ones, and parity checks mean something."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) * 0.4 - 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 3, imgsz, imgsz, generator=gen))
    return model.eval()


# ----------------------------------------------------------------------------- shapes and sizes

@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_gives_stride_8_16_32_maps(name):
    backbone = build_backbone(name).eval()
    with torch.no_grad():
        feats = backbone(torch.zeros(1, 3, IMGSZ, IMGSZ))
    assert len(feats) == len(backbone.out_channels) == 3
    for feat, channels, stride in zip(feats, backbone.out_channels, (8, 16, 32)):
        assert tuple(feat.shape) == (1, channels, IMGSZ // stride, IMGSZ // stride), (name, stride)


# Published ImageNet classifier sizes, minus the classifier parts our backbones leave out (computed
# from their layer shapes). torchvision's counts are exact, so those must match to the parameter
# (which also pins the layer layout); figures published to 3 significant digits get a tolerance.
CLASSIFIER_TAIL = {
    # ShuffleNetV2's conv5 (C -> 1024, +BN) and fc (1024 -> 1000)
    "shufflenetv2-0.5x": 192 * 1024 + 2 * 1024 + 1024 * 1000 + 1000,
    "shufflenetv2-1.0x": 464 * 1024 + 2 * 1024 + 1024 * 1000 + 1000,
    "shufflenetv2-1.5x": 704 * 1024 + 2 * 1024 + 1024 * 1000 + 1000,
    "mobilenetv2": 1280 * 1000 + 1000,  # the 1x1 to 1280 is part of our backbone
    "mobilenetv3-small": 576 * 1024 + 1024 + 1024 * 1000 + 1000,  # Linear 576->1024, Linear 1024->1000
    "mobilenetv3-large": 960 * 1280 + 1280 + 1280 * 1000 + 1000,
    "ghostnet": 960 * 1280 + 1280 + 1280 * 1000 + 1000,  # conv_head (with bias) + classifier
    "repvgg-a0": 1280 * 1000 + 1000,
    "efficientnet-lite0": 320 * 1280 + 2 * 1280 + 1280 * 1000 + 1000,  # conv_head + BN, fc
    "lcnet": 512 * 1280 + 1280 * 1000 + 1000,  # last_conv (no bias), fc
}
# name -> (published total, relative tolerance, source)
PUBLISHED = {
    "shufflenetv2-0.5x": (1_366_792, 0, "torchvision shufflenet_v2_x0_5"),
    "shufflenetv2-1.0x": (2_278_604, 0, "torchvision shufflenet_v2_x1_0"),
    "shufflenetv2-1.5x": (3_503_624, 0, "torchvision shufflenet_v2_x1_5"),
    "mobilenetv2": (3_504_872, 0, "torchvision mobilenet_v2"),
    "mobilenetv3-small": (2_542_856, 0, "torchvision mobilenet_v3_small"),
    "mobilenetv3-large": (5_483_032, 0, "torchvision mobilenet_v3_large"),
    # 5.18M to 3 digits: +-0.005M is 0.1%
    "ghostnet": (5_180_000, 0.001, "timm ghostnet_100 (paper: 5.2M)"),
    # deploy form (after re-parameterisation), as the paper counts it; its 8.30M is 0.11% under our
    # 8.309M (truncated rather than rounded, or fc without bias): 0.2%
    "repvgg-a0": (8_300_000, 0.002, "RepVGG paper Table 4, deploy"),
    "efficientnet-lite0": (4_650_000, 0.001, "timm tf_efficientnet_lite0 4.65M"),
    # PaddleClas counts BN running mean/variance as parameters (added below); 2.96M to 3 digits
    "lcnet": (2_960_000, 0.002, "PaddleClas PPLCNet_x1_0 2.96M"),
}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_params_match_published(name):
    backbone = build_backbone(name)
    if name == "repvgg-a0":
        reparameterize_repvgg(backbone)
    count = _params(backbone) + CLASSIFIER_TAIL[name] + (_bn_buffers(backbone) if name == "lcnet" else 0)
    published, tolerance, source = PUBLISHED[name]
    assert abs(count - published) <= tolerance * published, f"{name}: {count} vs {published} ({source})"


# ----------------------------------------------------------------------------- fusion

def _repvgg_block_with_stats(in_ch: int, out_ch: int, stride: int) -> RepVGGBlock:
    block = RepVGGBlock(in_ch, out_ch, stride)
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return block.eval()


@pytest.mark.parametrize("in_ch, out_ch, stride, has_identity", [(16, 16, 1, True), (16, 32, 2, False)])
def test_repvgg_block_collapses_into_one_conv(in_ch, out_ch, stride, has_identity):
    torch.manual_seed(0)
    model = nn.Sequential(_repvgg_block_with_stats(in_ch, out_ch, stride))
    assert (model[0].rbr_identity is not None) == has_identity
    x = torch.randn(2, in_ch, 20, 20)
    with torch.no_grad():
        want = model(x)
        assert reparameterize_repvgg(model) == 1
        got = model(x)
    assert (got - want).abs().max().item() < 1e-4
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].kernel_size == (3, 3) and convs[0].bias is not None
    assert not any(isinstance(m, (nn.BatchNorm2d, RepVGGBlock)) for m in model.modules())


def test_repvgg_a0_reparameterises_exactly():
    # float64: the algebra is exact, so the only difference left is rounding; in float32 the sums of
    # ~35-sized activations over 22 layers differ by ~1e-4 from summation order alone
    backbone = _settle_batchnorm(build_backbone("repvgg-a0"), 64).double()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        want = backbone(x)
        counts = fuse_model(backbone, x)
        got = backbone(x)
    assert counts == {"repvgg_blocks": 22, "conv_bn": 0}
    assert max((g - w).abs().max().item() for g, w in zip(got, want)) < 1e-4
    assert sum(isinstance(m, nn.Conv2d) for m in backbone.modules()) == 22  # one conv per block
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())


@pytest.mark.parametrize("name", list(BACKBONES))
def test_fusion_removes_every_batchnorm_and_keeps_outputs(name):
    torch.manual_seed(0)
    backbone = _settle_batchnorm(build_backbone(name), 64)
    x = torch.randn(1, 3, 64, 64)
    fused = copy.deepcopy(backbone)
    counts = fuse_model(fused, x)
    with torch.no_grad():
        pairs = list(zip(backbone(x), fused(x)))
    assert counts["conv_bn"] + counts["repvgg_blocks"] > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    for want, got in pairs:
        # relative to the map's scale: float32 rounding of scaled weights compounds over ~50 layers
        # (measured up to 2.5e-5 of the scale)
        assert (got - want).abs().max().item() < 1e-4 * want.abs().max().item(), name


# ----------------------------------------------------------------------------- export and conversion

@pytest.fixture(scope="module")
def seed_package(tmp_path_factory) -> Callable[[str], Path]:
    """``seed_package(model)`` -> a package of ``model`` with random (BN-settled) weights at IMGSZ,
    converted to OpenVINO FP32 and TFLite FP32; exported once per module."""
    pytest.importorskip("onnx", reason="exporting needs onnx")
    pytest.importorskip("onnxslim", reason="exporting needs onnxslim")
    from converters.convert import convert_package
    from converters.export_onnx import export_package

    done: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in done:
            spec = get_spec(name)
            model = _settle_batchnorm(spec.build(80), IMGSZ)
            root = tmp_path_factory.mktemp(name)
            torch.save(model.state_dict(), root / "random.pth")
            export_package(name, root / "random.pth", root / "pkg", imgsz=IMGSZ)
            convert_package(root / "pkg", ["openvino", "tflite"], ["fp32"])
            done[name] = root / "pkg"
        return done[name]

    return make


def _centred_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_seed_models_cover_every_backbone():
    assert sorted(SEED_MODELS) == sorted(f"nanodet-plus-{b}" for b in BACKBONES if b != "shufflenetv2-1.0x")
    assert get_spec("nanodet-plus-m").build(80).backbone.out_channels == (116, 232, 464)  # ShuffleNetV2 1.0x


@pytest.mark.parametrize("name", [name if name in CONVERTED_BY_DEFAULT else pytest.param(name, marks=pytest.mark.slow)
                                  for name in SEED_MODELS])
def test_seed_model_exports_and_converts(seed_package, name):
    pytest.importorskip("openvino", reason="OpenVINO conversion needs openvino")
    pytest.importorskip("onnx2tf", reason="TFLite conversion needs onnx2tf")
    from edge_runtime.backends import open_backend
    from edge_runtime.manifest import load_manifest

    manifest = load_manifest(seed_package(name))
    onnx_art = manifest.artifact("onnx", "fp32")
    assert onnx_art.extra["parity_vs_torch"]["max_abs_diff"] < 1e-4  # ONNX Runtime (fused) vs unfused torch
    x = np.random.default_rng(1).standard_normal((1, 3, IMGSZ, IMGSZ)).astype(np.float32)
    want = open_backend(manifest.artifact_path(onnx_art), "onnx", 1).run({"input": x})
    # the outputs must vary across anchors, else any converter would agree with them trivially
    assert want["scores"].std() > 0.02 and want["distances"].std() > 0.1, {k: v.std() for k, v in want.items()}
    for fmt in ("openvino", "tflite"):
        art = manifest.artifact(fmt, "fp32")
        assert art.extra["fp32_agreement"]["cosine"] > 0.9999, (fmt, art.extra["fp32_agreement"])
        spec = manifest.input_for(art)
        tensor = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if spec.layout == "NHWC" else x
        got = open_backend(manifest.artifact_path(art), fmt, 1).run({spec.name: tensor})
        for role, out_name in zip(onnx_art.outputs, art.outputs):
            assert _centred_cosine(want[role], got[out_name]) > 0.9999, (fmt, role)


def test_exported_repvgg_has_one_conv_per_block(seed_package):
    import onnx

    graph = onnx.load(str(seed_package("nanodet-plus-repvgg-a0") / "model.onnx")).graph
    ops = Counter(node.op_type for node in graph.node)
    fused = get_spec("nanodet-plus-repvgg-a0").build(80)
    fuse_model(fused, torch.zeros(1, 3, IMGSZ, IMGSZ))
    assert ops["BatchNormalization"] == 0
    assert ops["Conv"] == sum(isinstance(m, nn.Conv2d) for m in fused.modules())
    backbone_convs = sum(isinstance(m, nn.Conv2d) for m in fused.backbone.modules())
    assert backbone_convs == 22  # RepVGG-A0: 1 + 2 + 4 + 14 + 1 blocks
    # the branch sums are gone: the Adds left are GhostPAN's 4 bottleneck shortcuts and its extra level
    assert ops["Add"] == 5
