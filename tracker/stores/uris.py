"""Printing tracking URIs without their credentials, in messages, log lines and CLI output."""

from __future__ import annotations

import logging
import re
from typing import Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

MASK: Final = "***"
# Query parameters that carry a secret in the URIs people write for databases and S3.
_SECRET_KEY: Final = re.compile(r"pass|pwd|secret|token|credential|api_?key", re.IGNORECASE)
# A URI inside free text: a scheme, "://", then up to whitespace, a quote or a closing bracket.
_USER_INFO: Final = re.compile(r"(://[^/?#:@]*:)[^/?#]*@")
_URI_IN_TEXT: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")


def mask_password(uri: str) -> str:
    """`uri` with the password of its user info and the values of secret-looking query
    parameters (password=, sslpassword=, token=, ...) replaced by ***; anything else as is.
    Text that is not a URI comes back unchanged."""
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:  # a malformed host or port: mask whatever looks like user:password@
        return _USER_INFO.sub(rf"\1{MASK}@", uri)
    netloc = parts.netloc
    if password:
        user_info, _, host = netloc.rpartition("@")
        user = user_info.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}"
    query = parts.query
    if query and _SECRET_KEY.search(query):
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{k}={MASK if _SECRET_KEY.search(k) else v}" for k, v in pairs)
    if netloc == parts.netloc and query == parts.query:
        return uri
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def mask_credentials(text: str) -> str:
    """Every URI in `text` passed through mask_password: safe to print or log."""
    if "://" not in text:
        return text
    return _URI_IN_TEXT.sub(lambda m: mask_password(m.group(0)), text)


class MaskCredentials(logging.Filter):
    """A logging filter that masks credentials in a record's message before any handler
    formats it; attach it to a handler (filters on a logger do not reach its children)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_credentials(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info:
            # Formatters reuse exc_text when it is set, so the traceback is printed masked.
            record.exc_text = mask_credentials(_FORMATTER.formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = mask_credentials(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_credentials(record.stack_info)
        return True


_FORMATTER: Final = logging.Formatter()
