"""Reading and editing a converted OpenVINO graph, for the int8 fp32-fallback search.

The search (``fasterseg.deploy.openvino``, ``fasterseg.deploy.fallback``) needs three things of
the graph: its convolutions under names that survive a new conversion (``conv_layers``), what
each costs when kept in fp32 (``conv_macs``), and a cheap estimate of the quantized model with
one convolution in fp32 (``fp32_variant``: its FakeQuantize bypassed, no new calibration).
Graph surgery only: nothing here converts, quantizes or compiles.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_CONV_TYPES = ("Convolution", "GroupConvolution")


def _convolutions(ov_model: Any) -> list[Any]:
    """The convolution ops of ``ov_model`` in graph order (what ``convN`` counts)."""
    return [op for op in ov_model.get_ordered_ops() if op.get_type_name() in _CONV_TYPES]


def conv_layers(ov_model: Any) -> list[dict[str, str]]:
    """Every convolution of ``ov_model`` in graph order: ``id`` (``convN``), ``node`` (the
    OpenVINO node name, what ``ignored_scope`` takes) and ``layer`` (the PyTorch module).

    The front end names a convolution with a BatchNorm folded into it after a global counter
    (``Multiply_9204``, another one at every conversion), so ``id`` (the position in graph
    order) is what identifies it from one conversion of the model to the next; ``layer`` is
    read from the first ``__module.*`` name at or after it (the folded BatchNorm, the ReLU).
    """
    return [{"id": f"conv{i}", "node": op.get_friendly_name(), "layer": _layer_of(op)}
            for i, op in enumerate(_convolutions(ov_model))]


def _layer_of(op: Any) -> str:
    """The PyTorch module ``op`` came from (``stem.0``), looked up a few ops downstream."""
    todo, seen = [op], 0
    while todo and seen < 8:
        node = todo.pop(0)
        seen += 1
        name = node.get_friendly_name()
        if name.startswith("__module."):
            module = name[len("__module."):].split("/", 1)[0]
            return module.removesuffix(".bn")  # the folded BatchNorm: its conv's block
        todo += [t.get_node() for out in node.outputs() for t in out.get_target_inputs()]
    return op.get_friendly_name()


def conv_macs(ov_model: Any) -> dict[str, int]:
    """MACs per image of each convolution (``convN`` ids): what keeping it in fp32 costs."""
    macs = {}
    for i, op in enumerate(_convolutions(ov_model)):
        w = [int(d) for d in op.get_input_partial_shape(1).to_shape()]
        out = [int(d) for d in op.get_output_partial_shape(0).to_shape()]
        if op.get_type_name() == "GroupConvolution":  # [G, O/G, I/G, kh, kw]
            w = [w[0] * w[1], *w[2:]]
        macs[f"conv{i}"] = int(np.prod(w)) * int(np.prod(out[2:]))
    return macs


def fp32_variant(q_model: Any, fp32_model: Any, node: str) -> Any:
    """A copy of the quantized ``q_model`` with convolution ``node`` in fp32: its input read
    past its FakeQuantize, its weights the fp32 ones of ``fp32_model`` (NNCF stores quantized
    weights as int8 constants and a dequantizing Multiply); every other range as calibrated.
    About what NNCF's ``ignored_scope`` gives, without quantizing again (a compile and a score
    instead of a whole ``nncf.quantize`` with its calibration), to rank the fallback's
    candidates."""
    from openvino import opset13 as ops

    m = q_model.clone()
    conv = next((op for op in m.get_ops() if op.get_friendly_name() == node), None)
    orig = next((op for op in fp32_model.get_ops() if op.get_friendly_name() == node), None)
    if conv is None or orig is None:
        return m
    src = conv.input(0).get_source_output().get_node()
    if src.get_type_name() == "FakeQuantize":
        conv.input(0).replace_source_output(src.input_value(0))
    weights = orig.input_value(1).get_node()
    if weights.get_type_name() == "Constant":
        const = ops.constant(np.array(weights.get_data(), copy=True))
        const.set_friendly_name(f"{node}/fp32_weights")
        conv.input(1).replace_source_output(const.output(0))
    m.validate_nodes_and_infer_types()
    return m
