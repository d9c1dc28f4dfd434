"""Time to accuracy on Fashion-MNIST, every tool as its users start it, one after another on this machine.

  python -m benchmarks.peers                      # every row, 10 minutes at most each
  python -m benchmarks.peers --only cnnarena-fast --only plain-pytorch --cap 300

Each row is a whole process (peer_runs/*.py) in that tool's own venv (peer_envs.py; Keras: keras_peer.py). The
official test set (10,000 images) is scored after every epoch; the time of that scoring is taken out of the
clock. A row's time to 90/92/93/94% is the process's wall time, from its start to the end of the first epoch that
reached it. Peak memory is the largest resident set of one process (ru_maxrss from wait4: the tool's main
process or its largest data-loading worker, not their sum). A row that cannot run
here says why: the package and the last line of its error. Results: benchmarks/results/peers.json and the table
and chart in docs/peers.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import keras_peer, peer_envs, write_result
from benchmarks.peer_data import ensure_data

HERE = Path(__file__).resolve().parent
RUNS = HERE / "peer_runs"
MAIN_PYTHON = Path(sys.executable)
TARGETS = (0.90, 0.92, 0.93, 0.94)
PREFIX = "@@peer "


@dataclass
class Row:
    name: str
    tool: str
    python: str  # "cnnarena", "keras" or a peer_envs name
    script: str
    args: list[str]
    what: str
    fetches: str = ""  # what the tool downloads at first use, named when it fails here
    curve: list[dict] = field(default_factory=list)


def rows(data) -> list[Row]:
    npz, folder = str(data.npz), str(data.folder)

    def cnnarena(model: str, *extra: str) -> list[str]:
        return [npz, "train", "fashion-mnist", "--model", model, "--out", "run", *extra]

    return [
        Row("cnnarena-fast", "cnnarena", "cnnarena", "cnnarena_run.py", cnnarena("fast"),
            "`cnnarena train fashion-mnist --model fast` (its recipe: 10 epochs, one-cycle SGD, flip + flip TTA)"),
        Row("cnnarena-fast-large", "cnnarena", "cnnarena", "cnnarena_run.py", cnnarena("fast-large"),
            "`cnnarena train fashion-mnist --model fast-large`"),
        Row("cnnarena-simple-2conv", "cnnarena", "cnnarena", "cnnarena_run.py", cnnarena("simple-2conv"),
            "`cnnarena train fashion-mnist --model simple-2conv` (Adam 1e-3, batch 128, 10 epochs)"),
        Row("plain-pytorch", "plain PyTorch", "cnnarena", "plain_torch.py", [npz],
            "simple-2conv in a tutorial-style loop: DataLoader, Adam 1e-3, batch 128, 10 epochs, all 60,000 images"),
        Row("keras", "Keras 3 / TensorFlow", "keras", "keras_run.py", [npz],
            "simple-2conv, model.fit, Adam 1e-3, batch 128, 10 epochs, all 60,000 images"),
        Row("fastai-fast", "fastai", "fastai", "fastai_run.py", [folder, "--arch", "fast"],
            "cnnarena's `fast` layers in a fastai Learner from the PNG folders: fit_one_cycle(10, 3e-3), "
            "batch 256, flips"),
        Row("fastai-resnet18", "fastai", "fastai", "fastai_run.py", [folder, "--arch", "resnet18", "--epochs", "2"],
            "vision_learner(dls, resnet18).fine_tune(2): ImageNet weights",
            fetches="fastai fetches resnet18's ImageNet weights from download.pytorch.org at first use"),
        Row("ultralytics-yolo11n-cls", "Ultralytics", "ultralytics", "ultralytics_run.py", [folder, "--hours", "0"],
            "YOLO('yolo11n-cls.yaml').train(imgsz=32, batch=256, workers=2, time=the cap): from scratch"),
    ]


def python_for(row: Row, log) -> Path:
    if row.python == "cnnarena":
        return MAIN_PYTHON
    if row.python == "keras":
        return keras_peer.ensure_env(log=log)
    return peer_envs.ensure_env(row.python, log=log)


def run_row(row: Row, cap: float, workdir: Path, log) -> dict:
    """Start the row's process, follow its epoch lines until it ends or `cap` seconds pass; its figures."""
    try:
        python = python_for(row, log)
    except peer_envs.PeerUnavailable as e:
        return {"status": "cannot run here", "reason": str(e)}
    args = list(row.args)
    if "--hours" in args:  # Ultralytics fits its schedule to its own budget (its start-up and validation in it)
        args[args.index("--hours") + 1] = f"{cap / 3600:.4f}"
    cwd = workdir / row.name
    shutil.rmtree(cwd, ignore_errors=True)  # a run directory left there would be resumed, not trained
    cwd.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(RUNS), "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": "", "YOLO_CONFIG_DIR": str(cwd / "yolo-config")}
    stderr, stdout_log = open(cwd / "stderr.log", "w"), open(cwd / "stdout.log", "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(python), str(RUNS / row.script), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=stderr, start_new_session=True)
    try:
        excluded, capped = _follow(proc, row, cap, t0, stdout_log, log)
    finally:  # whatever happened here, the row's processes do not outlive it
        # no proc.poll() first: it would reap an ended process, and wait4 then has no child to give the usage of
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        _, status, usage = os.wait4(proc.pid, 0)
        stderr.close()
        stdout_log.close()
    wall = time.perf_counter() - t0 - excluded
    result = {"status": "capped" if capped else ("finished" if status == 0 else "failed"),
              "wall_seconds": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}
    if result["status"] == "failed":
        error = peer_envs.last_line((cwd / "stderr.log").read_text(errors="replace"))
        result["reason"] = f"{row.fetches}: {error}" if row.fetches else error
    return result


def _follow(proc: subprocess.Popen, row: Row, cap: float, t0: float, stdout_log, log) -> tuple[float, bool]:
    """Read the process's stdout as it comes, stamping each epoch line; kill its group once `cap` seconds of its
    own work have passed. (seconds of test scoring to take out of the clock, whether it was capped)"""
    excluded, capped, pending = 0.0, False, b""
    fd = proc.stdout.fileno()
    while True:
        left = cap - (time.perf_counter() - t0 - excluded)
        if left <= 0:
            capped = True
            os.killpg(proc.pid, signal.SIGKILL)
            break
        readable, _, _ = select.select([fd], [], [], min(left, 5.0))
        if not readable:
            continue
        chunk = os.read(fd, 1 << 16)  # unbuffered: a line is stamped when it arrives
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace")
            at = line.find(PREFIX)  # a progress bar may leave its text before the line on the same row
            stdout_log.write((line if at < 0 else line[:at]) + "\n")
            if at >= 0:
                point = json.loads(line[at + len(PREFIX):])
                excluded += point["eval_seconds"]
                point["seconds"] = round(time.perf_counter() - t0 - excluded, 2)
                row.curve.append(point)
                log(f"{row.name}: epoch {point['epoch']}  test {point['test_accuracy']:.4f}  "
                    f"{point['seconds']:.0f} s")
    return excluded, capped


def summarise(row: Row, outcome: dict) -> dict:
    best = max((p["test_accuracy"] for p in row.curve), default=None)
    reach = {f"{round(100 * t)}%": next((p["seconds"] for p in row.curve if p["test_accuracy"] >= t), None)
             for t in TARGETS}
    return {"row": row.name, "tool": row.tool, "what": row.what, **outcome, "best_test_accuracy": best,
            "epochs": len(row.curve), "seconds_to": reach, "curve": row.curve}


def whole_process_epoch(data, workdir: Path, rounds: int, log) -> dict:
    """One epoch of simple-2conv at batch 256 as a whole process, cnnarena's command against the plain script,
    alternating; the best of `rounds` each. Each tool's own epoch: cnnarena trains on its 80% training split
    and validates on the rest, then scores the test set and writes its run; the plain script trains on all
    60,000 images and scores the test set."""
    commands = {
        "cnnarena": [str(MAIN_PYTHON.parent / "cnnarena"), "train", "fashion-mnist", "--model", "simple-2conv",
                     "--epochs", "1", "--batch-size", "256", "--out", "run"],
        "plain PyTorch": [str(MAIN_PYTHON), str(RUNS / "plain_torch.py"), str(data.npz), "--epochs", "1",
                          "--batch-size", "256"],
    }
    walls: dict[str, list[float]] = {name: [] for name in commands}
    for r in range(rounds):
        for name, cmd in commands.items():
            cwd = workdir / f"epoch-{r}-{name.replace(' ', '-')}"
            shutil.rmtree(cwd, ignore_errors=True)
            cwd.mkdir(parents=True)
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=cwd, env={**os.environ, "PYTHONPATH": str(RUNS)}, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            walls[name].append(round(time.perf_counter() - t0, 2))
            log(f"whole-process epoch, {name}: {walls[name][-1]:.1f} s")
    best = {name: min(w) for name, w in walls.items()}
    return {"walls": walls, "best": best, "ratio": round(best["plain PyTorch"] / best["cnnarena"], 2)}


def main() -> None:
    names = [r.name for r in rows(argparse.Namespace(npz="", folder=""))]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=names, action="append")
    parser.add_argument("--cap", type=float, default=600.0, help="seconds each row may train (evaluation excluded)")
    parser.add_argument("--epoch-rounds", type=int, default=2, help="rounds of the whole-process epoch (0: none)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cnnarena-peers"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "peers.json")
    args = parser.parse_args()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    data = ensure_data(args.workdir / "data", log=log)
    result = {"what": "time to test accuracy on Fashion-MNIST, whole processes, one after another",
              "cap_seconds": args.cap, "rows": [], "whole_process_epoch": None}
    for row in rows(data):
        if args.only and row.name not in args.only:
            continue
        result["rows"].append(summarise(row, run_row(row, args.cap, args.workdir / "runs", log)))
        log(json.dumps({k: v for k, v in result["rows"][-1].items() if k != "curve"}))
        write_result(result, args.out)  # after every row: a later failure loses nothing measured
    if args.epoch_rounds:
        result["whole_process_epoch"] = whole_process_epoch(data, args.workdir / "runs", args.epoch_rounds, log)
        write_result(result, args.out)


if __name__ == "__main__":
    main()
