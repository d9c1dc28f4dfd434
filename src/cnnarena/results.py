"""What the public API hands back: a `Run`, a `Study` and a `DataReport`, each over a directory on disk.

Nothing is held only in memory: every property reads the directory (through rundir), so an object made by
`cnnarena.load(path)` in a new notebook is the same as the one `cnnarena.train` returned. Each displays itself in a
notebook (`_repr_html_`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import display, run_actions, rundir
from .errors import UserError


class Run:
    """One trained (or training) model and everything it wrote: `cnnarena.train(...)` or `cnnarena.load(dir)`.

    Example:
        >>> run = cnnarena.load("runs/fast")
        >>> run.metrics["test_accuracy"], run.predict("photos/cat.jpg", top_k=3)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, {self.state.value})"

    @property
    def state(self) -> rundir.State:
        """new, partly trained, finished, or not a cnnarena directory."""
        return rundir.state(self.path)

    @property
    def metrics(self) -> dict[str, Any]:
        """metrics.json: test accuracy, macro F1, per-class scores, confusion matrix, timings, parameters."""
        return rundir.read_metrics(self.path)

    @property
    def config(self) -> dict[str, Any]:
        """The resolved options the run trained with (config.yaml)."""
        from .config import read_saved

        return read_saved(self.path)

    @property
    def classes(self) -> list[str]:
        """The class names, in the order of the model's outputs (after any --class-map)."""
        from .models.artefacts import read_meta

        return list(read_meta(self.path).classes)

    @property
    def history(self):
        """One row per epoch (pandas DataFrame): losses, accuracies, learning rate, images/s, seconds."""
        import pandas as pd

        return pd.DataFrame(rundir.read_history(self.path))

    def predict(self, images: Any, top_k: int = 5, batch_size: int = 64):
        """Top-k classes for image files, folders (searched), PIL images or uint8 arrays, decoded like the
        training data. A DataFrame: image, label, probability, top_k [(label, probability)...], error."""
        import pandas as pd

        rows = run_actions.predict(self.path, images, top_k=top_k, batch_size=batch_size)
        return pd.DataFrame([{"image": r.path, "label": r.top[0][0] if r.top else None,
                              "probability": r.top[0][1] if r.top else None, "top_k": r.top, "error": r.error}
                             for r in rows])

    def evaluate(self, data: str | None = None, tta: bool | None = None) -> dict[str, Any]:
        """Re-evaluate on the run's test split, or on another dataset with the same classes (evaluation.json)."""
        return run_actions.evaluate(self.path, data=data, tta=tta)

    def explain(self, images: Any, method: str = "gradcam", target: str | None = None, layer: str | None = None,
                out: str | Path | None = None, top_k: int = 5) -> dict[str, Any]:
        """Class activation maps (grad-cam) for image files or folders; PNGs and explanations.json in `out`."""
        return run_actions.explain(self.path, images, method=method, target=target, layer=layer, top_k=top_k,
                                   out=Path(out) if out else None)

    def export(self, format: str = "onnx", output: str | Path | None = None, **options: Any) -> Path:
        """Export the model (onnx, torchscript or pt2; `int8=True` for a quantized ONNX) and return the file.
        Options: int8, exporter, opset, max_drop, calibration, timing (as `cnnarena export`)."""
        return run_actions.export(self.path, format, Path(output) if output else None, **options).path

    def serve(self, host: str = "127.0.0.1", **options: Any):
        """Serve the model over HTTP from a child process on a free port; returns it once it answers.
        `server.url` is its address (the web page is at /), `server.stop()` ends it. Options as `cnnarena serve`."""
        return run_actions.serve_in_background(self.path, host=host, **options)

    def _repr_html_(self) -> str:
        found = self.state
        if found is not rundir.State.FINISHED:
            return display.section(f"cnnarena run {self.path}", f"<p>{display.esc(found.value)}</p>")
        m = self.metrics
        summary = display.table([[m.get("model"), m.get("data"), display.percent(m.get("test_accuracy")),
                                  f"{m.get('macro_f1', 0):.4f}", m.get("epochs_run"),
                                  f"{m.get('train_seconds', 0):.1f} s", f"{m.get('params_total', 0):,}"]],
                                ["model", "data", "test accuracy", "macro F1", "epochs", "training", "parameters"])
        per_class = m.get("per_class") or {}
        classes = display.table([[name, f"{v.get('precision', 0):.3f}", f"{v.get('recall', 0):.3f}",
                                  f"{v.get('f1-score', 0):.3f}", int(v.get("support", 0))]
                                 for name, v in per_class.items()],
                                ["class", "precision", "recall", "F1", "images"]) if per_class else ""
        plots = self.path / rundir.PLOTS
        return display.section(f"cnnarena run {self.path}", summary,
                               display.row(display.image(plots / "curves.png", "training curves"),
                                           display.image(plots / "confusion_matrix.png", "confusion matrix")),
                               classes)


