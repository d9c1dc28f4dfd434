"""examples/quickstart.ipynb runs in a real Jupyter kernel and shows its results inline; the docs build strictly; the
README stays a guide."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a Jupyter kernel, a doctor, a two-model study with a pretrained network, an export
@pytest.mark.alone  # its study runs on a 3 s budget per model
def test_the_quickstart_notebook_runs_and_displays_its_results(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("CNNARENA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    html = {i: "".join(o.get("data", {}).get("text/html", "") for o in c.outputs) for i, c in enumerate(cells)}
    sources = [c.source for c in cells]

    def cell(text: str) -> int:
        return next(i for i, s in enumerate(sources) if text in s)

    doctor, study, best = cell("cnnarena.doctor("), cell("cnnarena.study("), cell("best = study.winner")
    assert "cnnarena doctor" in html[doctor]
    assert "cnnarena study" in html[study] and "data:image/png" in html[study]
    assert any(answer in html[study] for answer in (" won: ", "No clear winner", "A tie"))  # the answer, first
    assert "cnnarena run" in html[best] and "data:image/png" in html[best]  # curves and confusion matrix
    assert "<table" in html[cell("best.predict(")]  # a DataFrame
    exported = "".join(o.get("data", {}).get("text/plain", "") for o in cells[cell("best.export(")].outputs)
    assert "model.onnx" in exported and list((tmp_path / "quickstart-study").rglob("model.onnx"))
    # messages and a live progress bar reach the cell with no set-up call
    streams = "".join(o.get("text", "") for o in cells[study].outputs if o.output_type == "stream")
    assert "study of 2 models" in streams and "epoch" in streams
    widgets = [o for o in cells[study].outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets, "no tqdm progress bar"


@pytest.mark.slow  # MkDocs builds the whole site
def test_the_docs_build_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    for name in ("train", "study", "load", "doctor", "Run", "Study", "DataReport"):
        assert f"cnnarena.api.{name}" in reference or f"cnnarena.results.{name}" in reference, name


def test_the_readme_guides_and_its_two_commands_come_first():
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 150
    first = "\n".join(lines[:6])
    assert "make study" in first and "make test" in first
    for heading in ("## Install", "## Quick start: the command line", "## Quick start: Python and notebooks",
                    "## Your own photo folder, step by step", "## Where each command writes"):
        assert heading in text
    assert not re.search(r"\d+(\.\d+)? ?(ms|µs|img/s|images/s)\b", text), "measurements belong in docs/"
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).is_file(), link
