"""Secrets kept out of what cnnarena prints: passwords and keys in URLs (--mlflow, --storage) and in the error
messages that quote them."""

from __future__ import annotations

import re

_USER_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]+@")
_SECRET_QUERY = re.compile(r"([?&;][^=&\s]*(?:pass|pwd|secret|token|key)[^=&\s]*=)[^&\s]+", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """Any text fit to print: a URL's password (user:PASSWORD@) and query secrets (?password=...) masked, wherever
    they appear (an error message often quotes the URL it was given)."""
    return _SECRET_QUERY.sub(r"\1***", _USER_PASSWORD.sub(r"\1***@", str(text)))
