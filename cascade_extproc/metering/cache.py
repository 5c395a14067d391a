"""The prompt-cache model (pure): what each provider holds cached of a conversation, and what a
request sent to it now is expected to cost, split as the provider bills it.

On agentic traffic the bill is context, and the context is billed by the provider's cache:
- explicit caching (Anthropic): the request marks breakpoints (`cache_control`). The cached
  part of the prefix up to the last breakpoint is read (`cache_read`), the rest of it written
  (`cache_write`, or `cache_write_1h` when the request asks `ttl: "1h"`); what follows the last
  breakpoint is plain input. No breakpoint, no caching. An entry lives its TTL after its last use.
- automatic caching (DeepSeek, OpenAI): the provider caches every prompt's prefix by itself.
  Hits are read at `cache_read`; misses cost `cache_write`, which the price table sets equal to
  `input` where there is no write premium (DeepSeek, OpenAI before GPT-5.6) and above it where
  there is (GPT-5.6 on). An unused prefix is assumed to stay for the provider's retention.

The state is per conversation and per provider (ProviderCache): when the provider last saw the
conversation, how many of its prompt tokens it holds, and for how long. A request extends the
conversation, so the cached prefix is the start of its prompt unless the conversation changed
in between (the `cap` a caller applies when the provider's own usage shows it).

One model for every figure: the router's expected savings (routing/features.py), replay's price
of every recorded call (offline/replay.py) and the live baseline (`settle`: what the strong model
alone would have cost). docs/routing.md ("The cache model") walks through it with numbers.
"""
from __future__ import annotations

import enum
import fnmatch
from dataclasses import dataclass, field
from typing import Any

from cascade_extproc.config import ConfigError
from cascade_extproc.metering.prices import Price, pattern_items
from cascade_extproc.types import Path, Usage

FIVE_MINUTES = 300.0  # Anthropic's default cache lifetime
ONE_HOUR = 3600.0  # `cache_control: {type: ephemeral, ttl: "1h"}`
PACE_WEIGHT = 0.3  # how much the latest gap between turns moves a conversation's pace


class Mode(enum.StrEnum):
    EXPLICIT = "explicit"  # the request marks what to cache; writes may cost a premium
    AUTOMATIC = "automatic"  # the provider caches every prefix by itself


@dataclass(frozen=True)
class CacheRules:
    """How one provider caches: its mode, and how long an unused entry stays (explicit: the
    lifetime when the request does not ask for one; automatic: the provider's retention)."""

    mode: Mode = Mode.AUTOMATIC
    ttl_s: float = FIVE_MINUTES


class CacheTable:
    """Ordered (pattern, rules) pairs from `pricing.caches`; the first fnmatch pattern matching a
    model wins. A model matching none caches automatically for five minutes (the shortest
    retention of the providers above: it claims the least)."""

    def __init__(self, entries: list[tuple[str, CacheRules]]):
        self.entries = entries

    @classmethod
    def from_config(cls, data: Any, key: str = "pricing.caches") -> "CacheTable":
        entries = []
        for k, item in pattern_items(data, key, ("mode", "ttl_s"), "{match, mode, ttl_s}", "claude-*"):
            if item.get("mode") not in tuple(Mode):
                raise ConfigError(f"{k}.mode", "one of explicit, automatic")
            ttl = item.get("ttl_s")
            if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
                raise ConfigError(f"{k}.ttl_s", "required: seconds > 0")
            entries.append((item["match"], CacheRules(Mode(item["mode"]), float(ttl))))
        return cls(entries)

    def lookup(self, model: str) -> CacheRules:
        for pattern, rules in self.entries:
            if fnmatch.fnmatchcase(model, pattern):
                return rules
        return CacheRules()


def requested_ttl(raw: bytes) -> float | None:
    """The cache lifetime an Anthropic request asks for: None without any `cache_control` (an
    explicit provider then caches nothing), one hour where a breakpoint says `"ttl": "1h"`, else
    five minutes. A byte search: a few microseconds on a 200 KB body."""
    if raw.find(b'"cache_control"') < 0:
        return None
    at = raw.find(b'"1h"')
    while at >= 0:
        before = raw[max(0, at - 16):at].replace(b" ", b"")
        if before.endswith(b'"ttl":'):
            return ONE_HOUR
        at = raw.find(b'"1h"', at + 4)
    return FIVE_MINUTES


def asked_ttl(body: dict, raw: bytes) -> float | None:
    """requested_ttl, fast on a parsed Anthropic request (the router's budget): the breakpoints
    Claude Code and the SDKs set are on the tools, the system blocks and the newest messages, so
    those are read; only when none has one are the bytes searched for a breakpoint elsewhere
    (a 1-hour TTL on an older message alone is then taken for 5 minutes). A short needle such as
    '"1h"' costs a byte search ~150 us on a 200 KB body (JSON is full of quotes): avoided."""
    found: float | None = None
    messages = body.get("messages")
    tail = messages[-2:] if isinstance(messages, list) else []
    tools = body.get("tools")
    system = body.get("system")
    for group in (tools[-1:] if isinstance(tools, list) else [], system if isinstance(system, list) else [],
                  *((m.get("content") if isinstance(m, dict) and isinstance(m.get("content"), list) else [])
                    for m in tail)):
        for b in group:
            cc = b.get("cache_control") if isinstance(b, dict) else None
            if isinstance(cc, dict):
                if cc.get("ttl") == "1h":
                    return ONE_HOUR
                found = FIVE_MINUTES
    if found is not None:
        return found
    return FIVE_MINUTES if raw.find(b'"cache_control"') >= 0 else None