class Study:
    """Several models trained on one split, and their comparison: `cnnarena.study(...)`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Study({str(self.path)!r})"

    @property
    def comparison(self) -> dict[str, Any]:
        """comparison.json, whole."""
        found = rundir.read_json(self.path / rundir.COMPARISON, "study comparison")
        if not isinstance(found, dict) or "table" not in found:
            raise UserError(f"{self.path / rundir.COMPARISON} is not a cnnarena study comparison")
        return found

    @property
    def table(self):
        """The comparison, one row per model, best first (pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame(self.comparison["table"])

    @property
    def verdict(self) -> str:
        """The answer: which approach won, by how much, how sure, at what cost, what could change it (a study
        written before the answer paragraph existed gives its findings, one per line)."""
        c = self.comparison
        return c.get("answer") or "\n".join(c.get("verdict", []))

    @property
    def findings(self) -> list[str]:
        """The study's other conclusions, one sentence each."""
        return list(self.comparison.get("verdict", []))

    @property
    def methods(self) -> dict[str, str]:
        """Each model's recipe as it ran, a paragraph per model (the report's Methods)."""
        return dict(self.comparison.get("methods", {}))

    @property
    def runs(self) -> dict[str, Run]:
        """The compared runs on the whole training set, by model, best first."""
        return {row["model"]: Run(self._run_path(row["run_dir"])) for row in self.comparison["table"]}

    def _run_path(self, recorded: str) -> Path:
        """A run's directory as the comparison recorded it, relative to the folder the study ran in: found inside
        this study directory (runs/MODEL/f=F-s=S) wherever it is opened from."""
        path = Path(recorded)
        return path if path.is_absolute() else self.path.joinpath(*path.parts[-3:])

    @property
    def winner(self) -> Run:
        """The run ranked first."""
        return next(iter(self.runs.values()))

    @property
    def finished(self) -> bool:
        """Whether the comparison and the report have been written."""
        return (self.path / rundir.COMPARISON).is_file()

    @property
    def markdown(self) -> str:
        """comparison.md: the table and the verdict, as Markdown."""
        return (self.path / rundir.COMPARISON_MD).read_text()

    @property
    def report_path(self) -> Path:
        return self.path / rundir.REPORT

    @property
    def summary_text(self) -> str:
        """What `cnnarena study` prints last: the tables, the answer and the winner's next steps."""
        from .report.comparison import terminal_summary

        return terminal_summary(self.comparison)

    def _repr_html_(self) -> str:
        if not self.finished:
            return display.section(f"cnnarena study {self.path}", "<p>not finished: no comparison yet</p>")
        c = self.comparison
        rows = [[r["model"], r["family"], display.percent(r.get("accuracy")), f"{r.get('macro_f1', 0):.4f}",
                 f"{r.get('train_seconds', 0):.0f} s", f"{r.get('params', 0):,}", f"{r.get('latency_ms', 0):.2f} ms"]
                for r in c["table"]]
        table = display.table(rows, ["model", "family", "test accuracy", "macro F1", "training", "parameters",
                                     "latency (batch 1)"])
        report = f"<p>Full report: <code>{display.esc(self.report_path)}</code></p>"
        answer = f"<p>{display.esc(c['answer'])}</p>" if c.get("answer") else display.bullets(c.get("verdict", []))
        return display.section(f"cnnarena study on {c.get('data')}", answer, table,
                               display.image(self.path / rundir.PLOTS / "accuracy_vs_time.png", "accuracy vs time",
                                             width=560), report)


class DataReport:
    """What `cnnarena.doctor` found in a dataset: `.report` (doctor.json's content), `.serious`, `.path` (the folder
    of the report), `.files` (what this examination wrote there: doctor.md, doctor.json, the image grids)."""

    def __init__(self, report: dict[str, Any], path: str | Path, files: list[Path] | None = None,
                 images: Any = None) -> None:
        self.report, self.path, self.files = report, Path(path), [Path(f) for f in files or []]
        self.images = images  # the decoded images the report names (an ImageSet), for the review page
        self._page = None  # the review page this report serves, if any

    def __repr__(self) -> str:
        return f"DataReport({str(self.path)!r}, {len(self.serious)} serious findings)"

    @property
    def serious(self) -> list[str]:
        return list(self.report.get("serious", []))

    def review(self, *, port: int = 0, wait: bool = False):
        """The review page of these findings on 127.0.0.1: mark each image keep, exclude or relabel, and Save writes
        curation.yaml beside the report. Served from a background thread (a notebook cell shows it inline;
        `.stop()` ends it; a second call stops the first page), or until Ctrl-C with wait=True."""
        from .errors import UserError
        from .serve.review_server import serve_review

        if self.images is None:
            raise UserError("this report holds no images: run cnnarena.doctor again to review it")
        if self._page is not None:
            self._page.stop()
        self._page = serve_review(self.report, self.images, self.path, port=port, wait=wait)
        return self._page

    @property
    def summary(self) -> str:
        from .data.doctor import summary_lines

        return "\n".join(summary_lines(self.report))

    def _repr_html_(self) -> str:
        from .data.doctor import summary_lines

        serious = (f"<p><b>Serious:</b></p>{display.bullets(self.serious)}" if self.serious
                   else "<p>Nothing serious found.</p>")
        name = self.report.get("dataset", {}).get("spec", "")
        return display.section(f"cnnarena doctor: {name}", serious, display.bullets(summary_lines(self.report)),
                               display.row(*(display.image(f, f.stem.replace("_", " "), 560, 560)
                                             for f in self.files if f.suffix == ".png")))
