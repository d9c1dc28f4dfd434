"""Explain time per image: heat maps of simple-2conv and EfficientNet-Lite0, as `cnnarena explain`, the study
report and POST /v1/explain compute them.

  python -m benchmarks.explain_speed              # ~2 minutes on a 2-core CPU
  python -m benchmarks.explain_speed --rounds 2   # quicker

Images: real Fashion-MNIST test images (28x28 gray; Debian's dataset-fashion-mnist, else random pixels, said in the
output). Lite0 runs at the 48 px cnnarena chooses for 28 px images, and at 224 px as for photos (the same images,
stored at 224). Weights do not change the time: networks are built untrained (no download). Per model and method:
one image at a time (the web page and the API) and batches of 32 (the CLI and the report), the median of --rounds
rounds, models interleaved round by round so that the machine's drift hits every row alike.
Results: benchmarks/results/explain_speed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("gradcam", "gradcam++", "hirescam", "eigencam")


def images(n: int, side: int):
    import numpy as np
    import torch

    try:
        from cnnarena.data.sources import load_source

        test = load_source("fashion-mnist").test
        x, what = test.images[:n], "Fashion-MNIST test images"
    except Exception as e:  # noqa: BLE001 - the benchmark still times on random pixels
        x, what = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)), \
            f"random pixels ({type(e).__name__})"
    if side != 28:
        x = torch.nn.functional.interpolate(x.float(), size=(side, side), mode="bilinear").round().clamp(0, 255) \
            .to(torch.uint8)
    return x, what


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--singles", type=int, default=8, help="images explained one at a time per round")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--scorecam-images", type=int, default=2, help="scorecam: images per round (slow)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "explain_speed.json")
    args = parser.parse_args()

    import torch

    from benchmarks import opt_in
    from cnnarena.explain.cam import explain, pick_layer
    from cnnarena.models.registry import create_model

    opt_in()
    classes = [str(i) for i in range(10)]
    setups = {"simple-2conv (28 px)": ("simple-2conv", 28, None), "efficientnet_lite0 (48 px)":
              ("efficientnet_lite0", 28, None), "efficientnet_lite0 (224 px)": ("efficientnet_lite0", 224, 224)}
    models, data = {}, {}
    for label, (name, side, size) in setups.items():
        extra = {"pretrained": False, "input_size": size} if name != "simple-2conv" else {}
        model = create_model(name, num_classes=10, in_chans=1, data_size=(side, side), classes=classes,
                             **extra).eval()
        x, what = images(max(args.batch, args.singles), side)
        models[label], data[label] = (model, pick_layer(model, x[:1].float() / 255)), x
    times: dict[str, dict[str, list[float]]] = {label: {} for label in setups}
    explain(models["simple-2conv (28 px)"][0], data["simple-2conv (28 px)"][:2])  # imports grad-cam once
    for r in range(args.rounds):
        for label, (model, layer) in models.items():
            x = data[label]
            for method in METHODS:
                explain(model, x[:1], method=method, layer=layer)  # warm-up
                t0 = time.perf_counter()
                for i in range(args.singles):
                    explain(model, x[i:i + 1], method=method, layer=layer)
                times[label].setdefault(f"{method} one at a time", []).append(
                    1000 * (time.perf_counter() - t0) / args.singles)
                t0 = time.perf_counter()
                explain(model, x[:args.batch], method=method, layer=layer, batch_size=args.batch)
                times[label].setdefault(f"{method} batch {args.batch}", []).append(
                    1000 * (time.perf_counter() - t0) / args.batch)
            t0 = time.perf_counter()
            explain(model, x[:args.scorecam_images], method="scorecam", layer=layer)
            times[label].setdefault("scorecam one image", []).append(
                1000 * (time.perf_counter() - t0) / args.scorecam_images)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    rows = {label: {k: round(statistics.median(v), 2) for k, v in t.items()} for label, t in times.items()}
    layers = {label: f"{layer.name} {'x'.join(map(str, layer.shape))}" for label, (_, layer) in models.items()}
    result = {"what": "milliseconds per image (median of rounds)", "images": what, "layers": layers,
              "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "torch": torch.__version__, "rounds": args.rounds, "ms_per_image": rows,
              "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    width = max(len(k) for k in next(iter(rows.values())))
    print(f"{'ms per image':<{width}}  " + "  ".join(f"{label:>28}" for label in rows))
    for key in next(iter(rows.values())):
        print(f"{key:<{width}}  " + "  ".join(f"{rows[label][key]:>28.2f}" for label in rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
