"""converters.shuffle_fold on ShuffleNetV2s exported as the project exports models (NanoDet's backbone, whose
shuffle ends a unit, and YOLO-FastestV2 whole, whose shuffle starts one with two Gathers): the folded graph
has no channel shuffle left, reads every piece with one Slice, and gives the same outputs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from converters.export_onnx import write_onnx  # noqa: E402
from converters.models.backbones.shufflenetv2 import ShuffleNetV2  # noqa: E402
from converters.models.yolo_fastest_v2 import YoloFastestV2, YoloFastestV2Deploy  # noqa: E402
from converters.shuffle_fold import fold_channel_shuffles  # noqa: E402


def _run(model, x: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})


class BackboneWithNeck(torch.nn.Module):
    """ShuffleNetV2 0.5x with a 1x1 conv on each stage output, as NanoDet's neck reads them."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ShuffleNetV2("0.5x")
        self.neck = torch.nn.ModuleList(torch.nn.Conv2d(c, 16, 1) for c in self.backbone.out_channels)

    def forward(self, x):
        return tuple(conv(level) for conv, level in zip(self.neck, self.backbone(x)))


def _random_statistics(net: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, so the folded convs differ per channel."""
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    torch.manual_seed(0)
    net = _random_statistics(BackboneWithNeck())
    path = tmp_path_factory.mktemp("shuffle") / "backbone.onnx"
    return write_onnx(net, torch.zeros(1, 3, 96, 96), path, ("c3", "c4", "c5"))


def _assert_same_outputs(original, folded, size: int) -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    for want, got in zip(_run(original, x), _run(folded, x)):
        assert want.shape == got.shape
        assert np.abs(want - got).max() <= 1e-5 * max(1.0, float(np.abs(want).max())), np.abs(want - got).max()


def test_folded_backbone_gives_the_same_outputs_without_a_shuffle(backbone):
    before = Counter(n.op_type for n in backbone.graph.node)
    result = fold_channel_shuffles(backbone)
    assert result.model is not None, result.reason
    after = Counter(n.op_type for n in result.model.graph.node)
    assert result.shuffles == before["Transpose"] == 16 and after["Transpose"] == 0, (before, after)
    assert after["Gather"] == 0 and after["Reshape"] == 0
    assert result.record() == {"channel_shuffles_folded": 16, **result.counts} and result.counts["slices"] > 0
    _assert_same_outputs(backbone, result.model, 96)


def test_gather_form_of_yolo_fastestv2_is_folded(tmp_path):
    """Reshape(C/2, 2, HW) -> Transpose(1, 0, 2) -> Reshape -> Gather 0 / Gather 1 in 13 units; the unit
    outputs reach the neck through Concat and Resize, which the fold passes through."""
    torch.manual_seed(0)
    net = YoloFastestV2Deploy(_random_statistics(YoloFastestV2()))
    graph = write_onnx(net, torch.zeros(1, 3, 160, 160), tmp_path / "yfv2.onnx", ("scores", "box_sigmoid"))
    before = Counter(n.op_type for n in graph.graph.node)
    result = fold_channel_shuffles(graph)
    assert result.model is not None, result.reason
    after = Counter(n.op_type for n in result.model.graph.node)
    assert result.shuffles == 13 and before["Gather"] == 26 and after["Gather"] == 0, (before, after)
    # what is left of Reshape/Transpose is the decode tail's (6 Transposes), not the backbone's 13 x 2 + 13
    assert after["Transpose"] == before["Transpose"] - 13 and after["Reshape"] == before["Reshape"] - 26
    _assert_same_outputs(graph, result.model, 160)


def test_graph_without_a_shuffle_is_left_alone(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
    graph = write_onnx(net, torch.zeros(1, 3, 16, 16), tmp_path / "plain.onnx", ("out",))
    result = fold_channel_shuffles(graph)
    assert result.model is None and "no" in result.reason
    assert result.record() == {"channel_shuffles_folded": 0, "why": result.reason}


def test_backbone_whose_outputs_are_shuffled_is_refused(backbone, tmp_path):
    """Without the neck the stage outputs are graph outputs: folding would reorder them, so nothing is folded."""
    torch.manual_seed(0)
    net = ShuffleNetV2("0.5x").eval()
    graph = write_onnx(net, torch.zeros(1, 3, 64, 64), tmp_path / "bare.onnx", ("c3", "c4", "c5"))
    result = fold_channel_shuffles(graph)
    assert result.model is None and "graph output" in result.reason, result.reason


def _shuffle_then_resize(resize_attrs: dict) -> onnx.ModelProto:
    """Concat(Conv a, Conv b) -> channel shuffle (channels a0, b0, a1, b1, ...) -> Resize -> Conv."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "wa": rng.standard_normal((4, 3, 1, 1)).astype(np.float32),
        "wb": rng.standard_normal((4, 3, 1, 1)).astype(np.float32),
        "wy": rng.standard_normal((2, 8, 1, 1)).astype(np.float32),
        "s1": np.array([1, 2, 4, 4, 4], np.int64), "s2": np.array([1, 8, 4, 4], np.int64),
        "roi": np.array([0, 0.25, 0, 0, 1, 0.75, 1, 1], np.float32),
        "scales": np.array([1, 1, 2, 2], np.float32)}.items()]
    nodes = [helper.make_node("Conv", ["input", "wa"], ["a"]), helper.make_node("Conv", ["input", "wb"], ["b"]),
             helper.make_node("Concat", ["a", "b"], ["ab"], axis=1),
             helper.make_node("Reshape", ["ab", "s1"], ["r1"]),
             helper.make_node("Transpose", ["r1"], ["t"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "s2"], ["shuffled"]),
             helper.make_node("Resize", ["shuffled", "roi", "scales"], ["up"], **resize_attrs),
             helper.make_node("Conv", ["up", "wy"], ["Y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_resize_passes_a_channel_order_only_when_it_samples_channels_apart():
    """A nearest-neighbour Resize keeps the folded (interleaved) channel order for the Conv after it;
    crop-and-resize, whose roi spans the channel axis in the ONNX spec, makes the fold refuse instead."""
    plain = _shuffle_then_resize({"mode": "nearest"})
    result = fold_channel_shuffles(plain)
    assert result.model is not None and result.shuffles == 1, result.reason
    assert "Transpose" not in {n.op_type for n in result.model.graph.node}
    _assert_same_outputs(plain, result.model, 4)
    cropped = fold_channel_shuffles(_shuffle_then_resize({"mode": "linear",
                                                          "coordinate_transformation_mode": "tf_crop_and_resize"}))
    assert cropped.model is None and "Gather" in cropped.reason, cropped.reason
