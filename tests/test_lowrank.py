"""Low-rank factorisation (converters.compress.factorization, .lowrank): exactness at full rank, error against rank,
the measured plan, and a factorised demo-shapes checkpoint through load_model and export_package."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
from torch import nn  # noqa: E402

from converters.compress.factorization import apply_factorization, svd_pointwise, tucker2  # noqa: E402
from converters.compress.lowrank import layer_inputs, layer_macs, plan_factorization  # noqa: E402
from converters.models import get_spec  # noqa: E402

# the trained demo model's layers: their spectra are real, unlike a random init's flat ones
PLAN = {"backbone.first_conv.0": {"kind": "tucker2", "ranks": [12, 3]},
        "fpn.conv1x1_2.0": {"kind": "svd", "rank": 28},
        "fpn.cls_head_2.block.3": {"kind": "svd", "rank": 18},
        "output_cls_layers": {"kind": "svd", "rank": 4}}


@pytest.fixture(scope="module")
def demo_model() -> nn.Module:
    from converters.checkpoints import load_model

    torch.set_num_threads(1)
    spec = get_spec("demo-shapes")
    return load_model(spec, spec.weights)[0]


def _tucker_kernel(seq: nn.Sequential) -> torch.Tensor:
    """The k x k kernel the three convolutions of a Tucker-2 factorisation add up to."""
    first, core, last = (m.weight.detach().double() for m in seq)
    return torch.einsum("or,rshw,si->oihw", last[:, :, 0, 0], core, first[:, :, 0, 0])


def test_svd_full_rank_reproduces_conv_and_linear(demo_model):
    """In float64: in float32 the two products round differently from one (measured 1.2e-5 on this
    layer's outputs of magnitude ~10), which says nothing about the factorisation."""
    import copy

    conv = copy.deepcopy(demo_model.get_submodule("fpn.conv1x1_2.0")).double()  # 288 -> 72, no bias
    x = torch.randn(2, 288, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        diff = (svd_pointwise(conv, 72)(x) - conv(x)).abs().max().item()
    assert diff < 1e-5
    linear = nn.Linear(40, 24).double()
    v = torch.randn(5, 40, dtype=torch.float64)
    with torch.no_grad():
        assert (svd_pointwise(linear, 24)(v) - linear(v)).abs().max().item() < 1e-5


def test_svd_error_falls_with_rank(demo_model):
    conv = demo_model.get_submodule("fpn.conv1x1_2.0")
    x = torch.randn(2, 288, 12, 12)
    with torch.no_grad():
        y = conv(x)
        errors = [float((svd_pointwise(conv, r)(x) - y).norm() / y.norm()) for r in range(1, 73)]
    assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 0.2 and errors[-1] < 1e-5


def test_tucker2_full_rank_exact_and_error_falls_with_rank():
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 48, 3, stride=2, padding=1, bias=True)
    x = torch.randn(1, 32, 20, 20)
    full = tucker2(conv, (48, 32))
    with torch.no_grad():
        assert (full(x) - conv(x)).abs().max().item() < 1e-5
    weight = conv.weight.detach().double()
    errors = [float((_tucker_kernel(tucker2(conv, (round(f * 48), round(f * 32)))) - weight).norm() / weight.norm())
              for f in np.linspace(0.125, 1.0, 8)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-6


def test_macs_of_the_factorisations():
    conv = nn.Conv2d(64, 32, 3, stride=2, padding=1)
    shapes = [(1, 64, 16, 16)]
    assert layer_macs(conv, None, shapes) == 8 * 8 * 32 * 64 * 9
    assert layer_macs(conv, {"kind": "tucker2", "ranks": [8, 16]}, shapes) == 16 * 16 * 64 * 16 + 64 * (16 * 8 * 9 + 8 * 32)
    pointwise = nn.Conv2d(64, 32, 1)
    assert layer_macs(pointwise, {"kind": "svd", "rank": 10}, shapes * 2) == 2 * 256 * 10 * 96


def test_plan_measures_each_factorisable_layer():
    """A real (short) measurement: depthwise is skipped, every other layer reported with the MACs its
    rank keeps, and exactly the kept ones make the plan."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1, groups=64),
                          nn.Conv2d(64, 64, 1), nn.Conv2d(64, 4, 1)).eval()
    plan, reports = plan_factorization(model, torch.randn(2, 16, 24, 24), ratio=0.5, max_error=10.0,
                                       rounds=3, inner=2)
    assert [r.name for r in reports] == ["0", "3", "4"]
    for r in reports:
        assert (r.name in plan) == r.kept
        assert r.macs_after <= 0.5 * r.macs_before and set(r.times_ms) == {"onnx"}
        assert all(t > 0 for t in r.times_ms["onnx"]) and r.rel_error is not None
    assert reports[1].entry == {"kind": "svd", "rank": 16} and reports[0].kind == "tucker2"
    assert reports[2].entry == {"kind": "svd", "rank": 1}  # 64 -> 4: rank 2 needs 136 / 256 of the MACs


def test_plan_entry_must_fit_the_module(demo_model):
    model = get_spec("demo-shapes").build(5)
    with pytest.raises(ValueError, match="does not fit"):
        apply_factorization(model, {"backbone.stage2.0.branch_main.3": {"kind": "svd", "rank": 4}})  # depthwise
    with pytest.raises(ValueError, match="does not have"):
        apply_factorization(model, {"fpn.nothing": {"kind": "svd", "rank": 4}})


def test_factorised_checkpoint_loads_and_exports(demo_model, tmp_path):
    import copy

    import onnxruntime as ort

    from converters.checkpoints import load_model
    from converters.compress.compressed_checkpoint import save_compressed
    from converters.export_onnx import export_package

    model = copy.deepcopy(demo_model)
    apply_factorization(model, PLAN)
    assert isinstance(model.get_submodule("backbone.first_conv.0"), nn.Sequential)
    path = save_compressed(model, tmp_path / "small.ckpt", "demo-shapes", 5, factorized=PLAN)
    loaded, num_classes = load_model(get_spec("demo-shapes"), path)
    assert num_classes == 5
    x = torch.randn(1, 3, 192, 192)
    with torch.no_grad():
        want, have, dense = model(x), loaded(x), demo_model(x)
    assert all(torch.equal(a, b) for a, b in zip(want, have))
    # the factorised model is a different one (ranks below full), yet close to the dense one
    cos = [float(nn.functional.cosine_similarity(a.flatten(), b.flatten(), 0)) for a, b in zip(want, dense)]
    assert min(cos) > 0.9 and max(float((a - b).abs().max()) for a, b in zip(want, dense)) > 1e-3

    manifest = export_package("demo-shapes", path, tmp_path / "pkg")
    art = manifest.artifact("onnx", "fp32")
    assert art.extra["parity_vs_torch"]["max_abs_diff"] < 1e-4
    deploy = get_spec("demo-shapes").deploy(loaded).eval()
    session = ort.InferenceSession(str(manifest.artifact_path(art)), providers=["CPUExecutionProvider"])
    got = session.run(list(art.outputs), {"input": x.numpy()})
    with torch.no_grad():
        ref = [t.numpy() for t in deploy(x)]
    assert max(float(np.abs(a - b).max()) for a, b in zip(got, ref)) < 1e-4
    # the graph's MACs drop by exactly what the plan's layers save
    shapes = {name: [tuple(t.shape) for t in calls] for name, calls in layer_inputs(demo_model, x).items()}
    saved = sum(layer_macs(demo_model.get_submodule(n), None, shapes[n]) - layer_macs(
        demo_model.get_submodule(n), e, shapes[n]) for n, e in PLAN.items())
    dense = export_package("demo-shapes", None, tmp_path / "dense").artifact("onnx", "fp32")
    assert dense.extra["macs"] - art.extra["macs"] == saved > 0


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_layer_timing_runs_the_layer_through_the_backends_timing_runner(backend, tmp_path):
    """The runner layer timing uses (``Backend.timing_runner``: outputs bound once) runs the exported
    layer, and the backend's own ``run`` still gives torch's result afterwards."""
    pytest.importorskip({"onnx": "onnxruntime", "openvino": "openvino"}[backend])
    from converters.compress.lowrank import _backend_runner
    from edge_runtime.backends import open_backend

    layer = torch.nn.Conv2d(8, 16, 1)
    runner = _backend_runner(layer, (1, 8, 12, 12), backend, tmp_path, "conv", 1)
    for _ in range(3):
        runner()
    x = torch.randn(1, 8, 12, 12)
    got = open_backend(tmp_path / "conv.onnx", backend, 1).run({"input": x.numpy()})
    with torch.no_grad():
        assert np.abs(next(iter(got.values())) - layer(x).numpy()).max() < 1e-4
