"""Tracking URIs as shown to people: credentials masked in every message and line of output."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def mask_password(uri: str) -> str:
    """`uri` with its password replaced by `***` (anything else unchanged)."""
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:
        return uri
    if password is None:
        return uri
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
