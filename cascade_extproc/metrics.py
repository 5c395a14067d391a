"""Prometheus collectors, registered on an injected registry (no globals)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cascade_requests", "LLM API requests by the path they took.",
            ["path", "api", "rule"], registry=r)
        self.fallbacks = Counter(
            "cascade_fallbacks", "Requests sent on to the strong model after a failure, by reason.",
            ["reason"], registry=r)
        self.cascade_seconds = Histogram(
            "cascade_cascade_duration_seconds", "Time the server spent on draft + verify.",
            ["path"], buckets=_LATENCY_BUCKETS, registry=r)
