"""`cascade-extproc replay`: run the router over recorded calls; report path mix, rule hits and
cost under the decisions against all-strong; optionally send them through a running stack.

Costs come from each call's recorded usage (what the strong model really used) and the price
table. A skipped call is priced as the same tokens at the draft's prices. A cascaded call is
priced as the draft (same tokens, draft prices) plus the expected verify call: the recorded
input (cache reads and writes as recorded), the draft and instruction as fresh input, and the
output of a verdict (accept rate p) or of the strong model's own answer (1 − p).
"""
from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable, TextIO

from cascade_extproc import codecs
from cascade_extproc.config import Config
from cascade_extproc.metering.prices import PriceTable
from cascade_extproc.offline.transcripts import RecordedCall
from cascade_extproc.routing.router import Router
from cascade_extproc.types import Api, Route, Usage

REPLAY_HEADERS = {"user-agent": "claude-cli/replay (cascade-extproc)", "anthropic-version": "2023-06-01"}


@dataclass
class Row:
    request_id: str
    model: str
    path: str
    rule: str
    cost_all_strong: float | None
    cost_routed: float | None
    served_path: str | None = None  # with --target: what the stack did
    status: int | None = None
    latency_ms: float | None = None


def _usage(call: RecordedCall) -> Usage | None:
    u = call.usage
    if u is None:
        return None
    return Usage(input_tokens=u.input_tokens, output_tokens=u.output_tokens,
                 cache_read_tokens=u.cache_read_tokens, cache_write_tokens=u.cache_write_tokens,
                 cache_write_1h_tokens=u.cache_write_1h_tokens)


def routed_cost(route: Route, model: str, usage: Usage, cfg: Config, prices: PriceTable) -> float | None:
    strong = prices.lookup(model)
    draft = prices.lookup(cfg.providers.anthropic.draft.model)
    if strong is None or (route is not Route.DIRECT and draft is None):
        return None
    if route is Route.DIRECT:
        return strong.cost(usage)
    if route is Route.SKIPPED:
        return draft.cost(usage)  # type: ignore[union-attr]
    eco = cfg.router.economics
    p, out = eco.accept_rate, usage.output_tokens
    verify_in = Usage(input_tokens=usage.input_tokens + out + eco.instruction_tokens,
                      cache_read_tokens=usage.cache_read_tokens, cache_write_tokens=usage.cache_write_tokens,
                      cache_write_1h_tokens=usage.cache_write_1h_tokens)
    expected_out = Usage(output_tokens=1)  # priced per token, weighted below
    return (draft.cost(usage) + strong.cost(verify_in)  # type: ignore[union-attr]
            + strong.cost(expected_out) * (p * eco.verdict_tokens + (1 - p) * out))


def plan(calls: Iterable[RecordedCall], cfg: Config) -> list[Row]:
    router = Router.from_config(cfg)
    prices = router.ctx.prices or PriceTable([])
    rows = []
    for call in calls:
        raw = codecs.dumps(call.request)
        model = call.model or str(call.request.get("model", ""))
        try:
            req = codecs.parse_request(Api.ANTHROPIC, raw, dict(REPLAY_HEADERS))
            d = router.decide(req, len(raw))
            route, rule = d.route, d.rule
        except codecs.CodecError:
            route, rule = Route.DIRECT, "unparsed-body"
        usage = _usage(call)
        rows.append(Row(call.request_id, model, str(route), rule,
                        None if usage is None else prices.cost(model, usage),
                        None if usage is None else routed_cost(route, model, usage, cfg, prices)))
    return rows


# ---- sending through a running stack -----------------------------------------------------------

def drop_thinking(request: dict[str, Any]) -> dict[str, Any]:
    """The request without thinking blocks: for targets that cannot check the recorded signatures
    (the simulated providers); the thinking setting goes too, as the API requires then."""
    out = dict(request)
    out.pop("thinking", None)
    out["messages"] = [
        {**m, "content": [b for b in m["content"] if not (isinstance(b, dict) and "thinking" in str(b.get("type")))]
         or [{"type": "text", "text": "(reasoning omitted)"}]}
        if isinstance(m.get("content"), list) else m for m in request.get("messages", [])]
    return out


