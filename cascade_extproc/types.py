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
    # The server asks the draft and inspects its answer: served when safe (path skipped, marked
    # guarded), verified by the strong model when risky (actions.py; the config's guard section).
    GUARDED = "guarded"


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
    raw: bytes = b""  # the body exactly as the client sent it

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def wants_usage_chunk(self) -> bool:
        """OpenAI streams: the client asked for the final usage chunk."""
        options = self.body.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))


@dataclass(frozen=True)
class Decision:
    route: Route
    rule: str
    features: dict[str, Any] = field(default_factory=dict)  # those the deciding rule tested
    all_features: dict[str, Any] = field(default_factory=dict)  # every feature of the request
    conversation: Any = None  # its state (routing/state.py), brought up to date when it is done


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0  # the part of cache_write_tokens written for 1 hour


class StopReason(enum.StrEnum):
    END_TURN = "end_turn"
    TOOL_USE = "tool_use"
    MAX_TOKENS = "max_tokens"
    STOP_SEQUENCE = "stop_sequence"


@dataclass
class Block:
    """One content block: text, image, tool_use, tool_result, thinking or redacted_thinking."""

    type: str
    text: str = ""  # text; thinking text; redacted_thinking data
    id: str = ""  # tool_use id
    name: str = ""  # tool_use name
    input: dict[str, Any] = field(default_factory=dict)  # tool_use input
    signature: str = ""  # thinking signature
    tool_use_id: str = ""  # tool_result: the call it answers
    content: list["Block"] = field(default_factory=list)  # tool_result content
    is_error: bool = False  # tool_result
    source: dict[str, Any] = field(default_factory=dict)  # image: Anthropic-style source


@dataclass
class Message:
    role: str  # "user" or "assistant"
    blocks: list[Block]


@dataclass
class Tool:
    name: str
    description: str = ""
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass
class ChatRequest:
    """A model request in neutral form, used to translate between the two APIs."""

    model: str
    messages: list[Message]
    system: str = ""
    tools: list[Tool] = field(default_factory=list)
    tool_choice: str = "auto"  # auto | any | none | tool
    tool_name: str = ""  # with tool_choice "tool"
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False


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


# Neutral streaming events: what both APIs' SSE streams decode to and encode from.

@dataclass
class StreamStart:
    id: str
    model: str
    usage: Usage = field(default_factory=Usage)


@dataclass
class BlockStart:
    index: int
    block: Block  # type, and id/name for tool_use; no content yet


@dataclass
class BlockDelta:
    index: int
    kind: str  # "text" | "json" | "thinking" | "signature"
    value: str


@dataclass
class BlockStop:
    index: int


@dataclass
class StreamEnd:
    stop_reason: StopReason
    usage: Usage


@dataclass
class StreamError:
    status: int
    message: str


StreamEvent = StreamStart | BlockStart | BlockDelta | BlockStop | StreamEnd | StreamError
