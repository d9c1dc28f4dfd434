"""The few lines that run an exported ONNX model in an application, with the card's preprocessing: Python with ONNX
Runtime, and JavaScript with ONNX Runtime Web. The model card carries them, and `cnnarena export` prints the Python
one; the tests run it. Other runtimes (OpenVINO) give python() their import, loading and inference lines."""

from __future__ import annotations

import json
from typing import Any

PYTHON = '''import json
import numpy as np
{library}
from PIL import Image, ImageOps

card = json.load(open({card_file}))
{load}
height, width = card["input"]["size"]
image = ImageOps.exif_transpose(Image.open("image.jpg"))
if image.mode in ("RGBA", "LA", "PA", "P"):  # transparency on white, as in training
    image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
image = image.convert("{mode}").resize((width, height), Image.LANCZOS)
x = np.asarray(image, np.float32) / 255
x = {layout}  # 1 x C x H x W, in [0, 1]: the model normalises itself
logits = {infer}
probs = np.exp(logits - logits.max()); probs /= probs.sum()
for k in np.argsort(-probs)[:{top}]:
    print(card["classes"][k], round(float(probs[k]), 4))
'''

JAVASCRIPT = '''// <script src="ort.wasm.min.js"></script> (ONNX Runtime Web), beside {onnx_file} and {card_file}
const card = await (await fetch({card_quoted})).json();
const session = await ort.InferenceSession.create({onnx_quoted});
const [h, w] = card.input.size, c = card.input.channels;
const canvas = Object.assign(document.createElement("canvas"), {{ width: w, height: h }});
const ctx = canvas.getContext("2d");
ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, h); ctx.drawImage(img, 0, 0, w, h);  // img: <img>, <video>, bitmap
const rgba = ctx.getImageData(0, 0, w, h).data, x = new Float32Array(c * w * h);
for (let i = 0; i < w * h; i++) for (let k = 0; k < c; k++)
  x[k * w * h + i] = (c === 1 ? 0.299 * rgba[4 * i] + 0.587 * rgba[4 * i + 1] + 0.114 * rgba[4 * i + 2]
                              : rgba[4 * i + k]) / 255;
const out = await session.run({{ [{input_quoted}]: new ort.Tensor("float32", x, [1, c, h, w]) }});
const logits = Array.from(out[{output_quoted}].data);
console.log(card.classes[logits.indexOf(Math.max(...logits))]);
'''


def python(card: dict[str, Any], card_file: str, library: str, load: str, infer: str) -> str:
    """The Python lines for a runtime: its import, how it loads the model and how it gives one image's logits."""
    gray = card["input"]["channels"] == 1
    return PYTHON.format(card_file=json.dumps(card_file), library=library, load=load, infer=infer,
                         mode="L" if gray else "RGB",
                         layout="x[None, None]" if gray else "x.transpose(2, 0, 1)[None]",
                         top=min(5, card["num_classes"]))


def usage(card: dict[str, Any], card_file: str) -> dict[str, str]:
    """{"python": ..., "javascript": ...} for the card's ONNX file."""
    names = {"onnx_file": card["onnx_file"], "input": card["input"]["name"], "output": card["output"]["name"]}
    quoted = {key: json.dumps(value) for key, value in names.items()}  # a file name with quotes stays one string
    return {"python": python(card, card_file, "import onnxruntime as ort",
                             f'session = ort.InferenceSession({quoted["onnx_file"]})',
                             f'session.run([{quoted["output"]}], {{{quoted["input"]}: x}})[0][0]'),
            "javascript": JAVASCRIPT.format(card_file=card_file, card_quoted=json.dumps(card_file),
                                            onnx_quoted=quoted["onnx_file"], input_quoted=quoted["input"],
                                            output_quoted=quoted["output"], onnx_file=names["onnx_file"])}
