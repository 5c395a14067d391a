"""What a skip and a cascade are expected to save against calling the strong model (pure), priced
from the cache model (metering/cache.py) with what each provider holds of the conversation now.

Skip: the draft answers instead. Had the strong model answered, its cache would hold this turn,
and the next strong call would read it; skipped, the next strong call writes this turn's new
content itself. The writes are the same either way (deferred, not saved); what a skip saves is
the strong model's read of the context and its answer:

    skip_saving = P·read_s + O·out_s − draft − rewrite
    draft       = the draft's expected price: its cached prefix read, the rest missed, O out
    rewrite     = H·(write_s − read_s) when the strong cache is warm now but, left alone, would be
                  cold by the next turn (its age plus the conversation's pace past its TTL): the
                  next strong call then writes all H tokens it held again

Cascade: the verify call reads the context a direct call would (the strong cache is the same
after either), plus the draft and the instruction as fresh input; it saves the strong model's
answer when the draft is accepted:

    cascade_saving = p·(O − V)·out_s − (O + I)·in_s − draft

P the prompt (the strong model's cached tokens plus what the conversation grew by since, or the
size estimate), O the expected answer, p the accept rate, V the verdict, I the instruction
(`router.economics`). Where the strong model caches nothing (an explicit cache and no
breakpoint), read_s is the input price: the next call reads P again as plain input.
"""
from __future__ import annotations

from cascade_extproc.config import Economics
from cascade_extproc.metering.cache import ONE_HOUR, Conversation, Mode, ProviderCache, Side, expect
from cascade_extproc.metering.prices import PER_TOKEN


def prompt_now(cache: ProviderCache, context: int) -> int:
    """The prompt in the provider's tokens: what it held, plus what the conversation grew by since
    (both estimated alike, from body sizes); the estimate alone when it never saw it."""
    if cache.seen_at is None:
        return context
    return cache.tokens + max(context - cache.context, 0)


def draft_cost(conv: Conversation, draft: Side, now: float, context: int, ask: float | None, eco: Economics) -> float:
    assert draft.price is not None
    u = expect(conv.draft, draft.rules, draft.price, now, draft.model, prompt_now(conv.draft, context),
               ask=ask, output=eco.expected_output_tokens)
    return draft.price.cost(u)


def rewrite_risk(conv: Conversation, strong: Side, now: float) -> float:
    """USD the next strong call would pay to write again what the strong cache holds now, if
    skipping this turn lets it go cold first; 0 when it is cold already or will stay warm."""
    s = conv.strong
    if strong.price is None or not s.warm(now, strong.model) or conv.pace_s is None or conv.pace_s > s.ttl_s:
        return 0.0
    if now - (s.seen_at or 0.0) + conv.pace_s <= s.ttl_s:
        return 0.0
    p = strong.price
    write = p.cache_write_1h if s.ttl_s >= ONE_HOUR and p.cache_write_1h is not None else p.cache_write
    return PER_TOKEN * s.tokens * max(write - p.cache_read, 0.0)


def skip_saving(conv: Conversation, strong: Side, draft: Side, now: float, context: int, ask: float | None,
                eco: Economics) -> float:
    """Expected USD saved by letting the draft answer this turn (negative: a loss)."""
    p = strong.price
    assert p is not None
    caches = strong.rules.mode is Mode.AUTOMATIC or ask is not None
    reread = p.cache_read if caches else p.input
    saved = PER_TOKEN * (prompt_now(conv.strong, context) * reread + eco.expected_output_tokens * p.output)
    return saved - draft_cost(conv, draft, now, context, ask, eco) - rewrite_risk(conv, strong, now)


def cascade_saving(conv: Conversation, strong: Side, draft: Side, now: float, context: int, ask: float | None,
                   eco: Economics) -> float:
    """Expected USD saved by cascading instead of calling the strong model (negative: a loss)."""
    p = strong.price
    assert p is not None
    out, accept = eco.expected_output_tokens, eco.accept_rate
    verify_extra = (out + eco.instruction_tokens) * p.input
    saved = accept * max(out - eco.verdict_tokens, 0) * p.output
    return PER_TOKEN * (saved - verify_extra) - draft_cost(conv, draft, now, context, ask, eco)
