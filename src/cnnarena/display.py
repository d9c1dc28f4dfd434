"""HTML pieces for the notebook displays of a run, a study and a data report (`_repr_html_`).

Everything that comes from the data (class names, file names, paths) is escaped; images are embedded as base64
PNGs so that a saved notebook shows them without the run directory.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def image(path: Path, alt: str, width: int = 560, height: int | None = None) -> str:
    """An <img> of a PNG file, embedded; nothing when the file is not there."""
    path = Path(path)
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    tall = f"max-height:{height}px;" if height else ""
    return (f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}" '
            f'style="max-width:{width}px;{tall}margin:4px;vertical-align:top">')


def table(rows: Iterable[Iterable[Any]], header: Iterable[Any]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def row(*parts: str) -> str:
    """Side by side, wrapping on a narrow page."""
    return "<div style='display:flex;flex-wrap:wrap;align-items:flex-start'>" + "".join(parts) + "</div>"


def section(title: str, *parts: str) -> str:
    return f"<div class='cnnarena'><h3>{esc(title)}</h3>{''.join(parts)}</div>"


def bullets(lines: Iterable[str]) -> str:
    return "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>"


def percent(value: Any) -> str:
    return f"{value:.2%}" if isinstance(value, int | float) else "–"
