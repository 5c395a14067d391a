"""The seam between the paths and the providers: what a path may ask of one. The real client is
http.py; mock.py answers from memory, for tests of the paths without a network."""
from __future__ import annotations

from typing import Any, Protocol

from cascade_extproc.types import Api, Response


class Provider(Protocol):
    api: Api  # the API the provider speaks

    async def complete(self, body: bytes | dict[str, Any], headers: dict[str, str],
                       timeout_s: float) -> Response:
        """The whole answer, or a ProviderError (errors.py)."""
        ...
