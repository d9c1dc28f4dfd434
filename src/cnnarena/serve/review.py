"""`cnnarena doctor DATA --review`: a local page (127.0.0.1 only) to act on the doctor's findings.

Each finding shows its images side by side (duplicate pairs, label issues with the given and the likely label,
images unlike their class); the user marks each image keep, exclude or relabel, and the page saves curation.yaml
beside the report. Images are served from the decoded tensors by index, so no path a client sends is ever opened,
and the user's files are never written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data.curation import decisions, read_curation, write_curation
from ..data.dataset import ImageSet
from ..errors import UserError

STATIC = Path(__file__).parent / "static"
MAX_SHOWN = 500  # findings of each kind on the page (the report lists them all)
MAX_BODY = 16 << 20
CURATION = "curation.yaml"


def findings(report: dict[str, Any], index: dict[str, int]) -> list[dict[str, Any]]:
    """The page's cards: each names its images by index and says what the doctor saw."""
    cards: list[dict[str, Any]] = []
    pairs = sorted(report["duplicates"]["pairs"], key=lambda r: (r["label_a"] == r["label_b"], r["kind"] != "exact"))
    for p in pairs[:MAX_SHOWN]:
        conflict = p["label_a"] != p["label_b"]
        cards.append({"kind": "duplicate", "title": f"{p['kind']} duplicate" + (" filed under two classes"
                                                                                if conflict else ""),
                      "detail": f"similarity {p['similarity']:.3f}",
                      "images": [_image(p[s], p[f"label_{s}"], index) for s in ("a", "b")]})
    for issue in (report.get("label_issues") or [])[:MAX_SHOWN]:
        cards.append({"kind": "label", "title": "label issue",
                      "detail": f"given {issue['given']} ({issue['given_probability']:.2f}), likely "
                                f"{issue['likely']} ({issue['likely_probability']:.2f})",
                      "likely": issue["likely"], "images": [_image(issue["id"], issue["given"], index)]})
    for o in (report.get("outliers") or [])[:MAX_SHOWN]:
        cards.append({"kind": "outlier", "title": "unlike its class", "detail": f"z = {o['z']}",
                      "images": [_image(o["id"], o["class"], index)]})
    return cards


def _image(image_id: str, label: str, index: dict[str, int]) -> dict[str, Any]:
    return {"id": image_id, "label": label, "index": index[image_id]}


def png(images: ImageSet, k: int) -> bytes:
    from ..explain.figures import png_bytes

    x = images.images[k].numpy()
    return png_bytes(x[0] if x.shape[0] == 1 else np.ascontiguousarray(x.transpose(1, 2, 0)))


def checked_decisions(body: Any, ids: set[str], classes: list[str]) -> tuple[set[str], dict[str, str], set[str]]:
    """(exclude, relabel, keep) from the page's JSON, checked as a curation file is, every id one of the data's
    and every class one of its classes; anything else is a UserError with one line to show."""
    exclude, relabel, keep = decisions(body, "the decisions")
    unknown = [i for i in (*exclude, *keep, *relabel) if i not in ids]
    if unknown:
        raise UserError(f"{len(unknown)} id(s) not in this data (first: {unknown[0][:200]})")
    bad = [c for c in relabel.values() if c not in classes]
    if bad:
        raise UserError(f"not a class of this data: {bad[0][:200]}")
    return exclude, relabel, keep


