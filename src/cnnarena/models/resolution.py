"""The resolution a pretrained backbone runs at when the user does not say: chosen from the images' own size.

ImageNet backbones expect ~224 px, but upsampling 28-px images 8x multiplies the compute ~60x. Measured with
EfficientNet-Lite0's default recipe (benchmarks/results/pretrained_resolution.json): 48 px beat 32 px on
Fashion-MNIST and on 8-px digits; 64 px was no better than 48 px; 80 px was better still (+2.4 and +1.1 points) but took
~3x the time of 48 px, which a laptop's budget pays in epochs (and a 2-core CPU falls off a cache cliff above ~80 px).
So small images run at 1.5x their side rounded up to a multiple of 16, at least 48 and at most 64 px; images of
64 px and more run at their own size (rounded up to 16) up to the backbone's own input size. --input-size overrides.
"""

from __future__ import annotations

import math

UPSCALE = 1.5
SMALL_MIN, SMALL_MAX = 48, 64


def auto_input_size(data_size: tuple[int, int], default: tuple[int, int], minimum: int = 0) -> tuple[int, int]:
    """Square side for images of `data_size` (h, w) and a backbone whose own input size is `default`."""
    side = min(data_size)
    own = min(default)
    if side >= own:
        return tuple(default)
    if side < SMALL_MAX:
        chosen = min(SMALL_MAX, max(SMALL_MIN, _round16(UPSCALE * side)))
    else:
        chosen = min(own, _round16(side))
    chosen = max(chosen, minimum)
    return (chosen, chosen)


def _round16(x: float) -> int:
    return int(16 * math.ceil(x / 16))
