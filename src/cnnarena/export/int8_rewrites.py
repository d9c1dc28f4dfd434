"""Rewrites of a float ONNX graph before ONNX Runtime quantizes it, and of the quantized graph after: each computes
the same function (or the same one more precisely), and each lets the quantized graph run faster or more accurately
in ONNX Runtime's CPU kernels.

- `relu_before_max_pool`: the quantizer removes a ReLU by narrowing the range of the op before it, which is right
  after a convolution and wrong after a max pooling (whose range is its input's).
- `flatten_channels_last`: ONNX Runtime runs int8 convolutions channels-last and puts a transpose back to
  channels-first before a Flatten; flattening channels-last, with the next Gemm's weights permuted to match, lets
  that transpose cancel (in float, ONNX Runtime folds it into its own layout change).
- `float_stem`: the first convolution when it reads the image's few channels, with the activation and pooling after
  it. ONNX Runtime's int8 convolution runs image by image, and with a kernel of 9 to 27 values per output it is
  several times slower than the float one; left in float, the quantizer starts after it.
- `float_logits` (after quantizing): the classifier's QGemm writes its float result itself instead of rounding it to
  256 levels for a DequantizeLinear to expand: one op fewer, and logits at the accumulator's precision.
"""

from __future__ import annotations

import numpy as np

STEM_MAX_CHANNELS = 4  # a convolution reading this many channels or fewer reads the image
_STEM_FOLLOWERS = ("Relu", "Clip", "MaxPool")


def relu_before_max_pool(model, keep: frozenset[str] = frozenset()) -> int:
    """Rewrite MaxPool -> Relu pairs (the pooling's only consumer is the ReLU) as Relu -> MaxPool, in place; the
    number of pairs moved. relu(maxpool(x)) == maxpool(relu(x)): both are monotone and act per element or per
    window. Pairs whose pooling is named in `keep` stay. The moved tensor's stale shape is dropped from value_info
    (shape inference runs again)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    moved: set[str] = set()
    for i, pool in enumerate(graph.node):
        if pool.op_type != "MaxPool" or pool.name in keep or len(pool.output) != 1 or pool.output[0] in outputs:
            continue
        users = _users(graph, pool.output[0])
        if len(users) != 1 or graph.node[users[0]].op_type != "Relu":
            continue
        relu = graph.node[users[0]]
        x, mid, y = pool.input[0], pool.output[0], relu.output[0]
        relu.input[0], relu.output[0], pool.input[0], pool.output[0] = x, mid, mid, y
        first, second = type(pool)(), type(pool)()
        first.CopyFrom(relu)
        second.CopyFrom(pool)
        graph.node[i].CopyFrom(first)  # the ReLU takes the pooling's place, so the graph stays in order
        graph.node[users[0]].CopyFrom(second)
        moved.add(mid)
    _drop_shapes(graph, moved)
    return len(moved)


def flatten_channels_last(model) -> int:
    """Rewrite Flatten(x) -> Gemm, x of shape N×C×H×W with H·W > 1, as Flatten(Transpose(x, N×H×W×C)) -> Gemm
    with the Gemm's weight columns permuted from (c, h, w) to (h, w, c) order, in place; the number rewritten. x's
    shape comes from ONNX shape inference: a Flatten whose C, H or W it cannot tell stays, as does one of the
    graph's input."""
    from onnx import helper, numpy_helper, shape_inference

    inferred = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    graph = model.graph
    weights = {w.name: w for w in graph.initializer}
    outputs = {o.name for o in graph.output}
    produced = {name for node in graph.node for name in node.output}
    done = 0
    for i in reversed(range(len(graph.node))):  # backwards: inserting a node leaves the ones before in place
        flat = graph.node[i]
        # a Flatten of the graph's input (dense layers on pixels) follows no channels-last convolution
        shape = shapes.get(flat.input[0]) if flat.op_type == "Flatten" and flat.input[0] in produced else None
        axis = _attr(flat, "axis", 1)
        if shape is None or len(shape) != 4 or axis != 1 or 0 in shape[1:] or shape[2] * shape[3] == 1:
            continue
        users = _users(graph, flat.output[0])
        gemm = graph.node[users[0]] if len(users) == 1 and flat.output[0] not in outputs else None
        if gemm is None or gemm.op_type != "Gemm" or gemm.input[0] != flat.output[0] or gemm.input[1] not in weights:
            continue
        if len(_users(graph, gemm.input[1])) != 1:  # a weight another node reads too keeps its order
            continue
        if _attr(gemm, "transA", 0):
            continue
        trans_b = _attr(gemm, "transB", 0)
        _, c, h, w = shape
        b = numpy_helper.to_array(weights[gemm.input[1]])
        rows = b if trans_b else b.T  # one row of c·h·w weights per output
        rows = rows.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(rows.shape[0], -1)
        weights[gemm.input[1]].CopyFrom(numpy_helper.from_array(
            np.ascontiguousarray(rows if trans_b else rows.T), gemm.input[1]))
        x, nhwc = flat.input[0], f"{flat.output[0]}_channels_last"  # named after the Flatten's own output: unique
        flat.input[0] = nhwc
        graph.node.insert(i, helper.make_node("Transpose", [x], [nhwc], perm=[0, 2, 3, 1], name=nhwc))
        done += 1
    return done


