"""Draft → verify → accepted | enhanced. Raises CascadeError for the caller to fall back."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from cascade_extproc import verify
from cascade_extproc.codecs import anthropic, openai
from cascade_extproc.providers import ProviderError
from cascade_extproc.types import Api, Path, Request, Response


class Provider(Protocol):
    async def complete(self, body: dict[str, Any], headers: dict[str, str],
                       timeout_s: float) -> Response: ...


class CascadeError(Exception):
    def __init__(self, stage: str, cause: Exception):
        super().__init__(f"{stage}: {cause}")
        self.stage = stage  # "draft" or "verify": the metric's fallback reason


@dataclass
class Outcome:
    path: Path
    response: Response  # what the client gets
    draft: Response
    verdict: Response


@dataclass
class CascadeCall:
    """Everything one cascade needs besides the request."""

    draft: Provider
    draft_model: str
    draft_headers: dict[str, str]
    strong: Provider
    strong_headers: dict[str, str]
    draft_timeout_s: float
    verify_timeout_s: float


async def run(req: Request, call: CascadeCall) -> Outcome:
    codec = anthropic if req.api is Api.ANTHROPIC else openai
    draft_body = codec.with_model(req.body, call.draft_model, stream=False)
    try:
        draft = await call.draft.complete(draft_body, call.draft_headers, call.draft_timeout_s)
    except ProviderError as exc:
        raise CascadeError("draft", exc) from exc
    nonce = verify.new_nonce()
    verify_body = codec.with_user_text(codec.with_model(req.body, req.model, stream=False),
                                       verify.instruction(draft, nonce))
    try:
        verdict = await call.strong.complete(verify_body, call.strong_headers, call.verify_timeout_s)
    except ProviderError as exc:
        raise CascadeError("verify", exc) from exc
    if verify.accepted(verdict, nonce):
        return Outcome(Path.ACCEPTED, draft, draft, verdict)
    return Outcome(Path.ENHANCED, verdict, draft, verdict)
