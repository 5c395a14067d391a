"""A provider that answers from memory (providers behind their Protocol, base.py): the paths'
logic is tested with it, without a network or gRPC."""
from __future__ import annotations

import json
from typing import Any, Callable

from cascade_extproc.types import Api, Response


class FakeProvider:
    """Records every call (the raw bytes and their parse); answers with `reply(body)` or raises."""

    def __init__(self, reply: Callable[[dict], Response] | None = None, error: Exception | None = None,
                 api: Api = Api.ANTHROPIC):
        self.api = api
        self.reply = reply
        self.error = error
        self.calls: list[tuple[dict, dict, float]] = []
        self.raw: list[bytes] = []

    async def complete(self, body: bytes | dict[str, Any], headers: dict[str, str], timeout_s: float) -> Response:
        assert isinstance(body, bytes)  # the paths send bytes, never a re-serializable dict
        self.raw.append(body)
        parsed = json.loads(body)
        self.calls.append((parsed, dict(headers), timeout_s))
        if self.error:
            raise self.error
        assert self.reply is not None, "FakeProvider: no reply and no error"
        return self.reply(parsed)
