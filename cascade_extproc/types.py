"""Neutral types shared by codecs, router, cascade and servicer. No I/O here."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Api(enum.StrEnum):
    """The client API a request speaks."""

    ANTHROPIC = "anthropic"
    OPENAI = "openai"


class Route(enum.StrEnum):
    """What the router decides for a request."""

    DIRECT = "direct"
    SKIPPED = "skipped"
    CASCADE = "cascade"


class Path(enum.StrEnum):
    """What actually happened to a request; reported in `x-cascade-path`."""

    SKIPPED = "skipped"
    ACCEPTED = "accepted"
    ENHANCED = "enhanced"
    DIRECT = "direct"
    FALLBACK = "fallback"


@dataclass(frozen=True)
class Request:
    """A parsed LLM API request. `body` is the client's JSON, untouched."""

    api: Api
    body: dict[str, Any]
    headers: dict[str, str]  # lower-cased names, as Envoy sent them

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True


@dataclass(frozen=True)
class Decision:
    route: Route
    rule: str
    features: dict[str, Any] = field(default_factory=dict)


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class StopReason(enum.StrEnum):
    END_TURN = "end_turn"
    TOOL_USE = "tool_use"
    MAX_TOKENS = "max_tokens"
    STOP_SEQUENCE = "stop_sequence"


@dataclass
class Block:
    """One content block of a response: text, tool_use or thinking."""

    type: str
    text: str = ""
    id: str = ""
    name: str = ""
    input: dict[str, Any] = field(default_factory=dict)
    signature: str = ""


@dataclass
class Response:
    """A complete (non-streamed) model response in neutral form."""

    id: str
    model: str
    blocks: list[Block]
    stop_reason: StopReason
    usage: Usage = field(default_factory=Usage)

    @property
    def text(self) -> str:
        return "".join(b.text for b in self.blocks if b.type == "text")
