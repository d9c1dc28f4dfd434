"""Where the batch-1 time of an int8 and a float ONNX export goes, node by node, in ONNX Runtime: the graph ONNX
Runtime optimizes each model into is cut after each of its nodes, and each cut graph is timed (optimizations off,
so it runs as the whole graph's prefix does); a node's cost is its cut's time less the cut before it. Each model
runs with the thread count its int8 card chose for batch 1. The first cut's time includes a session run's own
overhead (input and output copies, ~4 µs here), which every model pays once. The differences assume a chain of
nodes (as the custom CNNs are: a cut keeps every node before it) and carry each cut's own output copy; they move by
about ±2 µs between runs, so a node below that is noise (some come out negative).

  python -m benchmarks.int8_node_costs                  # simple-2conv: trains it first (3 epochs, ~1 minute)
  python -m benchmarks.int8_node_costs --runs DIR ...   # finished runs

Issue 21 asks int8 for 1.5x the float images/s at batch 1; this shows what stands in the way where it falls short.
Results: benchmarks/results/int8_node_costs.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import write_result
from benchmarks.int8_export import RECIPES, WORK, cli

ROOT = Path(__file__).resolve().parents[1]
SECONDS_PER_CUT = 0.4  # per round; the best of ROUNDS kept
ROUNDS = 5


def optimized_graph(path: Path, threads: int, out: Path):
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3  # the warning that NCHWc graphs suit this CPU only: they run only here
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(out))


def cut_session(model, upto: int, threads: int):
    """A session of `model`'s nodes up to and including node `upto`, its first output the graph's output: the
    output's element type is whichever ONNX Runtime accepts (the optimized graph keeps no types for its own ops)."""
    import onnx
    import onnxruntime as ort

    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    del cut.graph.node[upto + 1:]
    del cut.graph.output[:]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    name = model.graph.node[upto].output[0]
    for elem in (onnx.TensorProto.FLOAT, onnx.TensorProto.UINT8, onnx.TensorProto.INT8, onnx.TensorProto.INT32):
        del cut.graph.output[:]
        cut.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
        try:
            return ort.InferenceSession(cut.SerializeToString(), options, providers=["CPUExecutionProvider"]), name
        except Exception:  # a type mismatch: try the next type
            continue
    raise RuntimeError(f"no output type fits {name}")


def microseconds(model_session, output: str, x: np.ndarray) -> float:
    feed = {model_session.get_inputs()[0].name: x}
    model_session.run([output], feed)
    best = float("inf")
    for _ in range(ROUNDS):
        runs, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < SECONDS_PER_CUT:
            model_session.run([output], feed)
            runs += 1
        best = min(best, (time.perf_counter() - t0) / runs * 1e6)
    return best


def node_costs(path: Path, threads: int, work: Path, sample: np.ndarray) -> dict:
    model = optimized_graph(path, threads, work / f"{path.stem}.optimized.onnx")
    rows, before = [], 0.0
    for i, node in enumerate(model.graph.node):
        model_session, output = cut_session(model, i, threads)
        total = microseconds(model_session, output, sample)
        rows.append({"op": node.op_type, "node": node.name, "cumulative_us": round(total, 1),
                     "node_us": round(total - before, 1)})
        before = total
    whole = rows[-1]["cumulative_us"]
    return {"intra_op_threads": threads, "whole_us": whole, "nodes": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", type=Path, help="finished runs instead of training simple-2conv")
    parser.add_argument("--work", type=Path, default=WORK, help="where simple-2conv trains (a finished run, such as "
                        "int8_export's, is reused)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "int8_node_costs.json")
    args = parser.parse_args()
    runs = args.runs or []
    if not runs:
        run = args.work / "simple-2conv"
        if not (run / "metrics.json").exists():
            cli("train", "fashion-mnist", "--model", "simple-2conv", *RECIPES["simple-2conv"], "--no-tensorboard",
                "--out", str(run))
        runs.append(run)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnarena-node-costs-") as tmp:
        work = Path(tmp)
        for run in runs:
            float_path, int8_path = work / f"{run.name}.onnx", work / f"{run.name}.int8.onnx"
            cli("export", str(run), "--format", "onnx", "--output", str(float_path))
            cli("export", str(run), "--int8", "--max-drop", "100", "--output", str(int8_path))
            card = json.loads(int8_path.with_name(int8_path.stem + ".card.json").read_text())
            threads = card["intra_op_threads"]
            shape = (1, card["input"]["channels"], *card["input"]["size"][::-1])  # size is width×height
            sample = np.random.default_rng(0).random(shape, dtype=np.float32)
            costs = {kind: node_costs(path, int(threads[kind]["1"]), work, sample)
                     for kind, path in (("float", float_path), ("int8", int8_path))}
            rows.append({"model": card["model"], "batch": 1, **costs,
                         "speedup": round(costs["float"]["whole_us"] / costs["int8"]["whole_us"], 2)})
            for kind, c in costs.items():
                print(f"{run.name} {kind} ({c['intra_op_threads']} threads): {c['whole_us']} µs")
                for r in c["nodes"]:
                    print(f"  {r['node_us']:6.1f} µs  {r['op']:16s} {r['node']}")
    write_result({"what": "batch-1 µs per node of the float and int8 ONNX exports, in ONNX Runtime's optimized "
                          "graphs (each cut after a node and timed; a node's cost is the difference)", "rows": rows},
                 args.out)


if __name__ == "__main__":
    main()