def saved_decisions(path: Path, dataset: str, ids: set[str], classes: list[str]) -> dict[str, Any]:
    """What an earlier review of this dataset saved (so the page starts from it): decisions on images the data no
    longer has are dropped, and said; a file of another dataset, or one that cannot be read, is not loaded."""
    empty: dict[str, Any] = {"exclude": [], "relabel": {}, "keep": [], "note": None}
    if not path.is_file():
        return empty
    try:
        c = read_curation(path)
    except UserError as e:
        return {**empty, "note": f"{e} (saving keeps it as {path.name}.bak)"}
    if c.dataset is not None and c.dataset != dataset:
        return {**empty, "note": f"{path} holds decisions on {c.dataset}, not on {dataset}: saving replaces it"}
    relabel = {i: cls for i, cls in c.relabel if i in ids and cls in classes}
    kept = {"exclude": sorted(c.exclude & ids), "relabel": relabel, "keep": sorted(c.keep & ids)}
    dropped = len(c.exclude) + len(c.relabel) + len(c.keep) - len(kept["exclude"]) - len(relabel) - len(kept["keep"])
    note = f"{dropped} saved decision(s) name images this data no longer has: dropped" if dropped else None
    return {**kept, "note": note}


def _keep_unreadable(path: Path) -> None:
    """A curation file that cannot be read (a hand edit gone wrong) is moved aside, not overwritten."""
    if path.is_file():
        try:
            read_curation(path)
        except UserError:
            path.replace(path.with_name(path.name + ".bak"))


def _refused(request) -> Any:
    """The save comes from the page itself: JSON (a cross-site form or no-cors fetch cannot send that without a
    preflight, which is not answered) and, where the browser says where it comes from, from this origin."""
    from starlette.responses import JSONResponse

    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return JSONResponse({"detail": "send the decisions as application/json"}, status_code=415)
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
        return JSONResponse({"detail": f"saving from {origin[:100]} is not allowed"}, status_code=403)
    return None


def _static(name: str, media: str):
    from starlette.responses import FileResponse

    async def send(request) -> Any:
        return FileResponse(STATIC / name, media_type=media)
    return send


def create_review_app(report: dict[str, Any], images: ImageSet, out: Path):
    """The Starlette app of the review page; decisions are saved to out/curation.yaml."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    index = {image_id: k for k, image_id in enumerate(images.ids)}
    ids, classes = set(index), list(images.classes)
    target = Path(out) / CURATION
    page = {"dataset": report["dataset"].get("spec") or report["dataset"]["name"], "classes": classes,
            "cards": findings(report, index), "curation": str(target)}

    async def findings_json(request: Request) -> Response:
        return JSONResponse({**page, "saved": saved_decisions(target, page["dataset"], ids, classes)})

    async def image(request: Request) -> Response:
        k = request.path_params["k"]
        if not 0 <= k < len(images):
            return JSONResponse({"detail": "no such image"}, status_code=404)
        return Response(png(images, k), media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    async def save(request: Request) -> Response:
        refused = _refused(request)
        if refused is not None:
            return refused
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return JSONResponse({"detail": f"body over {MAX_BODY >> 20} MB"}, status_code=413)
        try:
            exclude, relabel, keep = checked_decisions(json.loads(body or b"null"), ids, classes)
        except (UserError, ValueError, RecursionError) as e:  # json.JSONDecodeError is a ValueError
            return JSONResponse({"detail": (str(e).splitlines() or [""])[0]}, status_code=400)
        try:
            _keep_unreadable(target)
            write_curation(target, dataset=page["dataset"], exclude=exclude, relabel=relabel, keep=keep)
        except OSError as e:
            return JSONResponse({"detail": f"cannot write {target}: {e.strerror or e}"}, status_code=500)
        return JSONResponse({"path": str(target), "excluded": len(exclude), "relabelled": len(relabel),
                             "kept": len(keep)})

    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    # another site's page in the user's browser must not read the images or write the file (DNS rebinding included)
    hosts = Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"])
    return Starlette(middleware=[hosts], routes=[
        Route("/", _static("review.html", "text/html")),
        Route("/review.js", _static("review.js", "text/javascript")),
        Route("/style.css", _static("style.css", "text/css")),
        Route("/api/findings", findings_json),
        Route("/api/image/{k:int}", image),
        Route("/api/curation", save, methods=["POST"]),
    ])
