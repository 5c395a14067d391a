"""Whose credentials go where: the client's own to the strong provider, as sent; the sidecar's own
key to the draft provider; nothing of the client's to the draft."""
from __future__ import annotations

from cascade_extproc.headers import DEFAULT_ANTHROPIC_VERSION
from cascade_extproc.types import Api, Request

# Credentials the strong provider accepts from the client; forwarded only to the strong provider.
STRONG_HEADERS = {
    Api.ANTHROPIC: ("x-api-key", "authorization", "anthropic-version", "anthropic-beta"),
    Api.OPENAI: ("authorization", "openai-organization", "openai-project"),
}


def client_credentials(req: Request) -> bool:
    """Whether the client sent what the strong provider authenticates it by."""
    keys = ("x-api-key", "authorization") if req.api is Api.ANTHROPIC else ("authorization",)
    return any(req.headers.get(k, "").strip() for k in keys)


def strong_headers(req: Request) -> dict[str, str]:
    return {k: req.headers[k] for k in STRONG_HEADERS[req.api] if k in req.headers}


def draft_auth(req: Request, draft_api: Api, key: str) -> dict[str, str]:
    """The sidecar's own draft credentials, in the draft API's header."""
    if draft_api is Api.ANTHROPIC:
        return {"x-api-key": key,
                "anthropic-version": req.headers.get("anthropic-version", DEFAULT_ANTHROPIC_VERSION)}
    return {"authorization": f"Bearer {key}"}
