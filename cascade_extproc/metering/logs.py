"""Logging: plain lines for people, one JSON line per request, and no secrets either way."""
from __future__ import annotations

import logging
import re
import sys
from typing import Iterable

# Key shapes of the providers we front, and bearer tokens; a configured key is redacted as well.
_SECRETS = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9._\-]{8,})")
REDACTED = "[redacted]"


class RedactingFormatter(logging.Formatter):
    """Redacts the formatted text of a record: the message with its arguments, and what the
    base Formatter appends to it (an exception's traceback with its chained causes, a
    stack_info dump). A filter that rewrites record.msg sees none of the latter."""

    def __init__(self, fmt: str, secrets: Iterable[str] = ()):
        super().__init__(fmt)
        # Longest first, so that a secret containing another is redacted whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        text = _SECRETS.sub(REDACTED, text)
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


def setup(level: str, secrets: Iterable[str] = ()) -> None:
    """Request records (logger cascade_extproc.requests) are bare JSON lines; the rest is text.
    Every line either handler writes passes through RedactingFormatter."""
    secrets = list(secrets)
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level.upper())
    text = logging.StreamHandler(sys.stderr)
    text.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets))
    text.addFilter(lambda r: r.name != "cascade_extproc.requests")
    root.addHandler(text)
    requests = logging.getLogger("cascade_extproc.requests")
    requests.handlers.clear()
    requests.propagate = False
    lines = logging.StreamHandler(sys.stderr)
    lines.setFormatter(RedactingFormatter("%(message)s", secrets))
    requests.addHandler(lines)