@dataclass(slots=True)
class ProviderCache:
    """What one provider holds of one conversation, as far as we know."""

    model: str = ""  # caches are per model: another model finds nothing
    seen_at: float | None = None  # when it last saw the conversation; None: never
    tokens: int = 0  # prompt tokens it holds, the conversation's prefix
    ttl_s: float = 0.0  # how long they stay after seen_at
    context: int = 0  # the request's estimated size then (features: tokens since)

    def warm(self, now: float, model: str | None = None) -> bool:
        return (self.seen_at is not None and now - self.seen_at <= self.ttl_s
                and (model is None or model == self.model))

    def held(self, now: float, model: str | None = None) -> int:
        """Tokens a request sent now can read."""
        return self.tokens if self.warm(now, model) else 0

    def age(self, now: float) -> float | None:
        return None if self.seen_at is None else now - self.seen_at

    def saw(self, now: float, model: str, tokens: int, ttl_s: float, context: int = 0) -> None:
        """The provider was sent the conversation now and holds `tokens` of it for `ttl_s`."""
        self.model, self.seen_at, self.tokens, self.ttl_s, self.context = model, now, tokens, ttl_s, context

    def cap(self, common: int) -> None:
        """The conversation's prompt changed after its first `common` tokens: a cache holds no more."""
        self.tokens = min(self.tokens, max(common, 0))


def expect(cache: ProviderCache, rules: CacheRules, price: Price, now: float, model: str, prompt: int, *,
           ask: float | None = FIVE_MINUTES, tail: int = 0, output: int = 0, shared: int = 0) -> Usage:
    """The usage a provider would report for a request of `prompt` tokens sent now, given what it
    holds: the cached prefix read, the rest written (explicit: up to the last breakpoint, `tail`
    tokens before the end; `ask` is the TTL the request asks for, None for no breakpoint) or
    missed (automatic). `shared`: tokens known to be cached by another conversation (a system
    prompt and tools, or the conversation a compaction summarises), read whatever our state."""
    prompt = max(prompt, 0)
    if rules.mode is Mode.EXPLICIT:
        cacheable = 0 if ask is None else max(prompt - max(tail, 0), 0)
        read = min(max(cache.held(now, model), shared), cacheable)
        write = cacheable - read
        return Usage(input_tokens=prompt - cacheable, output_tokens=output, cache_read_tokens=read,
                     cache_write_tokens=write, cache_write_1h_tokens=write if (ask or 0) >= ONE_HOUR else 0)
    read = min(max(cache.held(now, model), shared), prompt)
    miss = prompt - read
    if price.cache_write > price.input:  # a premium for writing (GPT-5.6 on): misses are billed as writes
        return Usage(output_tokens=output, cache_read_tokens=read, cache_write_tokens=miss)
    return Usage(input_tokens=miss, output_tokens=output, cache_read_tokens=read)


def ttl_of(rules: CacheRules, ask: float | None) -> float:
    """How long what a request writes stays: the request's own TTL for explicit caching."""
    return (ask or rules.ttl_s) if rules.mode is Mode.EXPLICIT else rules.ttl_s


def prompt_of(u: Usage) -> int:
    return u.input_tokens + u.cache_read_tokens + u.cache_write_tokens


def cached_by(rules: CacheRules, u: Usage) -> int:
    """The prefix a provider holds after a call billed as `u`: what it read and wrote (explicit),
    the whole prompt (automatic)."""
    return u.cache_read_tokens + u.cache_write_tokens if rules.mode is Mode.EXPLICIT else prompt_of(u)


# ---- one conversation, live --------------------------------------------------------------------

@dataclass(slots=True)
class Conversation:
    """What the sidecar knows of one conversation: each provider's cache, and the strong cache as
    it would be had every turn gone to the strong model (the baseline's)."""

    strong: ProviderCache = field(default_factory=ProviderCache)
    draft: ProviderCache = field(default_factory=ProviderCache)
    baseline: ProviderCache = field(default_factory=ProviderCache)
    last_at: float | None = None  # when its last turn finished
    pace_s: float | None = None  # the usual gap between its turns (a moving average)

    def turn_ended(self, now: float) -> None:
        if self.last_at is not None:
            gap = max(now - self.last_at, 0.0)
            self.pace_s = gap if self.pace_s is None else (1 - PACE_WEIGHT) * self.pace_s + PACE_WEIGHT * gap
        self.last_at = now


