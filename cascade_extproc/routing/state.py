"""Conversation state for the router: what each provider's prompt cache holds of a conversation
(metering/cache.py's Conversation), in a bounded LRU keyed by a fingerprint of the conversation.

The fingerprint hashes what starts the conversation's prompt, the part a provider's cache keys
on first: the tools (their count, the first and last one's name), the system prompt and the
first user message (each by its length and its first and last 256 characters: about 12 us on a
200 KB body, not a hash of it all).
- Stable across turns: a conversation only grows at its end; those three stay as they were.
- Distinct across conversations: a new session, a subagent (its own system prompt and task),
  or a compacted conversation (its summary is the new first message) each starts differently.
  Two conversations that start alike share the provider's cached prefix too, so sharing their
  state misleads little; the usage each answer reports corrects it.
- Not the prefix up to the first cache breakpoint: Claude Code puts that after the system
  prompt, which every conversation of a session shares.

Each pod's sidecar sees its own pod's conversations, so the state is local by design
(docs/kubernetes.md). It is owned by the app and outlives config reloads.
"""
from __future__ import annotations

import collections
import hashlib
from typing import Any

from cascade_extproc.metering.cache import Conversation
from cascade_extproc.types import Api, Request

EDGE = 256  # characters hashed from each end of a long part (with its length)


class Conversations:
    """A bounded LRU: fingerprint → Conversation. The least recently used goes first."""

    def __init__(self, max_entries: int):
        self.max_entries = max(int(max_entries), 1)
        self._items: collections.OrderedDict[bytes, Conversation] = collections.OrderedDict()
        self.evicted = 0

    def get(self, key: bytes) -> Conversation:
        """The conversation's state, created at its first request."""
        conv = self._items.get(key)
        if conv is not None:
            self._items.move_to_end(key)
            return conv
        conv = self._items[key] = Conversation()
        self._trim()
        return conv

    def peek(self, key: bytes) -> Conversation | None:
        return self._items.get(key)

    def resize(self, max_entries: int) -> None:
        self.max_entries = max(int(max_entries), 1)
        self._trim()

    def _trim(self) -> None:
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
            self.evicted += 1

    def __len__(self) -> int:
        return len(self._items)


def fingerprint(req: Request) -> bytes:
    """16 bytes naming the conversation `req` continues (see the module's docstring)."""
    body = req.body
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    h = hashlib.blake2b(digest_size=16)
    h.update(req.api.value.encode())
    tools = body.get("tools") if isinstance(body.get("tools"), list) else []
    # The tools by count and by the first and last one's name: a conversation keeps its tools,
    # and conversations with other tools (a subagent) have another system prompt too.
    h.update(b"%d\x1f%s\x1f%s" % (len(tools), _tool_name(tools[0]).encode("utf-8", "replace") if tools else b"",
                                  _tool_name(tools[-1]).encode("utf-8", "replace") if tools else b""))
    if req.api is Api.ANTHROPIC:
        system = _text(body.get("system"))
        first = next((m for m in messages if isinstance(m, dict) and m.get("role") == "user"), None)
    else:
        system = "".join(_text(m.get("content")) for m in messages
                         if isinstance(m, dict) and m.get("role") in ("system", "developer"))
        first = next((m for m in messages if isinstance(m, dict) and m.get("role") == "user"), None)
    _part(h, system)
    _part(h, _text(first.get("content")) if first else "")
    return h.digest()


def _part(h: Any, text: str) -> None:
    h.update(b"\x1e%d\x1e" % len(text))
    if len(text) <= 2 * EDGE:
        h.update(text.encode("utf-8", "replace"))
    else:
        h.update(text[:EDGE].encode("utf-8", "replace"))
        h.update(text[-EDGE:].encode("utf-8", "replace"))


def _tool_name(tool: Any) -> str:
    if not isinstance(tool, dict):
        return ""
    fn = tool.get("function")
    return str(fn.get("name", "")) if isinstance(fn, dict) else str(tool.get("name", ""))


def _text(content: Any) -> str:
    """The text of a string or a list of blocks (text, and the text of tool results)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    out = []
    for b in content:
        if isinstance(b, dict):
            if isinstance(b.get("text"), str):
                out.append(b["text"])
            elif b.get("type") == "tool_result":
                out.append(_text(b.get("content")))
            else:
                out.append(str(b.get("type", "")))
    return "\x1f".join(out)