def float_stem(model) -> list[str]:
    """The names of the first convolution, when it reads at most STEM_MAX_CHANNELS channels, and of the chain of
    ReLU/Clip/MaxPool nodes that follows it (each the only consumer of the one before); [] when there is none, or
    when a node has no name (the quantizer excludes nodes by name)."""
    graph = model.graph
    weights = {w.name: w for w in graph.initializer}
    conv = next((n for n in graph.node if n.op_type == "Conv"), None)
    if conv is None or conv.input[1] not in weights:
        return []
    group = _attr(conv, "group", 1)
    if weights[conv.input[1]].dims[1] * group > STEM_MAX_CHANNELS:
        return []
    stem, last = [conv.name], conv
    while True:
        users = _users(graph, last.output[0])
        if len(users) != 1 or graph.node[users[0]].op_type not in _STEM_FOLLOWERS:
            return stem if all(stem) else []
        last = graph.node[users[0]]
        stem.append(last.name)


def float_logits(model) -> int:
    """Each QGemm -> DequantizeLinear pair that ends at a graph output, the DequantizeLinear reading the QGemm's own
    output scale and zero point, becomes one QGemm without those two inputs (com.microsoft QGemm then outputs float:
    the same value before rounding), in place; the number of pairs fused. The scales and zero points left unused
    are removed."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    fused, dropped = 0, set()
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] in outputs]:
        producers = [n for n in graph.node if dq.input[0] in n.output]
        if len(producers) != 1 or len(_users(graph, dq.input[0])) != 1 or dq.input[0] in outputs:
            continue
        gemm = producers[0]
        if gemm.op_type != "QGemm" or gemm.domain != "com.microsoft" or list(gemm.input[7:9]) != list(dq.input[1:3]):
            continue
        rounded = dq.input[0]
        dropped.update(dq.input[1:3])
        del gemm.input[7:]
        gemm.output[0] = dq.output[0]
        graph.node.remove(dq)
        _drop_shapes(graph, {rounded})
        fused += 1
    unused = dropped - {name for node in graph.node for name in node.input} - outputs - {i.name for i in graph.input}
    kept = [w for w in graph.initializer if w.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return fused


def _attr(node, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def _users(graph, tensor: str) -> list[int]:
    return [k for k, node in enumerate(graph.node) if tensor in node.input]


def _drop_shapes(graph, names: set[str]) -> None:
    kept = [v for v in graph.value_info if v.name not in names]
    del graph.value_info[:]
    graph.value_info.extend(kept)
