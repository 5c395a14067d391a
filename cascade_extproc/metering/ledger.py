"""One record per finished request, and everything that reads it: the Prometheus metrics, the
dashboard's data, one JSON log line and (tracing on) its trace. One place, so they always agree."""
from __future__ import annotations

import collections
import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from cascade_extproc.metering import tracing
from cascade_extproc.metering.metrics import Metrics
from cascade_extproc.types import Path, Usage

log = logging.getLogger("cascade_extproc.requests")
PATHS = tuple(Path)  # the dashboard's order
MAX_MODEL_LABELS = 64  # clients choose model names: past this many, new ones count as "other"
SERIES_BUCKET_S = 60  # the dashboard's charts: one point a minute,
SERIES_POINTS = 60  # for the last hour
_KINDS = (("input", "input_tokens"), ("output", "output_tokens"), ("cache_read", "cache_read_tokens"),
          ("cache_write", "cache_write_tokens"))


@dataclass
class RequestRecord:
    request_id: str
    api: str
    path: Path
    rule: str
    model: str  # what the client asked for
    served_model: str = ""  # what answered
    usage: dict[str, Usage] = field(default_factory=dict)  # "strong" / "draft" → usage
    cost_usd: float | None = None
    baseline_usd: float | None = None
    latency_s: float = 0.0
    status: int = 0
    fallback_reason: str = ""  # why the strong model answered instead (path fallback)
    error: str = ""  # how the answer broke after it had started, or "client-gone"
    shadow_route: str = ""  # shadow mode: what the router would have done
    at: float = field(default_factory=time.time)
    trace: tracing.Trace | None = field(default=None, repr=False, compare=False)  # tracing on; written here

    def log_fields(self) -> dict[str, Any]:
        tokens = {role: {kind: getattr(u, attr) for kind, attr in _KINDS} for role, u in self.usage.items()}
        out: dict[str, Any] = {
            "event": "request", "request_id": self.request_id, "api": self.api, "path": self.path,
            "rule": self.rule, "model": self.model, "served_model": self.served_model, "status": self.status,
            "tokens": tokens, "cost_usd": self.cost_usd, "baseline_usd": self.baseline_usd,
            "latency_ms": round(self.latency_s * 1000, 1)}
        if self.fallback_reason:
            out["fallback_reason"] = self.fallback_reason
        if self.error:
            out["error"] = self.error
        if self.shadow_route:
            out["shadow_route"] = self.shadow_route
        return out


