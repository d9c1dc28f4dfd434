"""The files of `cnnarena doctor`: doctor.json (the whole report), doctor.md (a table per finding) and PNG grids of
the duplicate pairs and of the most suspicious labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import ImageSet
from ..figure_text import literal
from ..files import atomic_write_text
from .plots import _save, subplots

GRID_PAIRS = 12
GRID_LABELS = 16
TABLE_ROWS = 50


def write_doctor_report(report: dict[str, Any], data: ImageSet, out: Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "doctor.json", out / "doctor.md"]
    atomic_write_text(paths[0], json.dumps(report, indent=1))
    atomic_write_text(paths[1], markdown(report))
    index = {image_id: k for k, image_id in enumerate(data.ids)}
    pairs = sorted(report["duplicates"]["pairs"], key=lambda r: (r["label_a"] == r["label_b"], r["kind"] != "exact"))
    if pairs:
        paths.append(_pair_grid(pairs[:GRID_PAIRS], data, index, out / "duplicates.png"))
    if report["label_issues"]:
        paths.append(_label_grid(report["label_issues"][:GRID_LABELS], data, index, out / "label_issues.png"))
    return paths


def _image(data: ImageSet, k: int) -> np.ndarray:
    x = data.images[k].numpy()
    return x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)


def _pair_grid(pairs: list[dict], data: ImageSet, index: dict[str, int], path: Path) -> Path:
    fig, axes = subplots(len(pairs), 2, figsize=(4.6, 2.3 * len(pairs)), squeeze=False)
    for row, pair in zip(axes, pairs, strict=True):
        for ax, side in zip(row, ("a", "b"), strict=True):
            ax.imshow(_image(data, index[pair[side]]), cmap="gray")
            split = f" [{pair[f'split_{side}']}]" if pair[f"split_{side}"] else ""
            ax.set_title(literal(f"{pair[side]}\n{pair[f'label_{side}']}{split}"), fontsize=7)
            ax.axis("off")
        row[0].text(1.02, 0.5, f"{pair['kind']}\n{pair['similarity']:.3f}", transform=row[0].transAxes,
                    fontsize=7, va="center")
    fig.suptitle("duplicate pairs (label conflicts first)", fontsize=9)
    return _save(fig, path)


def _label_grid(issues: list[dict], data: ImageSet, index: dict[str, int], path: Path) -> Path:
    cols = 4
    rows = -(-len(issues) // cols)
    fig, axes = subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, issue in zip(axes.flat, issues, strict=False):
        ax.imshow(_image(data, index[issue["id"]]), cmap="gray")
        ax.set_title(literal(f"{issue['id']}\ngiven {issue['given']} ({issue['given_probability']:.2f})\n"
                             f"likely {issue['likely']} ({issue['likely_probability']:.2f})"), fontsize=7)
    fig.suptitle("label issues: given vs likely label (out-of-sample probabilities)", fontsize=9)
    return _save(fig, path)


def md(value: Any) -> str:
    """A name as Markdown text: one line, its table pipes and markup characters escaped, HTML as text."""
    text = " ".join(str(value).splitlines())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "".join("\\" + c if c in "\\`*_[]|#" else c for c in text)


def markdown(report: dict[str, Any]) -> str:
    from ..data.doctor import summary_lines

    d, dup = report["dataset"], report["duplicates"]
    lines = [f"# cnnarena doctor: {md(d['name'])}", "", *[f"- {md(line)}" for line in summary_lines(report)], "",
             "## Classes", "", "| class | images |", "|---|---|"]
    lines += [f"| {md(c)} | {n} |" for c, n in d["counts"].items()]
    sections = [
        ("Unreadable files", ["path", "reason"], report["unreadable"]),
        ("Unusual modes", ["id", "mode", "what"], (report["files"] or {}).get("unusual_modes", [])),
        ("EXIF-rotated images", ["id", "orientation"], (report["files"] or {}).get("exif_rotated", [])),
        ("Size and aspect-ratio outliers", ["id", "height", "width", "why"],
         (report["files"] or {}).get("size_outliers", [])),
        ("Duplicate pairs", ["a", "b", "kind", "similarity", "label_a", "label_b", "split_a", "split_b"],
         dup["pairs"]),
        ("Label issues", ["id", "given", "likely", "given_probability", "likely_probability"],
         report["label_issues"] or []),
        ("Images unlike the rest of their class", ["id", "class", "score", "z"], report.get("outliers") or []),
    ]
    for title, keys, rows in sections:
        lines += ["", f"## {title} ({len(rows)})", ""]
        if not rows:
            lines.append("none")
            continue
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(md(r.get(k, "")) if r.get(k) is not None else "—" for k in keys) + " |"
                  for r in rows[:TABLE_ROWS]]
        if len(rows) > TABLE_ROWS:
            lines.append(f"\n... and {len(rows) - TABLE_ROWS} more (doctor.json has them all)")
    lines += ["", f"Duplicates: {dup['method']}.",
              f"Label issues: out-of-sample probabilities of a {md(report.get('label_issues_model') or 'model')} "
              f"(its find_label_issues)." if report["label_issues"] is not None else "Label issues: not looked for."]
    return "\n".join(lines) + "\n"
