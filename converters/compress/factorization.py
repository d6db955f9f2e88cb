"""Low-rank factorisation of one layer: a dense layer becomes a chain of thinner ones.

- ``svd``: a 1x1 convolution or Linear, W (out x in) ~ (U_r S_r) V_r^T, becomes in -> r -> out
  (first layer V_r^T without bias, then U_r S_r with the original bias).
- ``tucker2``: a k x k convolution (groups 1), HOSVD on its output and input modes, becomes
  1x1 in -> r_in, k x k r_in -> r_out (stride, padding, dilation of the original), 1x1 r_out -> out.
  The mode bases are nested (rank r's basis holds rank r-1's), so the error never grows with rank.

Depthwise and other grouped convolutions have no channel mixing to factor and are skipped.

The plan ``{module name: {"kind": "svd", "rank": r} | {"kind": "tucker2", "ranks": [r_out, r_in]}}``
is what a compressed checkpoint stores (``converters.compress.compressed_checkpoint``);
:func:`apply_factorization` replays it. Which layers are worth factorising is measured by
``converters.compress.lowrank``; this module only rewrites layers (torch alone), so loading a
checkpoint needs nothing of the measuring side (ONNX export, backends).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

Plan = dict[str, dict[str, Any]]


def _svd_weights(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(out x r, r x in) with their product the best rank-``rank`` approximation of ``matrix``;
    the singular values are split as their square root on each side, so both factors have similar
    ranges (what INT8 quantisation of the pair wants)."""
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(matrix.dtype), (root[:, None] * vh[:rank]).to(matrix.dtype)


def svd_pointwise(layer: nn.Conv2d | nn.Linear, rank: int) -> nn.Sequential:
    """A 1x1 convolution (groups 1) or Linear as two of rank ``rank``: in -> rank -> out."""
    weight = layer.weight.detach()
    out_features, in_features = weight.shape[:2]
    if isinstance(layer, nn.Linear):
        first: nn.Module = nn.Linear(in_features, rank, bias=False)
        second: nn.Module = nn.Linear(rank, out_features, bias=layer.bias is not None)
    else:
        _check_conv(layer, pointwise=True)
        # stride and padding on the first conv: it has no bias, so padded zeros stay zeros
        first = nn.Conv2d(in_features, rank, 1, layer.stride, layer.padding, bias=False)
        second = nn.Conv2d(rank, out_features, 1, bias=layer.bias is not None)
    left, right = _svd_weights(weight.reshape(out_features, in_features), rank)
    with torch.no_grad():
        first.weight.copy_(right.reshape(first.weight.shape))
        second.weight.copy_(left.reshape(second.weight.shape))
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second).to(weight.dtype)


def _mode_basis(weight: torch.Tensor, mode: int, rank: int) -> torch.Tensor:
    """Leading ``rank`` left singular vectors of ``weight`` unfolded along ``mode`` (HOSVD)."""
    unfolded = weight.movedim(mode, 0).reshape(weight.shape[mode], -1)
    return torch.linalg.svd(unfolded, full_matrices=False)[0][:, :rank]


def tucker2(conv: nn.Conv2d, ranks: tuple[int, int]) -> nn.Sequential:
    """A k x k convolution (groups 1) as 1x1 (in -> r_in), k x k (r_in -> r_out), 1x1 (r_out -> out);
    ``ranks`` = (r_out, r_in)."""
    _check_conv(conv, pointwise=False)
    r_out, r_in = ranks
    weight = conv.weight.detach().double()
    u_out, u_in = _mode_basis(weight, 0, r_out), _mode_basis(weight, 1, r_in)
    core = torch.einsum("oihw,or,is->rshw", weight, u_out, u_in)
    first = nn.Conv2d(conv.in_channels, r_in, 1, bias=False)
    middle = nn.Conv2d(r_in, r_out, conv.kernel_size, conv.stride, conv.padding, conv.dilation, bias=False)
    last = nn.Conv2d(r_out, conv.out_channels, 1, bias=conv.bias is not None)
    dtype = conv.weight.dtype
    with torch.no_grad():
        first.weight.copy_(u_in.T.reshape(first.weight.shape).to(dtype))
        middle.weight.copy_(core.to(dtype))
        last.weight.copy_(u_out.reshape(last.weight.shape).to(dtype))
        if conv.bias is not None:
            last.bias.copy_(conv.bias)
    return nn.Sequential(first, middle, last).to(dtype)


def _check_conv(conv: nn.Conv2d, pointwise: bool) -> None:
    if conv.groups != 1 or conv.padding_mode != "zeros" or (conv.kernel_size == (1, 1)) != pointwise:
        raise ValueError(f"cannot factorise {conv} as {'svd' if pointwise else 'tucker2'}: needs groups 1, "
                         f"zero padding and a {'1x1' if pointwise else 'k x k (k > 1)'} kernel")


def factorizable(module: nn.Module) -> str | None:
    """The factorisation that applies to ``module`` ("svd", "tucker2"), None when none does."""
    if isinstance(module, nn.Linear):
        return "svd"
    if isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros":
        return "svd" if module.kernel_size == (1, 1) else "tucker2"
    return None


def factorized_layer(module: nn.Module, entry: dict[str, Any]) -> nn.Sequential:
    """``module`` factorised as a plan ``entry`` says, weights decomposed from its current ones."""
    kind = entry.get("kind")
    if kind != factorizable(module):
        raise ValueError(f"plan entry {entry} does not fit {module} (it takes {factorizable(module)})")
    if kind == "svd":
        return svd_pointwise(module, int(entry["rank"]))
    r_out, r_in = (int(r) for r in entry["ranks"])
    return tucker2(module, (r_out, r_in))


def apply_factorization(model: nn.Module, plan: Plan) -> None:
    """Replace each module the plan names by its factorised Sequential, in place.

    The factors are decomposed from the module's current weights: on a trained model that is the
    factorisation itself, on a freshly built one (loading a compressed checkpoint) only the shapes
    matter, the stored weights overwrite them.
    """
    for name, entry in plan.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"factorisation plan names {name!r}, which the model does not have") from None
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, factorized_layer(module, entry))
