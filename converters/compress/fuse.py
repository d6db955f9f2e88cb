"""Fold BatchNorm into the convolution before it and collapse RepVGG blocks into one 3x3 conv.

Both are exact in eval mode (BN is then a per-channel affine map), so the fused model computes the
same function with fewer ops: what export runs on every model before tracing it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.backbones.repvgg import RepVGGBlock
from .hooks import run_with_hooks


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """BN in eval mode as y = scale * x + shift, per channel."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One conv (with bias) equal to ``bn(conv(x))`` with ``bn``'s running statistics."""
    scale, shift = _bn_scale_shift(bn)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                      dtype=conv.weight.dtype)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_(bias * scale + shift)
    return fused


def _branch_kernel_bias(block: RepVGGBlock) -> tuple[torch.Tensor, torch.Tensor]:
    """The single 3x3 kernel and bias equal to the sum of a RepVGG block's three branches."""
    dense = fuse_conv_bn(block.rbr_dense[0], block.rbr_dense[1])
    pointwise = fuse_conv_bn(block.rbr_1x1[0], block.rbr_1x1[1])
    kernel = dense.weight + F.pad(pointwise.weight, [1, 1, 1, 1])  # the 1x1 sits at the 3x3 centre
    bias = dense.bias + pointwise.bias
    if block.rbr_identity is not None:
        # identity as a 3x3 conv: 1 at the centre of channel i's own input, then the BN on top
        identity = torch.zeros_like(kernel)
        identity[torch.arange(block.in_channels), torch.arange(block.in_channels), 1, 1] = 1.0
        scale, shift = _bn_scale_shift(block.rbr_identity)
        kernel = kernel + identity * scale.reshape(-1, 1, 1, 1)
        bias = bias + shift
    return kernel, bias


def reparameterize_repvgg(model: nn.Module) -> int:
    """Replace every RepVGG block of ``model`` by conv3x3(+bias) -> act, as RepVGG's switch_to_deploy;
    returns how many blocks were collapsed."""
    blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, RepVGGBlock)]
    for name, block in blocks:
        dense = block.rbr_dense[0]
        conv = nn.Conv2d(dense.in_channels, dense.out_channels, 3, dense.stride, 1, bias=True,
                         dtype=dense.weight.dtype)
        kernel, bias = _branch_kernel_bias(block)
        with torch.no_grad():
            conv.weight.copy_(kernel)
            conv.bias.copy_(bias)
        _replace(model, name, nn.Sequential(conv, block.act))
    return len(blocks)


def conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv, bn) module names where the BatchNorm's input is the conv's output, found by running
    ``model`` once on ``example``: covers Sequential neighbours and attribute pairs alike.

    Modules run more than once are left out (their fused form would be shared by every call).
    """
    produced: dict[int, str] = {}  # id of a conv's output tensor -> conv name
    keep: list[torch.Tensor] = []  # keeps those tensors alive, so their ids stay unique
    calls: dict[str, int] = {}
    found: list[tuple[str, str]] = []

    def on_conv(name: str):
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            calls[name] = calls.get(name, 0) + 1
            produced[id(output)] = name
            keep.append(output)
        return hook

    def on_bn(name: str):
        def hook(module: nn.Module, args: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            conv = produced.get(id(args[0]))
            if conv is not None:
                found.append((conv, name))
        return hook

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(on_conv(name)))
        elif isinstance(module, nn.BatchNorm2d):
            handles.append(module.register_forward_pre_hook(on_bn(name)))
    run_with_hooks(model, [example], handles)
    return [(conv, bn) for conv, bn in found if calls[conv] == 1 and calls[bn] == 1]


def fuse_model(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Put ``model`` in eval mode, collapse its RepVGG blocks and fold each BatchNorm into the conv
    before it, in place. Returns the counts: ``{"repvgg_blocks": n, "conv_bn": m}``."""
    model.eval()
    repvgg = reparameterize_repvgg(model)
    pairs = conv_bn_pairs(model, example)
    for conv_name, bn_name in pairs:
        _replace(model, conv_name, fuse_conv_bn(model.get_submodule(conv_name), model.get_submodule(bn_name)))
        _replace(model, bn_name, nn.Identity())
    return {"repvgg_blocks": repvgg, "conv_bn": len(pairs)}


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
