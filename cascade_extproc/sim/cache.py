"""The simulated providers' prompt cache (a SIMULATION of the rules the real ones publish), so the
usage they report carries honest cache tokens: what a real provider would have read from its
cache and written to it, given the requests it saw before.

A prompt is a sequence of blocks (the tools, the system blocks, then each message's content
blocks); a cache entry is a prefix of that sequence, keyed by a hash chain over the blocks and
the model (each model has its own cache).
- explicit (Anthropic): entries are written at the blocks marked `cache_control` (a breakpoint),
  with their TTL (5 minutes, or 1 hour where the mark says `"ttl": "1h"`), and a hit refreshes
  it. A request reads the longest live entry that is a prefix of its prompt up to its last
  breakpoint, writes the rest of that part, and pays what follows as plain input.
- automatic (DeepSeek, OpenAI): every block boundary of every prompt is an entry, kept
  `ttl_s` after its last use; a request reads the longest live one and misses the rest.
Left out: the providers' minimum cacheable lengths (1,024 tokens and up), the 20-block lookback
limit, and OpenAI's 128-token granularity; the tests' prompts are short.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Callable

FIVE_MINUTES, ONE_HOUR = 300.0, 3600.0
MAX_ENTRIES = 100_000  # past this, expired entries are dropped (and, if need be, the oldest)


@dataclass(frozen=True)
class Block:
    key: str  # the block's content, canonical
    tokens: int
    ttl_s: float | None = None  # a breakpoint's TTL (explicit); None: not a breakpoint


@dataclass(frozen=True)
class CacheUse:
    read: int = 0
    write_5m: int = 0
    write_1h: int = 0

    @property
    def write(self) -> int:
        return self.write_5m + self.write_1h


class SimCache:
    def __init__(self, mode: str, ttl_s: float = FIVE_MINUTES, clock: Callable[[], float] = time.monotonic):
        if mode not in ("explicit", "automatic", "off"):
            raise ValueError(f"unknown cache mode {mode!r}")
        self.mode, self.ttl_s, self.clock = mode, ttl_s, clock
        self._entries: dict[bytes, tuple[float, float]] = {}  # chain hash → (expires_at, ttl_s)

    def clear(self) -> None:
        self._entries.clear()

    def use(self, model: str, blocks: list[Block]) -> CacheUse:
        """What a request of `blocks` reads and writes now; the cache updated as the provider's."""
        if self.mode == "off" or not blocks:
            return CacheUse()
        now = self.clock()
        chain, cum = [], []
        h = hashlib.blake2b(model.encode(), digest_size=16).digest()
        total = 0
        for b in blocks:
            h = hashlib.blake2b(h + b.key.encode("utf-8", "replace"), digest_size=16).digest()
            total += b.tokens
            chain.append(h)
            cum.append(total)
        if self.mode == "explicit":
            marks = [i for i, b in enumerate(blocks) if b.ttl_s is not None]
            if not marks:
                return CacheUse()
            last = marks[-1]
        else:
            marks, last = list(range(len(blocks))), len(blocks) - 1
        hit = -1
        for i in range(last, -1, -1):
            entry = self._entries.get(chain[i])
            if entry is not None and entry[0] >= now:
                hit = i
                self._entries[chain[i]] = (now + entry[1], entry[1])  # a hit refreshes it
                break
        read = cum[hit] if hit >= 0 else 0
        w5 = w1 = 0
        prev = read
        for i in marks:
            ttl = blocks[i].ttl_s if self.mode == "explicit" else self.ttl_s
            assert ttl is not None
            if i > hit:
                if cum[i] > prev:
                    if ttl >= ONE_HOUR and self.mode == "explicit":
                        w1 += cum[i] - prev
                    else:
                        w5 += cum[i] - prev
                    prev = cum[i]
                self._entries[chain[i]] = (now + ttl, ttl)
        if len(self._entries) > MAX_ENTRIES:
            self._prune(now)
        if self.mode == "automatic":  # misses are plain input, not writes
            return CacheUse(read=read)
        return CacheUse(read=read, write_5m=w5, write_1h=w1)

    def _prune(self, now: float) -> None:
        self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
        while len(self._entries) > MAX_ENTRIES:
            self._entries.pop(next(iter(self._entries)))


def _canon(value: Any) -> str:
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "cache_control"}
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _ttl(block: Any) -> float | None:
    cc = block.get("cache_control") if isinstance(block, dict) else None
    if not isinstance(cc, dict):
        return None
    return ONE_HOUR if cc.get("ttl") == "1h" else FIVE_MINUTES


def anthropic_blocks(body: dict, ntok: Callable[[str], int]) -> list[Block]:
    """An Anthropic request's prompt as blocks, in the order the cache sees them: tools, system,
    messages. Tokens counted as the sim counts a prompt's (answers.py)."""
    out = []
    for t in body.get("tools") or []:
        text = f"{t.get('name', '')} {t.get('description') or ''} {json.dumps(t.get('input_schema') or {})}"
        out.append(Block(_canon(t), ntok(text), _ttl(t)))
    system = body.get("system")
    for b in ([{"type": "text", "text": system}] if isinstance(system, str) else system or []):
        out.append(Block(_canon(b), ntok(b.get("text", "")) if isinstance(b, dict) else 0, _ttl(b)))
    for m in body.get("messages") or []:
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for i, b in enumerate(blocks):
            out.append(Block(m.get("role", "") + ("\x1e" if i == 0 else "") + _canon(b), _block_tokens(b, ntok), _ttl(b)))
    return out


def _block_tokens(b: Any, ntok: Callable[[str], int]) -> int:
    if not isinstance(b, dict):
        return 0
    kind = b.get("type")
    if kind == "text":
        return ntok(b.get("text") or "")
    if kind == "tool_use":
        return ntok(json.dumps(b.get("input")))
    if kind == "tool_result":
        c = b.get("content")
        if isinstance(c, str):
            return ntok(c)
        return sum(ntok(x.get("text") or "") for x in c or [] if isinstance(x, dict) and x.get("type") == "text")
    return 0


def openai_blocks(body: dict, ntok: Callable[[str], int]) -> list[Block]:
    """An OpenAI request's prompt as blocks: the tools, then each message."""
    out = []
    for t in body.get("tools") or []:
        f = t.get("function") or {}
        out.append(Block(_canon(t), ntok(f"{f.get('name', '')} {f.get('description') or ''} "
                                         f"{json.dumps(f.get('parameters') or {})}")))
    for m in body.get("messages") or []:
        c = m.get("content")
        texts = [c] if isinstance(c, str) else [p.get("text") or "" for p in c or []
                                                 if isinstance(p, dict) and p.get("type") == "text"]
        texts += [(tc.get("function") or {}).get("arguments") or "" for tc in m.get("tool_calls") or []]
        out.append(Block(_canon(m), sum(map(ntok, texts))))
    return out
