"""The router: features of a request, then the first matching rule (pure).

With a conversation store (routing/state.py) it looks up the conversation the request continues,
so the cache features see what each provider holds of it; replay passes its own."""
from __future__ import annotations

import time

from cascade_extproc.config import Config
from cascade_extproc.metering.cache import CacheTable, Conversation
from cascade_extproc.metering.prices import PriceTable
from cascade_extproc.routing.features import Context, compile_keywords, extract
from cascade_extproc.routing.rules import RuleSet
from cascade_extproc.routing.state import Conversations, fingerprint
from cascade_extproc.types import Api, Decision, Request


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
