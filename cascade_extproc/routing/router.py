"""The router: features of a request, then the first matching rule (pure).

With a conversation store (routing/state.py) it looks up the conversation the request continues,
so the cache features see what each provider holds of it; replay passes its own."""
from __future__ import annotations

import time

from cascade_extproc.config import Config
from cascade_extproc.metering.cache import CacheTable, Conversation, Finished, Side, asked_ttl, settle
from cascade_extproc.metering.prices import PriceTable
from cascade_extproc.routing.features import Context, compile_keywords, extract
from cascade_extproc.routing.rules import RuleSet
from cascade_extproc.routing.state import Conversations, fingerprint
from cascade_extproc.types import Api, Decision, Path, Request, Usage


class Router:
    def __init__(self, rules: RuleSet, ctx: Context, conversations: Conversations | None = None):
        self.rules = rules
        self.ctx = ctx
        self.conversations = conversations

    @classmethod
    def from_config(cls, cfg: Config, conversations: Conversations | None = None) -> "Router":
        ctx = Context(keywords=compile_keywords(cfg.router.keywords),
                      prices=PriceTable.from_config(cfg.pricing.models),
                      draft_models={api: cfg.providers.for_api(api).draft.model for api in Api},
                      economics=cfg.router.economics,
                      caches=CacheTable.from_config(cfg.pricing.caches))
        return cls(RuleSet.from_config(cfg.router.rules), ctx, conversations)

    def decide(self, req: Request, body_bytes: int, *, now: float | None = None,
               conversation: Conversation | None = None) -> Decision:
        """`now` on the clock the conversation's state keeps (time.monotonic() live, the
        transcript's in replay)."""
        if conversation is None and self.conversations is not None:
            conversation = self.conversations.get(fingerprint(req))
        features = extract(req, body_bytes, self.ctx, conversation, time.monotonic() if now is None else now)
        d = self.rules.decide(features)
        return Decision(d.route, d.rule, d.features, features, conversation)

    def sides(self, req: Request) -> tuple[Side, Side]:
        """The strong and the draft provider of `req` as the cache model needs them."""
        prices, caches = self.ctx.prices, self.ctx.caches
        draft_model = self.ctx.draft_models.get(req.api, "")
        return (Side(req.model, prices.lookup(req.model) if prices else None, caches.lookup(req.model)),
                Side(draft_model, prices.lookup(draft_model) if prices else None, caches.lookup(draft_model)))

    def settle(self, decision: Decision, req: Request, path: Path, strong_usage: Usage | None,
               draft_usage: Usage | None, *, now: float | None = None) -> float | None:
        """A finished request: its conversation's caches brought up to date from the usage the
        providers reported, and the live baseline (USD: what the strong model alone would have
        cost, its cache as it would be had every turn gone to it; metering/cache.py `settle`).
        None without a conversation, a usage or the strong model's price."""
        conv = decision.conversation
        if conv is None:
            return None
        strong, draft = self.sides(req)
        f = decision.all_features
        appended = (draft_usage.output_tokens if draft_usage else 0) + self.ctx.economics.instruction_tokens
        done = Finished(path=path, strong_usage=strong_usage, draft_usage=draft_usage,
                        ask=asked_ttl(req.body, req.raw) if req.api is Api.ANTHROPIC else None, appended=appended,
                        context=int(f.get("context_tokens") or 0), last_turn=int(f.get("last_turn_tokens") or 0))
        base = settle(conv, done, time.monotonic() if now is None else now, strong, draft)
        if base is None or strong.price is None:
            return None
        return strong.price.cost(base)
