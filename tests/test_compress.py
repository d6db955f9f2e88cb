"""Channel pruning, fine-tuning and distillation (converters.compress.prune / train / distill), on the
bundled demo model and a NanoDet-Plus-m (random weights, or the real checkpoint when the shared
fixtures are there). Accuracy and latency are measured by bench/compress.py, not here."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="compression runs on the torch model (host side)")
pytest.importorskip("torch_pruning", reason="channel pruning needs torch-pruning (the convert extra)")

from torch import nn  # noqa: E402

from converters.checkpoints import load_model  # noqa: E402
from converters.compress.compressed_checkpoint import save_compressed  # noqa: E402
from converters.compress.data import augmented_batch, load_training_data, read_training_folder  # noqa: E402
from converters.compress.families import distillation_loss  # noqa: E402
from converters.compress.prune import output_layers, prune_channels, sparsify_magnitude  # noqa: E402
from converters.compress.train import fine_tune, task_loss  # noqa: E402
from converters.models import get_spec  # noqa: E402

NANODET_SIZE = 128  # a multiple of NanoDet-Plus's largest stride (64): small and still valid


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def demo() -> nn.Module:
    spec = get_spec("demo-shapes")
    return load_model(spec, spec.weights)[0]


@pytest.fixture(scope="module")
def demo_data():
    return load_training_data("demo-shapes", "demo", count=32, workers=1, progress=False)


def random_nanodet(seed: int = 0) -> nn.Module:
    """NanoDet-Plus-m with random weights and BatchNorm statistics (so a zeroed channel is not a no-op)."""
    torch.manual_seed(seed)
    model = get_spec("nanodet-plus-m").build(80).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def run(model: nn.Module, size: int) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(model(torch.from_numpy(np.random.default_rng(1).standard_normal((2, 3, size, size))
                                           .astype(np.float32))))


def test_pruning_30_percent_shrinks_the_demo_model_and_keeps_its_outputs(demo):
    pruned, summary = prune_channels(demo, "demo-shapes", 0.3, "l1")
    # the ShuffleNetV2 block boundaries and the output convs stay, so fewer than 30% of the weights go
    assert 0.6 < summary.params_after / summary.params_before < 0.75, summary
    assert summary.params_after == sum(p.numel() for p in pruned.parameters())
    assert summary.params_before == sum(p.numel() for p in demo.parameters())  # the original is untouched
    assert [o.shape for o in run(pruned, 192)] == [o.shape for o in run(demo, 192)]
    assert not any(name.startswith("output_") for name in summary.channels)
    for name, (before, after) in summary.channels.items():  # 30% off, rounded to multiples of 8
        assert 0.5 * before <= after < before and after % 8 == 0, (name, before, after)
    assert all(a.out_channels == b.out_channels for a, b in zip(output_layers(pruned, "demo-shapes"),
                                                                output_layers(demo, "demo-shapes")))


@pytest.mark.parametrize("model_name,method", [("demo-shapes", "l1"), ("demo-shapes", "taylor"),
                                               ("nanodet-plus-m", "group")])
def test_pruned_model_is_the_original_with_exactly_the_removed_channels_zeroed(model_name, method, demo, demo_data):
    """Checks the channel index mapping through channel split / shuffle, concat, GhostPAN and
    depthwise layers: zeroing the removed channels in the original (conv filters, BN scale and shift)
    must give the pruned model's outputs."""
    original, size = (demo, 192) if model_name == "demo-shapes" else (random_nanodet(), NANODET_SIZE)
    pruned, summary = prune_channels(original, model_name, 0.3, method, data=demo_data, imgsz=size)
    zeroed = copy.deepcopy(original)
    with torch.no_grad():
        for name, channels in summary.removed.items():
            module = zeroed.get_submodule(name)
            module.weight[channels] = 0
            if module.bias is not None:
                module.bias[channels] = 0
    expected, got, unpruned = run(zeroed, size), run(pruned, size), run(original, size)
    for e, g, u in zip(expected, got, unpruned):
        assert torch.allclose(e, g, atol=1e-4), float((e - g).abs().max())
    assert max(float((e - u).abs().max()) for e, u in zip(expected, unpruned)) > 1e-2  # zeroing did something


def _export_round_trip(model: nn.Module, model_name: str, num_classes: int, size: int, tmp_path) -> None:
    from converters.export_onnx import export_package

    pruned, summary = prune_channels(model, model_name, 0.3, "l1", imgsz=size)
    ckpt = save_compressed(pruned, tmp_path / "pruned.ckpt", model_name, num_classes,
                           history=[summary.history_entry()])
    reloaded, classes = load_model(get_spec(model_name), ckpt)
    assert classes == num_classes
    for a, b in zip(run(reloaded, size), run(pruned, size)):
        assert torch.equal(a, b)
    manifest = export_package(model_name, ckpt, tmp_path / "package", imgsz=size)
    parity = manifest.artifacts[0].extra["parity_vs_torch"]
    assert parity["max_abs_diff"] < 1e-3 and parity["cosine"] > 0.9999, parity
    assert manifest.input.shape == (1, 3, size, size)
    if "params" in manifest.artifacts[0].extra:  # the exported graph carries the pruned weights
        assert manifest.artifacts[0].extra["params"] < 0.8 * summary.params_before


