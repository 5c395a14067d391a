"""Logging: plain lines for people, one JSON line per request, and no secrets either way."""
from __future__ import annotations

import logging
import re
import sys
from typing import Iterable

# Key shapes of the providers we front, and bearer tokens; a configured key is redacted as well.
_SECRETS = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9._\-]{8,})")


class Redact(logging.Filter):
    def __init__(self, extra: Iterable[str] = ()):
        super().__init__()
        self.extra = [s for s in extra if s and len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = _SECRETS.sub("[redacted]", msg)
        for secret in self.extra:
            clean = clean.replace(secret, "[redacted]")
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def setup(level: str, secrets: Iterable[str] = ()) -> None:
    """Request records (logger cascade_extproc.requests) are bare JSON lines; the rest is text."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level.upper())
    redact = Redact(secrets)
    text = logging.StreamHandler(sys.stderr)
    text.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    text.addFilter(redact)
    text.addFilter(lambda r: r.name != "cascade_extproc.requests")
    root.addHandler(text)
    requests = logging.getLogger("cascade_extproc.requests")
    requests.handlers.clear()
    requests.propagate = False
    lines = logging.StreamHandler(sys.stderr)
    lines.setFormatter(logging.Formatter("%(message)s"))
    lines.addFilter(redact)
    requests.addHandler(lines)