@dataclass(frozen=True)
class Side:
    """One provider as the model needs it: its model name, price (None: unknown) and cache rules."""

    model: str
    price: Price | None
    rules: CacheRules


@dataclass(frozen=True)
class Finished:
    """What a finished request tells: the path it took and the usage each provider reported."""

    path: Path
    strong_usage: Usage | None  # the direct (fallback) call, or a cascade's verify call
    draft_usage: Usage | None
    ask: float | None  # the TTL the request asked for (requested_ttl)
    appended: int = 0  # a verify call's input beyond the client's request (the draft + instruction)
    context: int = 0  # the request's estimated size (features.context_tokens)
    last_turn: int = 0  # its last turn's estimated size


def settle(conv: Conversation, done: Finished, now: float, strong: Side, draft: Side) -> Usage | None:
    """The baseline's usage for a finished request (the strong model's, had every turn gone to it;
    None when no provider reported usage), and every cache of `conv` brought up to date from the
    usage the providers reported."""
    s, d = done.strong_usage, done.draft_usage
    base: Usage | None = None
    if s is not None:
        base = _from_strong(conv, done, now, strong, s)
    elif d is not None and done.path is Path.SKIPPED:
        base = _from_draft(conv, done, now, strong, d)
    if d is not None:
        conv.draft.saw(now, draft.model, cached_by(draft.rules, d), ttl_of(draft.rules, done.ask), done.context)
    if base is not None:
        conv.turn_ended(now)
    return base


def _from_strong(conv: Conversation, done: Finished, now: float, strong: Side, s: Usage) -> Usage:
    """The strong model answered (direct, fallback) or verified: its usage is the truth for its
    own cache, and evidence for the baseline's."""
    explicit = strong.rules.mode is Mode.EXPLICIT
    appended = done.appended if done.path in (Path.ACCEPTED, Path.ENHANCED) else 0
    if explicit:  # the verify call's appendix follows the last breakpoint: plain input
        cacheable, tail = s.cache_read_tokens + s.cache_write_tokens, max(s.input_tokens - appended, 0)
    else:
        cacheable, tail = max(prompt_of(s) - appended, 0), 0
    read = s.cache_read_tokens
    expected = min(conv.strong.held(now, strong.model), cacheable)
    if read < expected:  # it held more than it could read: the conversation's prompt changed there
        conv.strong.cap(read)
        conv.baseline.cap(read)
    if conv.baseline.seen_at is None:  # never seen: nothing was skipped yet, the baseline is the call
        base_read = read
    else:
        base_read = max(read, min(conv.baseline.held(now, strong.model), cacheable))
    # A verify call may read past the client's part (the same request verified before: its
    # appendix cached too); a direct call would have read no more than its own prompt.
    base_read = min(base_read, cacheable)
    missed = cacheable - base_read
    # The answer: the strong model's own, or the draft's where it was accepted.
    output = done.draft_usage.output_tokens if done.path is Path.ACCEPTED and done.draft_usage else s.output_tokens
    if explicit:
        w1h = _share(missed, s.cache_write_1h_tokens, s.cache_write_tokens,
                     missed if (done.ask or 0) >= ONE_HOUR else 0)
        base = Usage(input_tokens=tail, output_tokens=output, cache_read_tokens=base_read,
                     cache_write_tokens=missed, cache_write_1h_tokens=w1h)
    else:  # misses billed as the provider billed this call's: input, or writes at a premium
        written = _share(missed, s.cache_write_tokens, s.input_tokens + s.cache_write_tokens,
                         missed if strong.price is not None and strong.price.cache_write > strong.price.input else 0)
        base = Usage(input_tokens=missed - written, output_tokens=output, cache_read_tokens=base_read,
                     cache_write_tokens=written)
    ttl = ttl_of(strong.rules, done.ask)
    conv.strong.saw(now, strong.model, cacheable, ttl, done.context)
    conv.baseline.saw(now, strong.model, cacheable, ttl, done.context)
    return base


def _from_draft(conv: Conversation, done: Finished, now: float, strong: Side, d: Usage) -> Usage:
    """The draft answered alone: the strong model would have read what its (counterfactual) cache
    held of the same prompt and written the rest. Tokens are taken to count alike at both."""
    prompt = prompt_of(d)
    if conv.baseline.seen_at is None:
        # Never seen (the sidecar restarted, or the conversation was evicted): assume the strong
        # model held all but the last turn, the smallest baseline, so no saving is claimed from
        # a cache nobody saw.
        shared = max(prompt - done.last_turn, 0)
    else:
        shared = 0
    price = strong.price or Price(0, 0, 0, 0)
    base = expect(conv.baseline, strong.rules, price, now, strong.model, prompt, ask=done.ask,
                  output=d.output_tokens, shared=shared)
    conv.baseline.saw(now, strong.model, cached_by(strong.rules, base), ttl_of(strong.rules, done.ask), done.context)
    return base


def _share(n: int, part: int, whole: int, default: int) -> int:
    """`n` split as `part` is of `whole` (the real call's own split), or `default` without one."""
    return round(n * part / whole) if whole else default