async def send_all(calls: list[RecordedCall], rows: list[Row], target: str, api_key: str,
                   strip_thinking: bool, timeout_s: float = 600) -> None:
    import aiohttp  # only this command talks HTTP

    url = target.rstrip("/") + "/v1/messages"
    headers = {**REPLAY_HEADERS, "x-api-key": api_key, "content-type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        for call, row in zip(calls, rows):
            body = drop_thinking(call.request) if strip_thinking else call.request
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=codecs.dumps(body), headers=headers) as resp:
                    await resp.read()  # the whole answer, streamed or not: latency to the last byte
                    row.status, row.served_path = resp.status, resp.headers.get("x-cascade-path")
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                row.status, row.served_path = 0, f"error: {type(exc).__name__}"
            row.latency_ms = (time.perf_counter() - t0) * 1000


# ---- the report ------------------------------------------------------------------------------------

def _money(v: float | None) -> str:
    return "-" if v is None else f"${v:,.4f}"


def _table(headers: list[str], rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    print(line, file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))), file=out)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def report(rows: list[Row], out: TextIO, *, sources: int, accept_rate: float) -> None:
    n = len(rows)
    priced = [r for r in rows if r.cost_all_strong is not None and r.cost_routed is not None]
    print(f"Replayed {n} calls from {sources} source file(s); {len(priced)} with recorded usage "
          f"and known prices.\n", file=out)
    by_path: dict[str, list[Row]] = {}
    for r in rows:
        by_path.setdefault(r.path, []).append(r)
    table = []
    for path in ("skipped", "cascade", "direct"):
        group = by_path.get(path, [])
        pg = [r for r in group if r in priced]
        table.append([path, str(len(group)), f"{100 * len(group) / n:.1f}%" if n else "-",
                      _money(sum(r.cost_all_strong for r in pg) if pg else 0.0),  # type: ignore[misc]
                      _money(sum(r.cost_routed for r in pg) if pg else 0.0)])  # type: ignore[misc]
    strong = sum(r.cost_all_strong for r in priced)  # type: ignore[misc]
    routed = sum(r.cost_routed for r in priced)  # type: ignore[misc]
    table.append(["total", str(n), "100%" if n else "-", _money(strong), _money(routed)])
    _table(["path", "calls", "share", "all-strong cost", "routed cost"], table, out)
    if strong:
        print(f"\nRouted cost is {100 * (1 - routed / strong):.1f}% below all-strong "
              f"(cascade priced at an expected accept rate of {accept_rate:.0%}).", file=out)
    hits: dict[tuple[str, str], int] = {}
    for r in rows:
        hits[(r.rule, r.path)] = hits.get((r.rule, r.path), 0) + 1
    print(file=out)
    _table(["rule", "path", "calls"], [[rule, path, str(c)] for (rule, path), c in
                                        sorted(hits.items(), key=lambda kv: -kv[1])], out)
    sent = [r for r in rows if r.latency_ms is not None]
    if sent:
        print(file=out)
        lat: dict[str, list[float]] = {}
        for r in sent:
            lat.setdefault(r.served_path or "?", []).append(r.latency_ms)  # type: ignore[arg-type]
        _table(["served path", "calls", "p50 ms", "p95 ms", "errors"],
               [[p, str(len(v)), f"{statistics.median(v):.0f}", f"{_pct(v, 0.95):.0f}",
                 str(sum(1 for r in sent if (r.served_path or "?") == p and (r.status or 0) >= 400 or r.status == 0
                         and (r.served_path or "?") == p))]
                for p, v in sorted(lat.items())], out)


def write_json(rows: list[Row], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    for r in rows:
        print(json.dumps({k: v for k, v in asdict(r).items() if v is not None or k.startswith("cost")}), file=out)
