"""The router: features of a request, then the first matching rule (pure)."""
from __future__ import annotations

from cascade_extproc.config import Config
from cascade_extproc.metering.prices import PriceTable
from cascade_extproc.routing.features import Context, compile_keywords, extract
from cascade_extproc.routing.rules import RuleSet
from cascade_extproc.types import Api, Decision, Request


class Router:
    def __init__(self, rules: RuleSet, ctx: Context):
        self.rules = rules
        self.ctx = ctx

    @classmethod
    def from_config(cls, cfg: Config) -> "Router":
        ctx = Context(keywords=compile_keywords(cfg.router.keywords),
                      prices=PriceTable.from_config(cfg.pricing.models),
                      draft_models={api: cfg.providers.for_api(api).draft.model for api in Api},
                      economics=cfg.router.economics)
        return cls(RuleSet.from_config(cfg.router.rules), ctx)

    def decide(self, req: Request, body_bytes: int) -> Decision:
        return self.rules.decide(extract(req, body_bytes, self.ctx))
