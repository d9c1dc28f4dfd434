"""--mlflow's tracking URI, checked before anything trains."""

from __future__ import annotations

import logging
import os

from ..errors import UserError
from ..masking import mask_secrets  # noqa: F401 - re-exported for the trackers


def checked_uri(value: str | None) -> str | None:
    """--mlflow's tracking URI, checked (mlflow importable, the store reachable and set up) before anything trains;
    under torchrun by rank 0 alone, the one that logs."""
    if value is None:
        return None
    from .mlflow_log import open_store, tracking_uri

    uri = tracking_uri(value)
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UserError("--mlflow needs the mlflow package: pip install mlflow") from None
    logging.getLogger("alembic").setLevel(logging.WARNING)  # table creation in a new SQLite store: not news
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    if os.environ.get("RANK", "0") == "0":
        open_store(uri)
    return uri
