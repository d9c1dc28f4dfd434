"""POST /v1/explain's worker: heat maps of one image at a time, on a copy of the model, off the event loop.

The copy matters: grad-cam hooks the layer it explains, and the torch backend's model answers predictions from
another thread meanwhile. One worker thread, and at most MAX_WAITING requests queued behind it: a heat map costs a
forward and a backward pass, so a burst of them is refused (503) rather than left to pile up.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..explain.cam import FAST_METHODS, explain, pick_layer
from ..explain.figures import overlay, png_bytes

MAX_WAITING = 4


class ExplainBusy(Exception):
    pass


@dataclass
class HeatMap:
    png: bytes
    label: str  # the predicted class
    probability: float
    target: str  # the class the map explains
    layer: str
    method: str


class Explainer:
    def __init__(self, model: Any) -> None:
        self._source = model
        self._model = None
        self._layer = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cnnarena-explain")
        self._waiting = 0

    def _explain(self, image: np.ndarray, target: int | None, method: str) -> HeatMap:
        import torch

        with self._lock:
            if self._model is None:  # copied on first use: a server that never explains holds one model
                self._model = copy.deepcopy(self._source).cpu().eval()
            x = torch.from_numpy(np.ascontiguousarray(image))[None]
            if self._layer is None:
                self._layer = pick_layer(self._model, x.float().div(255.0))
            result = explain(self._model, x, method=method, targets=None if target is None else [target],
                             layer=self._layer)
        classes = self._model.meta.classes
        best = int(result.probs[0].argmax())
        return HeatMap(png_bytes(overlay(image, result.heat[0])), classes[best], float(result.probs[0, best]),
                       classes[result.targets[0]], result.layer, method)

    async def heat_map(self, image: np.ndarray, target: int | None, method: str = "gradcam") -> HeatMap:
        assert method in FAST_METHODS, method
        if self._waiting >= MAX_WAITING:
            raise ExplainBusy(f"{self._waiting} heat maps already queued")
        self._waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._explain, image, target, method)
        finally:
            self._waiting -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False)
