"""Fine-tune ImageNet-pretrained EfficientNet-Lite0 on Fashion-MNIST at <= 96 px, and time it.

    python benchmarks/transfer_fmnist.py [--input-size 64] [--minutes N] [--out DIR] [--fraction F]

1. A full cnnarena run with the best recipe found (see RECIPE): head on cached backbone features
   (phase 1), then the last stages unfrozen with BatchNorm kept in eval mode, trained on the cached
   output of the frozen trunk (phase 2). Test accuracy is on the official 10,000 test images; the wall
   time includes loading and splitting the data, building the model, training and testing.
2. The phase-1 feature-cache speed-up on the same training and validation images: one frozen-backbone
   epoch on the slow path (every batch through the backbone) against the cached path (features once,
   then the head alone), with identical batches in identical order.
3. The same for phase 2 (unless --no-phase2-speedup): one fine-tuning epoch of the last stages with the
   trunk run on every batch against the trunk's output cached, on at most --phase2-images images.
4. Optionally (--layouts NAMES) training images/s in contiguous vs channels_last memory format.

Everything is printed as one table and written to DIR/transfer_fmnist.json. The target is >= 93%; the
recipe that reached it (93.39% on the official test set, benchmarks/results/transfer_fmnist_aug80e6) trains
with augmentation, so the caches are off; its command:

    python benchmarks/transfer_fmnist.py --input-size 80 --freeze-epochs 2 --epochs 6 --augment light \
        --label-smoothing 0.1 --no-speedup --no-phase2-speedup --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnarena.config import build_config
from cnnarena.data.loader import BatchLoader
from cnnarena.data.sources import load_data
from cnnarena.data.split import make_split, subsample
from cnnarena.models.stages import param_groups, set_trainable
from cnnarena.run import build_model, train_run
from cnnarena.train.finetune import parse_unfreeze, train_head, train_unfrozen
from cnnarena.train.loop import resolve_device, seed_everything

# The recipe, from measurements on digits and on Fashion-MNIST subsets (2,700 and 5,400 training images):
# - BatchNorm frozen in phase 2 (val accuracy on digits no longer falls from 0.76 to 0.39 at the switch);
# - phase-2 Adam LR 9e-5 (3e-3 x 0.03): at 3e-4 the first fine-tuning epoch lost ground (train accuracy
#   0.88 -> 0.77) because every unfrozen weight moves by ~lr on Adam's first steps and frozen BatchNorm
#   does not re-normalise; a 1-epoch warm-up did not do better than the lower LR;
# - the last 3 of 5 stages unfrozen (blocks.2 on): the frozen trunk's output is cached;
# - 64 px: the 28 px images gain little detail beyond it, and 96 px costs 2.25x.
# Measured on the full data (official test set): this recipe 92.33% (1,795 s); with `--augment light
# --label-smoothing 0.1 --freeze-epochs 2 --epochs 5` 92.34% (2,406 s; the trunk cache is off with
# augmentation), 92.67% with flip TTA (`cnnarena evaluate RUN --tta`); the same at `--input-size 80
# --epochs 4`: 92.71%, 92.96% with flip TTA (val 93.27%, 2,046 s); and with `--epochs 6` (the >= 93% run,
# see the module docstring): 93.39%, 93.35% with flip TTA (val 93.83%; 4,779 s on 1 thread with the other
# core busy, about 2,800 s on 2 threads from the per-epoch times of the 4-epoch run).
RECIPE = dict(
    data="fashion-mnist", model="efficientnet_lite0", input_size=64,
    val_frac=0.1,  # 54,000 train / 6,000 val; test = the official 10,000
    batch_size=128, lr=3e-3, optimizer="adam", schedule="cosine",
    freeze_epochs=3,  # head on cached features: well under a second per epoch after one backbone pass
    unfreeze="3", finetune_lr_scale=0.03, epochs=4,
    finetune_bn="frozen", feature_cache=True, monitor="val_accuracy",
)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    values = dict(RECIPE, input_size=args.input_size, fraction=args.fraction, seed=args.seed)
    for key in ("freeze_epochs", "epochs", "unfreeze", "lr", "finetune_lr_scale", "batch_size", "finetune_bn",
                "val_frac", "finetune_warmup", "augment", "label_smoothing"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.minutes is not None:
        values["max_minutes"] = args.minutes
    if args.input_size > 96:
        sys.exit("error: this benchmark is about <= 96 px inputs")
    cfg = build_config(None, values)
    report: dict = {"recipe": {k: v for k, v in values.items()}, "machine": machine()}

    run_dir = out / "run"
    if (run_dir / "metrics.json").exists():
        sys.exit(f"error: {run_dir} already holds a finished run: pick another --out")
    t0 = time.perf_counter()
    metrics = train_run(cfg, run_dir)
    wall = time.perf_counter() - t0
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    report["run"] = dict(
        test_accuracy=metrics["test_accuracy"], macro_f1=metrics["macro_f1"], test_samples=metrics["test_samples"],
        wall_seconds=round(wall, 1), train_seconds=metrics["train_seconds"], data_seconds=metrics["data_seconds"],
        train_samples=metrics["train_samples"], val_samples=metrics["val_samples"],
        best_epoch=metrics["best_epoch"], phase_boundary=metrics["phase_boundary"],
        history=[{k: r.get(k) for k in ("epoch", "phase", "val_accuracy", "train_accuracy", "epoch_seconds",
                                        "feature_seconds", "trunk_seconds")} for r in history])
    write(out, report)

    if not args.no_speedup:
        report["phase1_speedup"] = phase1_speedup(cfg, args.phase1_images)
        write(out, report)
    if not args.no_phase2_speedup:
        report["phase2_speedup"] = phase2_speedup(cfg, args.phase2_images)
        write(out, report)
    if args.layouts:
        report["layouts"] = layouts(args.layouts.split(","), args.input_size)
        write(out, report)
    print_table(report)
    print(f"\nwrote {out / 'transfer_fmnist.json'}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input-size", type=int, default=64, help="resolution the network runs at (<= 96)")
    p.add_argument("--minutes", type=float, default=None, help="training budget per phase (stops after the epoch "
                   "that crosses it)")
    p.add_argument("--out", default="benchmarks/results/transfer_fmnist", help="output directory")
    p.add_argument("--fraction", type=float, default=1.0, help="train on this share (for a quick check)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    for name, kind in (("freeze-epochs", int), ("epochs", int), ("unfreeze", str), ("lr", float),
                       ("finetune-lr-scale", float), ("batch-size", int), ("finetune-bn", str), ("val-frac", float),
                       ("finetune-warmup", float), ("augment", str), ("label-smoothing", float)):
        p.add_argument(f"--{name}", type=kind, default=None, help=f"override the recipe's {name}")
    p.add_argument("--phase1-images", type=int, default=10000, help="cap the images of the phase-1 speed-up test")
    p.add_argument("--phase2-images", type=int, default=4000, help="cap the images of the phase-2 speed-up test")
    p.add_argument("--no-speedup", action="store_true", help="skip the phase-1 feature-cache measurement")
    p.add_argument("--no-phase2-speedup", action="store_true", help="skip the phase-2 trunk-cache measurement")
    p.add_argument("--layouts", default=None, help="also measure contiguous vs channels_last training img/s for "
                   "these backbones, e.g. efficientnet_lite0,mobilenet_v2,resnet18")
    return p.parse_args()


def loaders(cfg, cap: int | None):
    """The run's training subset (capped) and validation set, as the run builds them."""
    source = load_data(cfg)
    split = make_split(source, val_frac=cfg.val_frac, test_frac=cfg.test_frac, seed=cfg.split_seed)
    train = subsample(split.train, cfg.fraction, cfg.train.seed)
    val = split.val
    if cap is not None and cap < len(train):
        train = train.subset(torch.arange(cap).tolist())
        val = val.subset(torch.arange(min(len(val), max(1, cap // 4))).tolist())
    t = cfg.train
    device = resolve_device(t.device)
    return (split, BatchLoader(train, t.batch_size, device=device, shuffle=True, seed=t.seed,
                               channels_last=t.channels_last),
            BatchLoader(val, t.eval_batch_size, device=device, channels_last=t.channels_last))


def phase1_speedup(cfg, cap: int | None) -> dict:
    """One frozen-backbone epoch, slow path vs cached path, same images, same batch order."""
    result = {}
    for cache in (False, True):
        seed_everything(cfg.train.seed)
        split, train, val = loaders(cfg, cap)
        model = build_model(cfg, split)
        set_trainable(model, 0)
        state = train_head(model, dataclasses.replace(cfg.train, epochs=1), train, val, cache=cache)
        row = state.history[0]
        result["cached" if cache else "slow"] = dict(
            epoch_seconds=row["epoch_seconds"], feature_seconds=row.get("feature_seconds", 0.0),
            val_accuracy=row["val_accuracy"], images=train.num_samples + val.num_samples)
    slow, cached = result["slow"]["epoch_seconds"], result["cached"]
    head_only = max(cached["epoch_seconds"] - cached["feature_seconds"], 1e-6)
    n = cfg.freeze_epochs
    result["speedup_per_epoch"] = round(slow / head_only, 1)  # once the features exist
    result["speedup_first_epoch"] = round(slow / cached["epoch_seconds"], 2)  # the feature pass included
    result[f"speedup_{n}_epochs"] = round(n * slow / (cached["feature_seconds"] + n * head_only), 2)
    return result


def phase2_speedup(cfg, cap: int) -> dict:
    """One fine-tuning epoch of the unfrozen stages, trunk on every batch vs trunk output cached."""
    result = {}
    last = parse_unfreeze(cfg.unfreeze)
    for cache in (False, True):
        seed_everything(cfg.train.seed)
        split, train, val = loaders(cfg, cap)
        model = build_model(cfg, split)
        set_trainable(model, last, bn_frozen=cfg.finetune_bn == "frozen")
        lr = cfg.train.lr * cfg.finetune_lr_scale
        state = train_unfrozen(model, dataclasses.replace(cfg.train, epochs=1, lr=lr), train, val, [],
                               param_groups(model, lr), cache=cache)
        row = state.history[0]
        result["cached" if cache else "slow"] = dict(
            epoch_seconds=row["epoch_seconds"], trunk_seconds=row.get("trunk_seconds", 0.0),
            val_accuracy=row["val_accuracy"], images=train.num_samples + val.num_samples)
    slow, cached = result["slow"]["epoch_seconds"], result["cached"]
    tail_only = max(cached["epoch_seconds"] - cached["trunk_seconds"], 1e-6)
    result["speedup_per_epoch"] = round(slow / tail_only, 2)
    result["speedup_first_epoch"] = round(slow / cached["epoch_seconds"], 2)
    return result


def layouts(names: list[str], size: int, batch: int = 64, rounds: int = 4) -> dict:
    """Training images/s (forward + backward + Adam step) per memory format, interleaved rounds, medians."""
    from cnnarena.models.pretrained import build_pretrained

    out = {}
    for name in names:
        s = max(size, 75) if name.startswith("inception") else size
        model = build_pretrained(name, num_classes=10, in_chans=1, data_size=(28, 28),
                                 classes=[str(i) for i in range(10)], pretrained=False, input_size=s).train()
        opt = torch.optim.Adam(model.parameters(), 1e-4)
        x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
        speeds: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
        for r in range(rounds):
            for fmt_name in (("contiguous", "channels_last") if r % 2 == 0 else ("channels_last", "contiguous")):
                fmt = torch.channels_last if fmt_name == "channels_last" else torch.contiguous_format
                model.to(memory_format=fmt)
                xx = x.contiguous(memory_format=fmt)
                for step in range(2):  # the first step after a format change warms up
                    t0 = time.perf_counter()
                    loss = F.cross_entropy(model(xx), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    if step:
                        speeds[fmt_name].append(batch / (time.perf_counter() - t0))
        med = {k: round(statistics.median(v), 1) for k, v in speeds.items()}
        out[name] = dict(input_size=s, **med, faster=max(med, key=med.get))
        print(f"{name:20s} {s}px  contiguous {med['contiguous']:7.1f} img/s  channels_last "
              f"{med['channels_last']:7.1f} img/s", file=sys.stderr)
    return out


def machine() -> dict:
    return dict(cpu_count=os.cpu_count(), threads=torch.get_num_threads(), torch=torch.__version__,
                cpu_capability=torch.backends.cpu.get_cpu_capability(), python=platform.python_version(),
                load_average=os.getloadavg() if hasattr(os, "getloadavg") else None)


def write(out: Path, report: dict) -> None:
    (out / "transfer_fmnist.json").write_text(json.dumps(report, indent=1))


def print_table(report: dict) -> None:
    run = report["run"]
    rows = [("test accuracy (official 10k)", f"{run['test_accuracy']:.4f}"),
            ("macro F1", f"{run['macro_f1']:.4f}"),
            ("wall time, data loading included", f"{run['wall_seconds']:.0f} s"),
            ("training time", f"{run['train_seconds']:.0f} s"),
            ("train / val images", f"{run['train_samples']} / {run['val_samples']}")]
    for phase in ("phase1", "phase2"):
        s = report.get(f"{phase}_speedup")
        if s:
            rows.append((f"{phase} slow epoch", f"{s['slow']['epoch_seconds']:.1f} s"))
            cache_key = "feature_seconds" if phase == "phase1" else "trunk_seconds"
            rows.append((f"{phase} cached epoch (cache fill)", f"{s['cached']['epoch_seconds']:.1f} s "
                         f"({s['cached'][cache_key]:.1f} s)"))
            rows.append((f"{phase} speed-up per epoch / first epoch",
                         f"x{s['speedup_per_epoch']} / x{s['speedup_first_epoch']}"))
    for name, v in report.get("layouts", {}).items():
        rows.append((f"{name} train img/s contiguous / channels_last",
                     f"{v['contiguous']} / {v['channels_last']}"))
    width = max(len(k) for k, _ in rows)
    print("\nEfficientNet-Lite0 (ImageNet) on Fashion-MNIST, "
          f"{report['recipe']['input_size']} px, {report['machine']['threads']} threads")
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")


if __name__ == "__main__":
    from benchmarks import opt_in

    opt_in()
    main()
