"""Names a user gives reach the figures as written: matplotlib reads text between two "$" as mathematical notation,
so a class folder named `a$\\frac{$b` once stopped a finished run with a parse error while its plots were drawn."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import cnnarena
from cnnarena.figure_text import literal

HOSTILE = ("a$\\frac{$b", "cost $5 $")


def _folder(root):
    digits = load_digits()
    for name, digit in zip(HOSTILE, (0, 1), strict=True):
        (root / name).mkdir(parents=True)
        for k, pixels in enumerate(digits.images[digits.target == digit][:24]):
            Image.fromarray((pixels * 255 / 16).astype(np.uint8)).resize((32, 32)).save(root / name / f"{k}.png")
    return root


def test_a_run_on_classes_named_like_mathematical_notation_draws_its_plots(tmp_path):
    run = cnnarena.train(_folder(tmp_path / "data"), model="simple-2conv", epochs=1, out=tmp_path / "run")
    assert sorted(run.metrics["per_class"]) == sorted(HOSTILE)
    for plot in ("curves.png", "confusion_matrix.png", "top_mistakes.png"):
        assert (tmp_path / "run" / "plots" / plot).stat().st_size > 1000


def test_a_literal_name_is_drawn_as_written_where_the_raw_name_fails():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def draw(text: str) -> None:
        fig = Figure()
        fig.text(0, 0, text)
        FigureCanvasAgg(fig).draw()

    with pytest.raises(ValueError):
        draw(HOSTILE[0])
    draw(literal(HOSTILE[0]))  # an escaped dollar is drawn as a dollar
