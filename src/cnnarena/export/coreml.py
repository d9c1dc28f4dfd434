"""`cnnarena export RUN_DIR --format coreml`: a Core ML ML Program (model.mlpackage) for iPhone, iPad and Mac apps,
converted with coremltools from the model as torch.export captures it (a traced model kept the backbones' shape
arithmetic as `aten::Int` operations, which coremltools could not convert for EfficientNet-Lite0).

It is a classifier the way Apple's Vision framework takes one: the input is an image (grayscale or RGB, the run's
size, pixels scaled by 1/255 inside the model, which normalises itself as in training) and the outputs are the
class label and a dictionary of class probabilities (a softmax is added after the logits), with the run's class
names. Core ML's runtime runs only on Apple's systems, so on other machines the model is not run: its converted spec
is checked instead (the input's kind, size and colour space, the two outputs, the class labels), and the card says
that it was not run.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import atomic_write_text
from .onnx import model_card
from .quiet import first_line, quietly, tail

INPUT = "image"
LABEL, PROBABILITIES = "classLabel", "classLabel_probs"

USAGE = '''import coremltools as ct  # macOS: Core ML runs the model (in an app: Vision's VNCoreMLRequest)
from PIL import Image, ImageOps

model = ct.models.MLModel({file})
image = ImageOps.exif_transpose(Image.open("image.jpg")).convert("{mode}").resize(({width}, {height}), Image.LANCZOS)
result = model.predict({{"image": image}})
print(result["classLabel"], max(result["classLabel_probs"].values()))
'''


def card_path_of(path: Path) -> Path:
    return path.with_name(path.name + ".card.json")


def export_coreml(run_dir: Path, output: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Write model.mlpackage and its card once the spec checks pass; returns (path, card)."""
    try:
        with quietly():  # it warns, on import, about the torch and scikit-learn versions it has not tested
            import coremltools as ct
    except ImportError:
        raise UserError("--format coreml needs coremltools: pip install 'cnnarena[coreml]'") from None
    import torch

    from ..evaluate.predict import load_run_model

    path = Path(output) if output else Path(run_dir) / "model.mlpackage"
    if path.suffix.lower() != ".mlpackage":
        raise UserError(f"--output must end in .mlpackage (a Core ML ML Program is a folder), got {path}")
    if path.is_dir() and not (path / "Manifest.json").is_file():  # a folder of the user's: never replaced
        raise UserError(f"--output {path} is a folder that is not a Core ML package: give a new name")
    model = load_run_model(Path(run_dir)).cpu().eval()
    card = model_card(model, Path(run_dir))
    channels, (height, width) = card["input"]["channels"], card["input"]["size"]
    example = torch.rand(1, channels, height, width)
    colour = ct.colorlayout.GRAYSCALE if channels == 1 else ct.colorlayout.RGB
    with quietly() as said:
        try:
            classifier = torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval()
            exported = torch.export.export(classifier, (example,)).run_decompositions({})
            converted = ct.convert(exported, inputs=[ct.ImageType(name=INPUT, shape=example.shape, scale=1 / 255,
                                                                color_layout=colour)],
                                   classifier_config=ct.ClassifierConfig(list(card["classes"])),
                                   convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                                   minimum_deployment_target=ct.target.iOS15)
        except Exception as e:  # the converter's many failure types all mean "cannot export"
            raise UserError(f"Core ML conversion failed: {type(e).__name__}: {first_line(e)} (the "
                            f"converter said: {tail(said)})") from e
    check = check_spec(converted.get_spec(), card)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".cnnarena-coreml-", dir=path.parent) as tmp:  # moved in one rename
        staged = Path(tmp) / path.name
        with quietly():
            converted.save(str(staged))
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        shutil.move(str(staged), path)
    card.update(export_format="coreml", mlpackage=path.name, check=check, precision="float32",
                coremltools=ct.__version__)
    card["input"] = {**card["input"], "name": INPUT, "kind": "image", "shape": [1, channels, height, width],
                     "scale": "1/255 inside the model: give the image itself"}
    card["output"] = {"label": LABEL, "probabilities": PROBABILITIES, "meaning": "class name, and the softmax "
                      "probability of each class"}
    card["usage"] = {"python": USAGE.format(file=json.dumps(path.name), mode="L" if channels == 1 else "RGB",
                                            width=width, height=height)}
    atomic_write_text(card_path_of(path), json.dumps(card, indent=1))
    return path, card


def check_spec(spec, card: dict[str, Any]) -> dict[str, Any]:
    """The converted model's interface against the card; a mismatch is an error (nothing is written)."""
    description = spec.description
    (image,) = description.input
    kind = image.type.WhichOneof("Type")
    found = {"input": image.name, "input_kind": kind,
             "input_size": [image.type.imageType.height, image.type.imageType.width] if kind == "imageType" else None,
             "color_space": image.type.imageType.ColorSpace.Name(image.type.imageType.colorSpace)
             if kind == "imageType" else None,
             "outputs": sorted(o.name for o in description.output),
             "class_labels": _labels(spec)}
    expected = {"input": INPUT, "input_kind": "imageType", "input_size": list(card["input"]["size"]),
                "color_space": "GRAYSCALE" if card["input"]["channels"] == 1 else "RGB",
                "outputs": sorted([LABEL, PROBABILITIES]), "class_labels": list(card["classes"])}
    wrong = [k for k in expected if found[k] != expected[k]]
    if wrong:
        raise UserError(f"the Core ML model's {wrong[0].replace('_', ' ')} is {found[wrong[0]]!r}, not "
                        f"{expected[wrong[0]]!r}: not written")
    ran = sys.platform == "darwin"
    return {**found, "spec_checked": True, "run": False,
            "why_not_run": "Core ML's runtime runs only on macOS and iOS" if not ran else
                           "not run by the export: run it with the usage lines"}


def _labels(spec) -> list[str]:
    """The class names of the program's `classify` operation (an ML Program keeps them there)."""
    main = spec.mlProgram.functions["main"]
    for op in main.block_specializations[main.opset].operations:
        if op.type == "classify":
            values = op.inputs["classes"].arguments[0].value.immediateValue.list.values
            return [v.immediateValue.tensor.strings.values[0] for v in values]
    return []