def test_pruned_demo_model_round_trips_through_a_compressed_checkpoint_and_export(demo, tmp_path):
    _export_round_trip(demo, "demo-shapes", 5, 192, tmp_path)


def test_pruned_nanodet_round_trips_through_a_compressed_checkpoint_and_export(tmp_path):
    _export_round_trip(random_nanodet(), "nanodet-plus-m", 80, NANODET_SIZE, tmp_path)


def test_pruned_real_nanodet_checkpoint_exports(fixtures, tmp_path):
    weights = fixtures("weights/nanodet-plus-m/nanodet-plus-m_coco.ckpt")
    model, num_classes = load_model(get_spec("nanodet-plus-m"), weights)
    _export_round_trip(model, "nanodet-plus-m", num_classes, NANODET_SIZE, tmp_path)


def test_taylor_pruning_needs_a_task_loss():
    with pytest.raises(ValueError, match="task loss"):
        prune_channels(random_nanodet(), "nanodet-plus-m", 0.3, "taylor",
                       data=load_training_data("nanodet-plus-m", "demo", NANODET_SIZE, count=2, workers=1,
                                               progress=False))


def test_short_fine_tune_lowers_the_pruned_models_task_loss(demo, demo_data):
    student, _ = prune_channels(demo, "demo-shapes", 0.5, "l1")
    x, targets = augmented_batch(demo_data, np.arange(16), np.random.default_rng(5))
    loss = task_loss("demo-shapes")
    with torch.no_grad():
        before = float(loss(student(x), targets)[0])
    summary = fine_tune(student, "demo-shapes", demo_data, steps=20, lr=2e-3, batch=8, progress=False)
    with torch.no_grad():
        after = float(loss(student.eval()(x), targets)[0])
    assert summary["last_loss"] < summary["first_loss"] and after < 0.9 * before, (before, after, summary)
    assert summary["loss"] == "task loss"


def test_distillation_loss_is_zero_for_the_teacher_itself_and_positive_otherwise(demo):
    nanodet = random_nanodet()
    for family, model, other, size in (("yolo-fastestv2", demo, prune_channels(demo, "demo-shapes", 0.5)[0], 192),
                                       ("nanodet", nanodet, random_nanodet(seed=1), NANODET_SIZE)):
        outputs = run(model, size)
        same, parts = distillation_loss(family, outputs, outputs, temperature=2.0)
        assert abs(float(same)) < 1e-5 and all(abs(v) < 1e-5 for v in parts.values()), parts
        different, parts = distillation_loss(family, run(other, size), outputs, temperature=2.0)
        assert float(different) > 1e-2 and all(v > 0 for v in parts.values()), parts


def test_nanodet_fine_tunes_by_distillation_alone():
    teacher = random_nanodet()
    student, _ = prune_channels(teacher, "nanodet-plus-m", 0.5, "l1", imgsz=NANODET_SIZE)
    data = load_training_data("nanodet-plus-m", "demo", NANODET_SIZE, count=8, workers=1, progress=False)
    with pytest.raises(ValueError, match="needs a teacher"):
        fine_tune(copy.deepcopy(student), "nanodet-plus-m", data, steps=1, progress=False)
    summary = fine_tune(student, "nanodet-plus-m", data, steps=12, lr=5e-3, batch=4, teacher=teacher, progress=False)
    assert summary["loss"].startswith("distillation only") and "labels unused" in summary["loss"]
    assert set(summary["mean_parts"]) == {"kd_cls", "kd_box"}
    assert summary["last_loss"] < 0.8 * summary["first_loss"], summary


def test_unstructured_sparsity_report_is_consistent(demo):
    sparse, report = sparsify_magnitude(demo, 0.5)
    convs = [m for m in sparse.modules() if isinstance(m, nn.Conv2d)]
    assert report["prunable_weights"] == sum(m.weight.numel() for m in convs)
    zeros = sum(int((m.weight == 0).sum()) for m in convs)
    assert zeros == pytest.approx(0.5 * report["prunable_weights"], rel=0.01)
    assert report["zero_fraction"] == pytest.approx(zeros / report["weights"], abs=0.01)
    assert 0.4 < report["zero_fraction"] < 0.5
    assert report["bytes_sparse"]["raw"] == report["bytes_dense"]["raw"] == 4 * report["weights"]
    assert report["bytes_sparse"]["gzip"] < 0.75 * report["bytes_dense"]["gzip"]
    assert "no backend" in report["note"]
    assert [o.shape for o in run(sparse, 192)] == [o.shape for o in run(demo, 192)]  # same dense shapes


def test_training_folder_gives_the_same_samples_as_the_generator(tmp_path):
    from converters.demo_data import write_split

    labels = write_split(tmp_path, "train", 4, progress=False)
    folder = read_training_folder("demo-shapes", labels, 192, class_names=get_spec("demo-shapes").class_names,
                                  progress=False)
    generated = load_training_data("demo-shapes", "demo", 192, count=4, workers=1, progress=False)
    assert np.array_equal(folder.images, generated.images)
    for a, b in zip(folder.labels, generated.labels):
        assert np.allclose(a, b, atol=1e-6)
    assert not folder.vertical_flips and generated.vertical_flips
