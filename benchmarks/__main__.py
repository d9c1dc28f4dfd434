"""`python -m benchmarks` (or `make bench`): cnnarena vs a plain PyTorch loop vs Keras 3 on TensorFlow,
measured side by side in one run on this machine, printed as one table and written as JSON.

    python -m benchmarks                                  # the full run (~35 min on 2 cores)
    python -m benchmarks --seconds 5 --keras-epochs 1 --fast-epochs 2 --threads 1   # a quick check
    python -m benchmarks --parts train,inference --no-keras

1. Training throughput of simple-2conv on Fashion-MNIST at batch 32 and 256.
2. Time to accuracy: the report pipeline (Keras, 10 epochs, batch 32) against cnnarena's `fast` preset;
   `fast-large` (its 30 epochs take ~8.5 min in bf16 on a Zen 4 VM) for the 94.0%-in-10-minutes target.
3. Inference throughput at batch 1 and 256: PyTorch eager, ONNX Runtime, Keras predict() and model(x).
Targets from the issue are judged MET / MISSED with the figure, or NOT MEASURED with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks import machine as describe_machine

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "latest.json"
PARTS = ("train", "inference", "accuracy")
TRAIN_BATCHES = (32, 256)
INFER_BATCHES = (1, 256)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from .keras_peer import DEFAULT_PACKAGES, DEFAULT_VENV

    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0,
                   help="measured seconds per throughput row, split over the rounds (default 20)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per row; the median is shown (default 3)")
    p.add_argument("--keras-epochs", type=int, default=10,
                   help="epochs of the Keras report pipeline (default 10, as the reports; ~15 min on 2 cores)")
    p.add_argument("--fast-epochs", type=int, default=None,
                   help="cap the epochs of the fast and fast-large presets (default: their recipes'; a cap "
                        "squeezes the one-cycle schedule)")
    p.add_argument("--val-frac", type=float, default=0.05, help="validation share held out by the fast run")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--no-keras", action="store_true", help="skip the Keras peer (its rows say 'not measured')")
    p.add_argument("--keras-venv", type=Path, default=DEFAULT_VENV, help="the Keras peer's own venv (created once)")
    p.add_argument("--keras-packages", default=" ".join(DEFAULT_PACKAGES),
                   help="what pip installs into that venv (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for PyTorch, ONNX Runtime and TensorFlow alike (default: each one's own default)")
    p.add_argument("--data-dir", default=None, help="folder holding the Fashion-MNIST idx files (default: the usual)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output (default benchmarks/results/latest.json)")
    args = p.parse_args(argv)
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    bad = [s for s in args.parts if s not in PARTS]
    if bad or not args.parts:
        p.error(f"--parts takes a subset of {','.join(PARTS)}, got {bad[0] if bad else 'nothing'}")
    if args.seconds <= 0 or args.rounds < 1 or args.keras_epochs < 1 or (args.fast_epochs or 1) < 1:
        p.error("--seconds must be positive; --rounds, --keras-epochs and --fast-epochs at least 1")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine() -> str:
    load = "/".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{describe_machine()}, {platform.system()} {platform.machine()}, load average {load}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def not_measured(reason: str) -> dict[str, str]:
    return {"not_measured": reason}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    import onnxruntime
    import torch

    from cnnarena.data.sources import load_source
    from cnnarena.errors import UserError

    from . import keras_peer, table, throughput
    from .time_to_accuracy import run_fast

    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        source = load_source("fashion-mnist", data_dir=Path(args.data_dir) if args.data_dir else None)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pool, test = source.pool, source.test
    skipped = f"skipped (--parts {','.join(args.parts)})"
    results: dict[str, Any] = {
        "meta": {
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine(),
            "software": f"Python {platform.python_version()}, torch {torch.__version__} "
                        f"({plural(torch.get_num_threads(), 'thread')}), onnxruntime {onnxruntime.__version__}",
            "method": f"throughput = median of {plural(args.rounds, 'interleaved round')}, ~{args.seconds:g} s per "
                      "row after warm-up; inference: a call on float [0,1] images, one batch unless said; "
                      "cnnarena's fit() raises glibc's malloc thresholds for the whole process, so the plain "
                      "PyTorch loop (same process) gets that too; fit() also re-measures every 30 s whether one "
                      "thread beats all (it does only when other programs keep the cores busy)",
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "data": f"Fashion-MNIST: {len(pool)} train, {len(test)} test images, {tuple(pool.images.shape[1:])}",
        },
        "params": throughput.param_counts(pool.images, pool.classes),
        "train": {}, "inference": {}, "accuracy": {},
    }
    log(f"{results['meta']['machine']}\n{results['meta']['software']}")

    with tempfile.TemporaryDirectory(prefix="cnnarena-bench-") as tmp:
        tmp_dir = Path(tmp)
        peer, peer_error = None, "skipped (--no-keras)"
        if not args.no_keras:
            try:
                npz = tmp_dir / "fashion-mnist.npz"  # the very arrays cnnarena uses, NHW uint8
                np.savez(npz, x_train=pool.images[:, 0].numpy(), y_train=pool.labels.numpy(),
                         x_test=test.images[:, 0].numpy(), y_test=test.labels.numpy())
                python = keras_peer.ensure_env(args.keras_venv, tuple(args.keras_packages.split()), log=log)
                log("starting the Keras worker (importing TensorFlow)")
                peer = keras_peer.KerasPeer(python, npz, threads=args.threads, log=log)
                info = peer.info
                results["params"]["Keras"] = info["trainable_params"]
                results["meta"]["software"] += (f", TensorFlow {info['tensorflow']} + Keras {info['keras']} "
                                                f"({info['intra_op_threads'] or 'default'} intra-op threads)"
                                                .replace("(1 intra-op threads)", "(1 intra-op thread)"))
                results["meta"]["keras"] = info
                log(f"Keras peer: TensorFlow {info['tensorflow']}, Keras {info['keras']}")
            except keras_peer.PeerUnavailable as e:
                peer_error = str(e)
                log(f"Keras peer not available: {peer_error}")
        keras_why = not_measured(peer_error)
        try:
            for batch in TRAIN_BATCHES:
                row: dict[str, Any]
                if "train" not in args.parts:
                    row = {k: not_measured(skipped) for k in table.TRAIN_IMPLS}
                else:
                    log(f"training throughput, simple-2conv, batch {batch}")
                    runners: list[Any] = [
                        throughput.CnnarenaTrain(pool.images, pool.labels, pool.classes, batch, name=table.CNNARENA),
                        throughput.PlainTorchTrain(pool.images, pool.labels, len(pool.classes), batch,
                                                   name=table.PLAIN)]
                    if peer is not None:
                        runners.append(keras_peer.KerasTrain(peer, batch, name=table.KERAS))
                    measured = throughput.side_by_side(runners, seconds=args.seconds, rounds=args.rounds, log=log)
                    row = {m.name: m.to_json() for m in measured}
                    row.setdefault(table.KERAS, keras_why)
                results["train"][str(batch)] = row

            with tempfile.TemporaryDirectory(prefix="onnx-", dir=tmp_dir) as onnx_tmp:
                model = throughput.inference_model(test.images, test.classes) if "inference" in args.parts else None
                onnx_path, onnx_error = Path(onnx_tmp) / "simple-2conv.onnx", None
                if model is not None:
                    try:
                        results["meta"]["onnx"] = throughput.export_onnx_file(model, onnx_path)
                    except Exception as e:  # the exporter's failures are many; the row says which
                        onnx_error = f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                for batch in INFER_BATCHES:
                    if model is None:
                        results["inference"][str(batch)] = {k: not_measured(skipped) for k in table.INFER_IMPLS
                                                            if k != table.K_BULK or batch > 1}
                        continue
                    log(f"inference throughput, simple-2conv, batch {batch}")
                    x = test.images[:batch]
                    runners = [throughput.TorchEagerInfer(model, x, name=table.EAGER)]
                    if onnx_error is None:
                        runners.append(throughput.OnnxInfer(onnx_path, x, name=table.ORT, threads=args.threads))
                    if peer is not None:
                        runners += [keras_peer.KerasInfer(peer, batch, "predict", table.K_PREDICT),
                                    keras_peer.KerasInfer(peer, batch, "call", table.K_CALL)]
                        if batch > 1:
                            runners.append(keras_peer.KerasInfer(peer, batch, "predict", table.K_BULK,
                                                                 batches_per_call=table.BULK_BATCHES))
                    measured = throughput.side_by_side(runners, seconds=args.seconds, rounds=args.rounds, log=log)
                    row = {m.name: m.to_json() for m in measured}
                    if onnx_error is not None:
                        row[table.ORT] = not_measured(onnx_error)
                    for key in (table.K_PREDICT, table.K_CALL) + ((table.K_BULK,) if batch > 1 else ()):
                        row.setdefault(key, keras_why)
                    results["inference"][str(batch)] = {k: row[k] for k in table.INFER_IMPLS if k in row}

            if "accuracy" not in args.parts:
                results["accuracy"] = {"report": not_measured(skipped), "fast": not_measured(skipped),
                                       "fast-large": not_measured(skipped)}
            else:
                if peer is None:
                    results["accuracy"]["report"] = keras_why
                else:
                    log(f"report pipeline (Keras, {args.keras_epochs} epochs, batch 32)")
                    try:
                        results["accuracy"]["report"] = peer.call("report", epochs=args.keras_epochs, batch=32)
                    except keras_peer.PeerUnavailable as e:
                        results["accuracy"]["report"] = not_measured(str(e))
                if peer is not None:
                    peer.close()  # its memory and threads are not the fast run's business
                    peer = None
                for model in ("fast", "fast-large"):  # fast-large answers the 10-minute target
                    log(f"cnnarena {model} preset, time to accuracy (data loading included)")
                    results["accuracy"][model] = run_fast(test, tmp_dir, data_dir=args.data_dir,
                                                          val_frac=args.val_frac, epochs=args.fast_epochs,
                                                          model=model, log=log)
        finally:
            if peer is not None:
                peer.close()

    results["meta"]["total_seconds"] = round(time.perf_counter() - t_start, 1)
    results["meta"]["load_average_at_end"] = "/".join(f"{v:.1f}" for v in os.getloadavg())
    results["targets"] = table.targets(results)
    text = table.format_table(results)
    results["table"] = text.splitlines()
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    log(f"written to {args.out} (total {results['meta']['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    from benchmarks import opt_in

    opt_in()
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
