"""The TFLite model's input and outputs renamed to the ONNX artifact's names, shapes checked.

onnx2tf and the TFLite converter name tensors their own way; the manifest lists the ONNX output
names in the family's role order, so every TFLite artifact carries those names (found through the
model's signature, by shape otherwise) and the ONNX input name (NHWC).
"""

from __future__ import annotations

from edge_runtime.errors import EdgeRuntimeError

from .onnx2tf_run import TfGraph


def rename_to_onnx_names(content: bytes, graph: TfGraph, role_order: list[str]) -> tuple[bytes, list[str]]:
    """Rename the model's input/output tensors to the ONNX names (found through the signature) and
    check the output shapes; returns the new flatbuffer and the output names in role order."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(content)
    sg = model.subgraphs[0]
    renames: dict[int, str] = {}
    if model.signatureDefs:
        sig = model.signatureDefs[0]
        for item in sig.outputs:
            renames[int(item.tensorIndex)] = item.name.decode() if isinstance(item.name, bytes) else item.name
        for item in sig.inputs:
            renames[int(item.tensorIndex)] = graph.input_name
    if sorted(renames.get(int(t), "") for t in sg.outputs) != sorted(graph.output_shapes):
        # no usable signature: match by shape (unique shapes) in ONNX output order
        by_shape: dict[tuple[int, ...], list[str]] = {}
        for name, shape in graph.output_shapes.items():
            by_shape.setdefault(tuple(shape), []).append(name)
        for t in sg.outputs:
            options = by_shape.get(tuple(int(d) for d in sg.tensors[t].shape), [])
            if not options:
                raise EdgeRuntimeError(f"TFLite output {sg.tensors[t].name!r} {list(sg.tensors[t].shape)} matches "
                                       f"no ONNX output {graph.output_shapes}")
            renames[int(t)] = options.pop(0)
        renames[int(sg.inputs[0])] = graph.input_name
    taken = set(renames.values())
    for i, tensor in enumerate(sg.tensors):
        if i not in renames and tensor.name.decode() in taken:
            tensor.name = tensor.name + b"_inner"
    for index, name in renames.items():
        sg.tensors[index].name = name.encode()
        if index in {int(t) for t in sg.outputs}:
            want = tuple(graph.output_shapes[name])
            have = tuple(int(d) for d in sg.tensors[index].shape)
            if have != want:
                raise EdgeRuntimeError(f"TFLite output {name} has shape {list(have)}, ONNX has {list(want)}")
    missing = [n for n in role_order if n not in renames.values()]
    if missing:
        raise EdgeRuntimeError(f"TFLite model lacks outputs {missing}")
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), list(role_order)
