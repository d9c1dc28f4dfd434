"""The Keras 3 / TensorFlow (CPU) peer: its own venv, and a worker process that runs the Keras side.

TensorFlow is never a cnnarena dependency. `ensure_env()` creates benchmarks/.venv-keras once
(`python -m venv` + `pip install tensorflow-cpu keras`, pinned to the versions the issue measured), and
`KerasPeer` starts this file as a worker in that venv. The worker loads the Fashion-MNIST arrays the
main process exported to an .npz (so both sides see identical data), then answers one JSON command per
line on stdin with one JSON line on stdout: training steps, inference calls, the report pipeline.
The main process keeps the worker alive between commands, so its rounds interleave with PyTorch's.

This module imports only the standard library at the top: the orchestrator imports it from cnnarena's
venv (no TensorFlow there), the worker runs it with the Keras venv's Python (no cnnarena there).

The Keras model is the reports' simple-2conv: Conv2D 32 3×3 same + BN + ReLU + MaxPool, Conv2D 64 3×3
same + BN + ReLU + MaxPool, Flatten, Dense 128 relu, Dense 64 relu, Dense 10; sparse categorical
cross-entropy on logits, Adam 1e-3; images scaled by /255 as NHWC float32, as the reports fed it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE / ".venv-keras"
# The figures were measured with Keras 3.15 on TensorFlow 2.21 (what pip gives on Python 3.11).
# tensorflow-cpu has x86-64 wheels only; elsewhere the plain tensorflow wheel is the CPU build.
TF_PACKAGE = "tensorflow-cpu" if platform.machine().lower() in ("x86_64", "amd64") else "tensorflow"
DEFAULT_PACKAGES = (f"{TF_PACKAGE}==2.21.0", "keras==3.15.1")
STAMP = ".cnnarena-bench-installed"


class PeerUnavailable(Exception):
    """The Keras peer cannot be set up or run; the message is the reason printed in the table."""


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def ensure_env(venv: Path = DEFAULT_VENV, packages: tuple[str, ...] = DEFAULT_PACKAGES, *,
               log=lambda m: None) -> Path:
    """The Keras venv's python, creating the venv and installing `packages` first when needed."""
    from benchmarks.peer_envs import install  # the orchestrator's side only: the worker has no benchmarks package

    return install(venv, packages, what="Keras", log=log)


