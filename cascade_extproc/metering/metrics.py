"""Prometheus collectors, registered on an injected registry (no globals). docs/metrics.md
documents each one."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cascade_requests", "Requests by the path they took, client API, requested model and rule.",
            ["path", "api", "model", "rule"], registry=r)
        self.tokens = Counter(
            "cascade_tokens", "Tokens the providers reported, by provider (strong, draft) and kind.",
            ["provider", "kind"], registry=r)
        self.cost = Counter(
            "cascade_cost_usd", "What the requests cost, in USD, from the providers' usage.",
            ["path"], registry=r)
        self.baseline = Counter(
            "cascade_baseline_cost_usd", "What the strong model alone would have cost, in USD.",
            ["path"], registry=r)
        self.savings = Gauge(
            "cascade_savings_usd", "Baseline minus actual cost since start, in USD (negative: a loss).",
            registry=r)
        self.unpriced = Counter(
            "cascade_unpriced_requests", "Requests whose cost is unknown (no usage, or a model without a price).",
            ["path"], registry=r)
        self.duration = Histogram(
            "cascade_request_duration_seconds", "From the request body to the end of the answer, by path.",
            ["path"], buckets=_LATENCY_BUCKETS, registry=r)
        self.provider_duration = Histogram(
            "cascade_provider_duration_seconds", "Provider calls made by the server itself, by provider and call.",
            ["provider", "call"], buckets=_LATENCY_BUCKETS, registry=r)
        self.fallbacks = Counter(
            "cascade_fallbacks", "Requests sent on to the strong model after a failure, by reason.",
            ["reason"], registry=r)
        self.errors = Counter(
            "cascade_request_errors", "Requests that ended without a whole answer, by path and reason: a stream "
            "that broke after it had started (ended with an error event), a skipped stream the sidecar ended as a "
            "length stop (a draft that looped, ran out of its budget or of time), or the client gone.",
            ["path", "reason"], registry=r)
        self.extproc_messages = Counter(
            "cascade_extproc_messages", "Messages Envoy sent the ext_proc server, by kind (each one a round "
            "trip Envoy waits for).", ["kind"], registry=r)
        self.config_reloads = Counter(
            "cascade_config_reloads", "Config reloads, by result (ok, error, needs_restart).", ["result"], registry=r)
        self.shadow_decisions = Counter(
            "cascade_shadow_decisions", "Shadow mode: what the router would have done, by route and rule.",
            ["route", "rule"], registry=r)
        self.shadow_agreement = Counter(
            "cascade_shadow_agreement", "Shadow mode: sampled draft answers compared with the strong model's, "
            "by rule and whether they agreed.", ["rule", "agreed"], registry=r)
