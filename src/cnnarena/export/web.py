"""`cnnarena export RUN_DIR --format web`: a static folder that classifies images in the browser, with no server.

The folder holds index.html and app.js (upload or webcam, top-k bars), the model in ONNX, its card, and ONNX Runtime
Web's WebAssembly build: it works offline and from any static host (GitHub Pages, `python -m http.server`). It is
written only once it passed two checks: ONNX Runtime in Python reproduces PyTorch's logits (the ONNX export's own
check), and the page itself, in headless Chromium, gives the same top-1 class as ONNX Runtime in Python on at least
MIN_AGREEMENT of up to CHECK_IMAGES test images. The card records both, the test accuracy, and the browser's images/s.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..files import atomic_write_text
from .browser_check import check_in_browser, unavailable
from .onnx import INPUT_NAME, OUTPUT_NAME, export_onnx
from .quantize import accuracy, run_images
from .snippets import usage
from .speed import session
from .web_runtime import FILES, VERSION, runtime_dir

PAGE = Path(__file__).parent / "web_page"
STYLE = Path(__file__).parent.parent / "serve" / "static" / "style.css"  # the served page's look
CHECK_IMAGES = 200
MIN_AGREEMENT = 0.99
CARD = "model.card.json"
OURS = {"index.html", "app.js", "style.css", "model.onnx", CARD, *FILES}


def export_web(run_dir: Path, output: Path | None = None, seconds: float = 2.0) -> tuple[Path, dict[str, Any]]:
    """Write the folder (default RUN_DIR/web); returns it and its card. UserError when a check fails."""
    folder = Path(output) if output else Path(run_dir) / "web"
    if folder.exists() and (not folder.is_dir() or set(p.name for p in folder.iterdir()) - OURS):
        raise UserError(f"--output {folder} holds files that are not a cnnarena web export: give a new or empty "
                        f"folder")
    runtime = runtime_dir()  # before the model work: a missing runtime is one line, at once
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        card = export_onnx(Path(run_dir), staging / "model.onnx").card
        for name in FILES:
            shutil.copyfile(runtime / name, staging / name)
        for name in ("index.html", "app.js"):
            shutil.copyfile(PAGE / name, staging / name)
        shutil.copyfile(STYLE, staging / "style.css")
        card["web"] = _checked(Path(run_dir), staging, seconds)  # the page reads the card export_onnx wrote
        card["usage"] = usage(card, CARD)
        atomic_write_text(staging / CARD, json.dumps(card, indent=1))
        staging.chmod(0o755)  # mkdtemp's folder is private; an export is meant to be shared
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder, card


def _checked(run_dir: Path, staging: Path, seconds: float) -> dict[str, Any]:
    """The web section of the card: test accuracy in ONNX Runtime, and the browser's agreement and speed."""
    test = run_images(run_dir).test
    model = session(staging / "model.onnx")
    web = {"runtime": f"onnxruntime-web {VERSION} (WebAssembly, SIMD; one thread unless the host sends "
                      f"cross-origin isolation headers)",
           "test_accuracy_onnxruntime": round(accuracy(model, test.images, test.labels), 6),
           "test_images": len(test)}
    why_not = unavailable()
    if why_not:
        return {**web, "browser_check": f"not run: {why_not}"}
    pick = np.sort(np.random.default_rng(0).permutation(len(test))[:CHECK_IMAGES])
    images = test.images[pick].numpy()
    expected = model.run([OUTPUT_NAME], {INPUT_NAME: images.astype(np.float32) / np.float32(255)})[0].argmax(1)
    try:
        seen = check_in_browser(staging, images, seconds)
    except Exception as e:  # a browser that cannot start or load the page: the export is not checked, not kept
        raise UserError(f"the web export's check in Chromium failed: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}") from e
    agree = float(np.mean(np.asarray(seen["top1"]) == expected))
    if agree < MIN_AGREEMENT:
        raise UserError(f"in Chromium the page gave ONNX Runtime's top-1 class for {100 * agree:.1f}% of "
                        f"{len(images)} test images, under {100 * MIN_AGREEMENT:.0f}%: not written")
    truth = test.labels[pick].numpy()
    return {**web, "browser_check": {
        "browser": seen["browser"], "images": len(images), "top1_agreement_with_onnxruntime": round(agree, 4),
        "accuracy_in_browser": round(float(np.mean(np.asarray(seen["top1"]) == truth)), 4),
        "images_per_second": seen["images_per_second"]}}