class KerasPeer:
    """Client side: a worker process in the Keras venv, spoken to in JSON lines."""

    def __init__(self, python: Path, npz: Path, *, threads: int | None = None, log=lambda m: None) -> None:
        self.log = log
        self.stderr_path = Path(npz).with_name("keras-peer.stderr.log")
        self._stderr = open(self.stderr_path, "w")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": ""}
        cmd = [str(python), "-I", str(Path(__file__).resolve()), "--worker", str(npz)]
        if threads:
            cmd += ["--threads", str(threads)]
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                         text=True, bufsize=1, env=env)
        except OSError as e:
            raise PeerUnavailable(f"cannot start the Keras worker: {e}") from None
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(timeout=30)
                raise PeerUnavailable(f"Keras worker exited ({self.proc.returncode}): {self.stderr_tail()}")
            msg = json.loads(line)
            if "progress" in msg:
                self.log(msg["progress"])
                continue
            if not msg.get("ok"):
                raise PeerUnavailable(msg.get("error", "unknown error"))
            return msg["result"]

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        if self.proc.poll() is not None:
            raise PeerUnavailable(f"Keras worker exited ({self.proc.returncode}): {self.stderr_tail()}")
        self.proc.stdin.write(json.dumps({"cmd": cmd, "args": args}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def stderr_tail(self) -> str:
        self._stderr.flush()
        text = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith((" ", "\t"))]
        return lines[-1][:300] if lines else "no message"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


class KerasTrain:
    """Runner: `steps` Keras fit() steps at this batch size (the worker times them, see _train)."""

    def __init__(self, peer: KerasPeer, batch: int, name: str = "Keras/TF") -> None:
        self.peer, self.batch, self.name = peer, batch, name

    def run(self, steps: int) -> tuple[int, float]:
        r = self.peer.call("train", batch=self.batch, steps=steps)
        return r["images"], r["seconds"]


class KerasInfer:
    """Runner: `steps` inference calls on one batch, via model.predict or a direct model(x) call."""

    def __init__(self, peer: KerasPeer, batch: int, mode: str, name: str, batches_per_call: int = 1) -> None:
        self.peer, self.batch, self.mode, self.name = peer, batch, mode, name
        self.batches_per_call = batches_per_call

    def run(self, steps: int) -> tuple[int, float]:
        r = self.peer.call("infer", batch=self.batch, mode=self.mode, steps=steps, batches=self.batches_per_call)
        return r["images"], r["seconds"]


# ----------------------------------------------------------------------------------- the worker (Keras venv)


def _worker(npz: str, threads: int | None) -> None:
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever TensorFlow or Keras print goes to stderr, never into the protocol
    sys.stdout = sys.stderr

    def send(msg: dict[str, Any]) -> None:
        reply.write(json.dumps(msg) + "\n")
        reply.flush()

    try:
        import numpy as np
        import tensorflow as tf

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        import keras
    except Exception as e:
        send({"ok": False, "error": f"cannot import TensorFlow/Keras: {type(e).__name__}: {e}"})
        return
    keras.utils.set_random_seed(0)
    w = _Worker(np, tf, keras, npz, lambda m: send({"progress": m}))
    send({"ok": True, "result": w.hello()})
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            result = getattr(w, "cmd_" + req["cmd"])(**req.get("args", {}))
            send({"ok": True, "result": result})
        except Exception as e:  # reported to the main process as "not measured: <reason>"
            send({"ok": False, "error": f"{type(e).__name__}: {str(e).strip()[:300]}"})


class _Worker:
    def __init__(self, np, tf, keras, npz: str, progress) -> None:
        self.np, self.tf, self.keras, self.npz, self.progress = np, tf, keras, npz, progress
        with np.load(npz) as d:
            self.raw = {k: d[k] for k in d.files}
        self.x_train = (self.raw["x_train"].astype("float32") / 255.0)[..., None]  # N×28×28×1, as the reports
        self.y_train = self.raw["y_train"].astype("int64")
        self.train_models: dict[int, Any] = {}
        self.infer_model = None

    def build(self):
        keras = self.keras
        layers = keras.layers
        h, w = self.x_train.shape[1:3]
        model = keras.Sequential([
            keras.Input((h, w, 1)),
            layers.Conv2D(32, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(), layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(), layers.MaxPooling2D(),
            layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(64, activation="relu"),
            layers.Dense(10),
        ])
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        return model

    def hello(self) -> dict[str, Any]:
        tf, keras = self.tf, self.keras
        model = self.build()
        trainable = int(sum(self.np.prod(v.shape) for v in model.trainable_weights))
        return {"tensorflow": tf.__version__, "keras": keras.__version__, "backend": keras.backend.backend(),
                "python": platform.python_version(), "trainable_params": trainable,
                "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
                "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86)")}

    def cmd_train(self, batch: int, steps: int) -> dict[str, Any]:
        """fit() on the /255 float arrays, shuffle=True, steps+1 steps; timed from the end of the first step
        to the end of the last (fit's per-call setup, building the tf.data pipeline over the arrays, is
        outside, as it is paid once per epoch in a real run)."""
        keras, np = self.keras, self.np
        model = self.train_models.get(batch) or self.train_models.setdefault(batch, self.build())
        x, y = self.x_train, self.y_train
        need = (steps + 1) * batch
        if need > len(x):
            reps = -(-need // len(x))
            x, y = np.concatenate([x] * reps), np.concatenate([y] * reps)
        marks: list[float] = []

        class Clock(keras.callbacks.Callback):
            def on_train_batch_end(self, b, logs=None):
                if b == 0 or b == steps:
                    float(logs["loss"])  # a value, not a pending tensor: the step has finished
                    marks.append(time.perf_counter())

        model.fit(x, y, batch_size=batch, epochs=1, steps_per_epoch=steps + 1, shuffle=True, verbose=0,
                  callbacks=[Clock()])
        return {"images": steps * batch, "seconds": marks[-1] - marks[0]}

    def cmd_infer(self, batch: int, mode: str, steps: int, batches: int = 1) -> dict[str, Any]:
        """One call on `batches` batches of test images: model.predict(x, batch_size=batch) (numpy in,
        numpy out, Keras's compiled predict function, its per-call setup included) or, for one batch,
        model(x, training=False) on a tf tensor (eager)."""
        tf = self.tf
        if self.infer_model is None:
            self.infer_model = self.build()
        model = self.infer_model
        x = (self.raw["x_test"][:batch * batches].astype("float32") / 255.0)[..., None]
        if mode == "predict":
            t0 = time.perf_counter()
            for _ in range(steps):
                model.predict(x, batch_size=batch, verbose=0)
        elif mode == "call" and batches == 1:
            xt = tf.constant(x)
            t0 = time.perf_counter()
            for _ in range(steps):
                model(xt, training=False).numpy()
        else:
            raise ValueError(f"unknown inference mode {mode!r}")
        return {"images": steps * len(x), "seconds": time.perf_counter() - t0}

    def cmd_report(self, epochs: int, batch: int = 32) -> dict[str, Any]:
        """The report pipeline: load the arrays, /255, build, compile, fit `epochs` epochs on all 60k train
        images at batch 32 (no validation split), evaluate on the official 10k test images.

        Wall time starts before the arrays are read (TensorFlow's import is not in it, as torch's is
        not on the other side). Test accuracy is also measured after every epoch for the curve; those
        evaluations are timed and taken out of the wall time, except the final one, which is the pipeline's.
        """
        keras, np = self.keras, self.np
        keras.utils.set_random_seed(0)
        t0 = time.perf_counter()
        with np.load(self.npz) as d:
            x_train, y_train, x_test, y_test = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
        x_train = (x_train.astype("float32") / 255.0)[..., None]
        x_test = (x_test.astype("float32") / 255.0)[..., None]
        model = self.build()
        curve: list[dict[str, float]] = []
        extra = [0.0]
        progress = self.progress

        class EpochTest(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                t = time.perf_counter()
                elapsed = t - t0 - extra[0]  # the pipeline's time so far, earlier evaluations taken out
                line = (f"keras report pipeline: epoch {epoch + 1}/{epochs}  loss {logs['loss']:.4f}  "
                        f"train acc {logs['accuracy']:.4f}  {elapsed:.0f} s")
                if epoch + 1 < epochs:  # the last epoch's accuracy is the pipeline's own evaluate below
                    _, acc = self.model.evaluate(x_test, y_test, batch_size=batch, verbose=0)
                    took = time.perf_counter() - t
                    extra[0] += took
                    curve.append({"epoch": epoch + 1, "seconds": round(elapsed + took, 2),
                                  "test_accuracy": round(float(acc), 5)})
                    line += f"  test acc {acc:.4f}"
                progress(line)

        t_fit = time.perf_counter()
        model.fit(x_train, y_train, batch_size=batch, epochs=epochs, shuffle=True, verbose=0, callbacks=[EpochTest()])
        fit_seconds = time.perf_counter() - t_fit - extra[0]
        t_eval = time.perf_counter()
        _, acc = model.evaluate(x_test, y_test, batch_size=batch, verbose=0)
        now = time.perf_counter()
        wall = now - t0 - extra[0]
        curve.append({"epoch": epochs, "seconds": round(wall, 2), "test_accuracy": round(float(acc), 5)})
        return {"epochs": epochs, "batch_size": batch, "test_accuracy": float(acc), "wall_seconds": wall,
                "fit_seconds": fit_seconds, "eval_seconds": now - t_eval, "train_images": len(x_train),
                "test_images": len(x_test), "curve": curve}


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--worker":
        threads = int(sys.argv[4]) if len(sys.argv) >= 5 and sys.argv[3] == "--threads" else None
        _worker(sys.argv[2], threads)
    else:
        print("usage: keras_peer.py --worker DATA.npz [--threads N]  (started by `python -m benchmarks`)",
              file=sys.stderr)
        sys.exit(2)