class Ledger:
    def __init__(self, metrics: Metrics, recent: int = 50, window: int = 500):
        self.metrics = metrics
        self.mode = "active"
        self._recent: collections.deque[RequestRecord] = collections.deque(maxlen=recent)
        self._latency: dict[Path, collections.deque[float]] = {}
        self._window = window
        self.by_path: collections.Counter[Path] = collections.Counter()
        self.model_calls = 0  # requests that were LLM API calls (the draft-use rate's base)
        self.cost_usd = 0.0
        self.baseline_usd = 0.0
        self.shadow_routes: collections.Counter[str] = collections.Counter()
        self.agreement: dict[str, list[int]] = {}  # rule → [agreed, total]
        self._models: set[str] = set()
        # The charts' data: per minute, what was spent, what the strong model alone would have
        # cost, and the requests by path; only the last SERIES_POINTS minutes are kept.
        self._series: collections.OrderedDict[int, dict[str, Any]] = collections.OrderedDict()

    def _model_label(self, model: str) -> str:
        """Bounded label values: a client sending random model names must not grow the registry."""
        if model in self._models:
            return model
        if len(self._models) < MAX_MODEL_LABELS:
            self._models.add(model)
            return model
        return "other"

    def record(self, rec: RequestRecord) -> None:
        m = self.metrics
        m.requests.labels(rec.path, rec.api, self._model_label(rec.model), rec.rule).inc()
        for role, u in rec.usage.items():
            for kind, attr in _KINDS:
                if getattr(u, attr):
                    m.tokens.labels(role, kind).inc(getattr(u, attr))
        if rec.cost_usd is None or rec.baseline_usd is None:
            m.unpriced.labels(rec.path).inc()
        else:
            m.cost.labels(rec.path).inc(rec.cost_usd)
            m.baseline.labels(rec.path).inc(rec.baseline_usd)
            self.cost_usd += rec.cost_usd
            self.baseline_usd += rec.baseline_usd
            m.savings.set(self.baseline_usd - self.cost_usd)
        if rec.fallback_reason:
            m.fallbacks.labels(rec.fallback_reason).inc()
        if rec.error:
            m.errors.labels(rec.path, rec.error).inc()
        m.duration.labels(rec.path).observe(rec.latency_s)
        self.by_path[rec.path] += 1
        if rec.api != "none":
            self.model_calls += 1
        self._latency.setdefault(rec.path, collections.deque(maxlen=self._window)).append(rec.latency_s * 1000)
        if rec.shadow_route:
            self.shadow_routes[rec.shadow_route] += 1
            m.shadow_decisions.labels(rec.shadow_route, rec.rule).inc()
        self._add_to_series(rec)
        self._recent.append(rec)
        if log.isEnabledFor(logging.INFO):  # the line costs a JSON encoding: only when it is kept
            log.info(json.dumps(rec.log_fields()))
        if rec.trace is not None:
            tracing.finished(rec)

    def _add_to_series(self, rec: RequestRecord) -> None:
        start = int(rec.at // SERIES_BUCKET_S) * SERIES_BUCKET_S
        point = self._series.get(start)
        if point is None:
            point = self._series[start] = {"t": start, "cost_usd": 0.0, "baseline_usd": 0.0,
                                           "by_path": {p: 0 for p in PATHS}}
            while len(self._series) > SERIES_POINTS or next(iter(self._series)) < start - (SERIES_POINTS - 1) * SERIES_BUCKET_S:
                self._series.popitem(last=False)
        point["by_path"][rec.path] = point["by_path"].get(rec.path, 0) + 1
        if rec.cost_usd is not None and rec.baseline_usd is not None:
            point["cost_usd"] += rec.cost_usd
            point["baseline_usd"] += rec.baseline_usd

    def series(self, now: float | None = None) -> dict[str, Any]:
        """The last hour, a point a minute (minutes without requests included, as zeros): cost,
        baseline and requests by path. Each point's `t` is its minute's start (epoch seconds)."""
        now = time.time() if now is None else now
        end = int(now // SERIES_BUCKET_S) * SERIES_BUCKET_S
        if not self._series:
            return {"bucket_s": SERIES_BUCKET_S, "points": []}
        first = max(next(iter(self._series)), end - (SERIES_POINTS - 1) * SERIES_BUCKET_S)
        points = []
        for t in range(first, max(end, next(reversed(self._series))) + 1, SERIES_BUCKET_S):
            p = self._series.get(t)
            points.append({"t": t, "cost_usd": p["cost_usd"], "baseline_usd": p["baseline_usd"],
                           "by_path": dict(p["by_path"])} if p else
                          {"t": t, "cost_usd": 0.0, "baseline_usd": 0.0, "by_path": {q: 0 for q in PATHS}})
        return {"bucket_s": SERIES_BUCKET_S, "points": points[-SERIES_POINTS:]}

    def record_agreement(self, rule: str, agreed: bool) -> None:
        self.metrics.shadow_agreement.labels(rule, "true" if agreed else "false").inc()
        counts = self.agreement.setdefault(rule, [0, 0])
        counts[0] += int(agreed)
        counts[1] += 1

    def dashboard(self) -> dict[str, Any]:
        """The dashboard's data (the contract is in cascade_extproc/dashboard/index.html's users)."""
        total = sum(self.by_path.values())
        drafted = self.by_path[Path.SKIPPED] + self.by_path[Path.ACCEPTED]
        savings = self.baseline_usd - self.cost_usd
        return {
            "generated_at": time.time(),
            "mode": self.mode,
            "totals": {
                "requests": total, "by_path": {p: self.by_path[p] for p in PATHS},
                "draft_use_rate": drafted / self.model_calls if self.model_calls else 0.0,
                "cost_usd": self.cost_usd, "baseline_usd": self.baseline_usd, "savings_usd": savings,
                "savings_rate": savings / self.baseline_usd if self.baseline_usd else None},
            "latency_ms": {p: {"p50": statistics.median(v), "p95": _p95(v), "count": len(v)}
                           for p, v in self._latency.items() if v},
            "shadow": {"decisions": dict(self.shadow_routes),
                       "agreement": {r: {"agreed": a, "total": t} for r, (a, t) in self.agreement.items()}},
            "recent": [_recent(r) for r in reversed(self._recent)],
            "series": self.series(),
        }


def _p95(values: collections.deque[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _recent(r: RequestRecord) -> dict[str, Any]:
    served = r.usage.get("draft") if r.path in (Path.SKIPPED, Path.ACCEPTED) else r.usage.get("strong")
    return {"time": datetime.fromtimestamp(r.at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "request_id": r.request_id, "api": r.api, "path": r.path, "rule": r.rule, "model": r.model,
            "served_model": r.served_model,
            "input_tokens": (served.input_tokens + served.cache_read_tokens + served.cache_write_tokens) if served else None,
            "output_tokens": served.output_tokens if served else None,
            "cost_usd": r.cost_usd, "baseline_usd": r.baseline_usd, "latency_ms": round(r.latency_s * 1000, 1)}
