"""`cascade-extproc replay`: run the router over recorded calls; report path mix, rule hits and
cost under the decisions against all-strong; optionally send them through a running stack.

Every call is priced from the cache model (metering/cache.py), for all-strong and for the routed
plan alike: each conversation thread's calls in time order, each provider's prompt cache
simulated per thread. What a call sends is what was recorded (its prompt: uncached input, cache
reads and writes; its answer's length); what it costs depends on what the provider it goes to
holds by then:
- the strong model (Anthropic, explicit caching) reads what its cache holds of the thread and
  writes the rest up to the breakpoint; the recorded uncached input stays input. Skipped turns
  leave its cache as it was, so their new content is written at the next strong call, and a
  skip run longer than the TTL (5 minutes, or 1 hour where the recorded writes are 1-hour ones)
  lets it go cold: the next strong call writes the whole prefix again.
- the draft (DeepSeek, automatic caching) reads what it holds of the thread at the cheap price
  and misses the rest; a thread's first draft call misses every token.
- a cascade is the draft, then a verify call that reads the context as a direct call would, with
  the draft and the instruction as fresh input and, as output, a verdict (accept rate p) or the
  strong model's own answer (1 − p).
The recorded usage also tells what the simulation cannot see: a thread's first call read what
another conversation had cached (the system prompt and tools, or the conversation a compaction
summarises), and a warm call that read less than the previous call wrote shows the client
changed its prompt there (every cache of the thread holds no more than that from then on).
Replayed all-strong, the model reproduces the recorded bill; the report prints both.

Each call's recorded answer tells what the strong model actually did (actions.py): the report
shows the path mix by that action and the risky-skip share, the calls the draft served alone
whose recorded action the guard policy (config `guard`) calls risky. A guarded call is priced
by its recorded action, standing in for the draft's: a safe one as a skip, a risky one as a
cascade (or the draft and a direct call, `guard.on_risky: direct`); with no answer recorded, as
risky.
"""
from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Iterable, TextIO

from cascade_extproc import actions, codecs
from cascade_extproc.config import Config
from cascade_extproc.metering.cache import (FIVE_MINUTES, ONE_HOUR, CacheRules, Conversation, Mode, ProviderCache,
                                            cached_by, expect, prompt_of, ttl_of)
from cascade_extproc.metering.prices import PER_TOKEN, Price, PriceTable
from cascade_extproc.offline.transcripts import RecordedCall
from cascade_extproc.routing.features import estimate_tokens
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
    thread: str = ""
    timestamp: str = ""
    cost_recorded: float | None = None  # the recorded usage at the table's prices: the model's check
    # The simulated token split per provider: all_strong (every call to the strong model) and
    # the routed plan's strong and draft calls.
    tokens: dict[str, dict[str, float]] = field(default_factory=dict)
    strong_cache_expired: bool = False  # the strong cache was cold only because of the routing
    # What the strong model did on this call, from its recorded answer (actions.py): the kind
    # (file_edit, shell, read_only, subagent, text, other; "" when no answer is recorded), the
    # tool, a destructive command, and whether the guard policy counts it as risky.
    action: str = ""
    action_tool: str = ""
    destructive: bool = False
    risky: bool = False
    # Guarded rows (route guarded): the recorded action stands in for the draft's, so the row is
    # priced as what the guard would have done with it: "skipped" (safe: served) or "cascade" /
    # "direct" (risky: verified, or answered by the strong model; guard.on_risky).
    guarded: bool | None = None
    priced_as: str | None = None
    served_path: str | None = None  # with --target: what the stack did
    status: int | None = None
    latency_ms: float | None = None


def split(u: Usage, output: float | None = None) -> dict[str, float]:
    """A usage as the JSON rows show it: cache writes by lifetime."""
    w1h = min(u.cache_write_1h_tokens, u.cache_write_tokens)
    return {"input": u.input_tokens, "cache_read": u.cache_read_tokens, "cache_write_5m": u.cache_write_tokens - w1h,
            "cache_write_1h": w1h, "output": u.output_tokens if output is None else round(output, 2)}


def _usage(call: RecordedCall) -> Usage | None:
    u = call.usage
    if u is None:
        return None
    return Usage(input_tokens=u.input_tokens, output_tokens=u.output_tokens,
                 cache_read_tokens=u.cache_read_tokens, cache_write_tokens=u.cache_write_tokens,
                 cache_write_1h_tokens=u.cache_write_1h_tokens)


def _seconds(timestamp: str) -> float | None:
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _asked(u: Usage) -> float | None:
    """The cache lifetime a recorded call asked for, as its writes show: None when it wrote nothing."""
    if not u.cache_write_tokens:
        return None
    return ONE_HOUR if 2 * u.cache_write_1h_tokens >= u.cache_write_tokens else FIVE_MINUTES


@dataclass
class _Thread:
    """One conversation thread being replayed: the routed plan's caches (conv), the all-strong
    plan's strong cache, and what the previous recorded call showed."""

    ask: float
    conv: Conversation = field(default_factory=Conversation)
    all_strong: ProviderCache = field(default_factory=ProviderCache)
    prev_at: float | None = None
    prev_cached: int = 0  # what the previous recorded call left in the real cache
    calls: int = 0


@dataclass(frozen=True)
class _Sides:
    strong: Price | None
    strong_rules: CacheRules
    draft_model: str
    draft: Price | None
    draft_rules: CacheRules


def plan(calls: Iterable[RecordedCall], cfg: Config) -> list[Row]:
    """Route and price every call, each thread in time order; rows in the calls' own order."""
    calls = list(calls)
    router = Router.from_config(cfg)
    policy = actions.Policy.from_config(cfg.guard)
    prices = router.ctx.prices or PriceTable([])
    caches = router.ctx.caches
    draft_model = cfg.providers.anthropic.draft.model
    rows: list[Row | None] = [None] * len(calls)
    threads: dict[str, list[int]] = {}
    for i, call in enumerate(calls):
        threads.setdefault(call.thread or call.session_id or call.request_id, []).append(i)
    for key, members in threads.items():
        stamps = {i: _seconds(calls[i].timestamp) for i in members}
        order = sorted(members, key=lambda i: (stamps[i] is None, stamps[i] or 0.0, i))
        first_ask = next((a for a in (_asked(u) for u in map(_usage, (calls[i] for i in order)) if u) if a), FIVE_MINUTES)
        thread, clock = _Thread(first_ask), 0.0
        for i in order:
            call = calls[i]
            clock = stamps[i] if stamps[i] is not None else clock  # no timestamp: right after the previous
            model = call.model or str(call.request.get("model", ""))
            sides = _Sides(prices.lookup(model), caches.lookup(model), draft_model, prices.lookup(draft_model),
                           caches.lookup(draft_model))
            rows[i] = _replay_call(call, key, model, clock, thread, router, sides, cfg, policy)
    return [r for r in rows if r is not None]


def served_alone(row: Row) -> bool:
    """The draft's answer reached the client unchecked: skipped, or guarded and judged safe."""
    return row.path == "skipped" or row.priced_as == "skipped"


def _guarded(action: actions.Action | None, policy: actions.Policy, on_risky: str) -> Route:
    """What the guard does with an answer taking `action` (None: unknown, treated as risky)."""
    if action is not None and not policy.is_risky(action):
        return Route.SKIPPED
    return Route.CASCADE if on_risky == "verify" else Route.DIRECT


def _replay_call(call: RecordedCall, key: str, model: str, now: float, th: _Thread, router: Router,
                 sides: _Sides, cfg: Config, policy: actions.Policy) -> Row:
    raw = codecs.dumps(call.request)
    context = estimate_tokens(len(raw))
    try:
        req = codecs.parse_request(Api.ANTHROPIC, raw, dict(REPLAY_HEADERS))
        d = router.decide(req, len(raw), now=now, conversation=th.conv)
        route, rule = d.route, d.rule
    except codecs.CodecError:
        route, rule = Route.DIRECT, "unparsed-body"
    row = Row(call.request_id, model, str(route), rule, None, None, key, call.timestamp)
    action = actions.classify_json(list(call.answer), policy.patterns) if call.answer else None
    if action is not None:
        row.action, row.action_tool, row.destructive = action.kind, action.tool, action.destructive
        row.risky = policy.is_risky(action)
    draft_asked = route is not Route.DIRECT
    if route is Route.GUARDED:
        route = _guarded(action, policy, cfg.guard.on_risky)
        row.guarded, row.priced_as = True, str(route)
    u = _usage(call)
    if u is None:
        return row
    th.ask = _asked(u) or th.ask
    conv, ask = th.conv, th.ask
    prompt, tail = prompt_of(u), u.input_tokens
    cacheable = prompt - tail
    strong_ttl = ttl_of(sides.strong_rules, ask)
    # What the recording shows about the thread's prefix (see the module's docstring): at its
    # first call, what another conversation had cached at the strong provider; later, where the
    # client changed its prompt.
    if th.calls == 0 and u.cache_read_tokens:
        for cache in (th.all_strong, conv.strong):
            cache.saw(now, model, u.cache_read_tokens, strong_ttl)
    if th.prev_at is not None and now - th.prev_at <= ask and u.cache_read_tokens < th.prev_cached:
        for cache in (th.all_strong, conv.strong, conv.draft):
            cache.cap(u.cache_read_tokens)
    th.prev_at, th.prev_cached, th.calls = now, cacheable, th.calls + 1
    all_warm = th.all_strong.warm(now, model)
    if sides.strong is not None:
        row.cost_recorded = sides.strong.cost(u)
        all_u = expect(th.all_strong, sides.strong_rules, sides.strong, now, model, prompt, ask=ask, tail=tail,
                       output=u.output_tokens)
        row.cost_all_strong = sides.strong.cost(all_u)
        row.tokens["all_strong"] = split(all_u)
    th.all_strong.saw(now, model, cacheable, strong_ttl)
    if sides.strong is None or (draft_asked and sides.draft is None):
        return row
    eco = cfg.router.economics
    cost = 0.0
    if draft_asked:  # the draft answers (skipped), drafts (cascade) or is guarded, as long as recorded
        assert sides.draft is not None
        d_u = expect(conv.draft, sides.draft_rules, sides.draft, now, sides.draft_model, prompt, ask=ask,
                     output=u.output_tokens)
        cost += sides.draft.cost(d_u)
        row.tokens["draft"] = split(d_u)
        conv.draft.saw(now, sides.draft_model, cached_by(sides.draft_rules, d_u), ttl_of(sides.draft_rules, ask),
                       context)
    if route is not Route.SKIPPED:
        row.strong_cache_expired = all_warm and not conv.strong.warm(now, model)
        appended = 0 if route is Route.DIRECT else u.output_tokens + eco.instruction_tokens
        s_u = expect(conv.strong, sides.strong_rules, sides.strong, now, model, prompt + appended, ask=ask,
                     tail=tail + appended)
        if route is Route.DIRECT:
            out = float(u.output_tokens)
        else:  # a verdict when the draft is accepted, the strong model's own answer when not
            out = eco.accept_rate * eco.verdict_tokens + (1 - eco.accept_rate) * u.output_tokens
        cost += sides.strong.cost(s_u) + PER_TOKEN * out * sides.strong.output
        row.tokens["strong"] = split(s_u, out)
        held = cached_by(sides.strong_rules, s_u) - (appended if sides.strong_rules.mode is Mode.AUTOMATIC else 0)
        conv.strong.saw(now, model, held, strong_ttl, context)
    conv.turn_ended(now)
    row.cost_routed = cost
    return row


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
    threads = len({r.thread for r in rows})
    print(f"Replayed {n} calls from {sources} source file(s) in {threads} conversation thread(s); {len(priced)} "
          f"with recorded usage and known prices.", file=out)
    print("Every call is priced from the cache model, all-strong and routed alike: each provider's prompt cache\n"
          "simulated per thread, in time order (docs/routing.md, \"The cache model\").\n", file=out)
    by_path: dict[str, list[Row]] = {}
    for r in rows:
        by_path.setdefault(_label(r), []).append(r)
    table = []
    for path in _order(by_path):
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
        recorded = [r.cost_recorded for r in priced if r.cost_recorded is not None]
        if len(recorded) == len(priced):
            print(f"All-strong as the model prices it: {_money(strong)}; as recorded: {_money(sum(recorded))} "
                  "(the model's own check).", file=out)
        cold = sum(1 for r in priced if r.strong_cache_expired)
        print(f"Strong calls that found the strong cache cold only because turns before them went to the "
              f"draft: {cold}.", file=out)
    actions_report(rows, out)
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


_PATHS = ("skipped", "guarded: served", "guarded: verified", "guarded: direct", "cascade", "direct")
_ACTIONS = (actions.FILE_EDIT, actions.SUBAGENT, "shell (destructive)", actions.SHELL, actions.READ_ONLY,
            actions.TEXT, actions.OTHER, "unknown")


def _label(r: Row) -> str:
    if not r.guarded:
        return r.path
    return {"skipped": "guarded: served", "cascade": "guarded: verified"}.get(r.priced_as or "", "guarded: direct")


def _order(by_path: dict[str, list[Row]]) -> list[str]:
    """The report's path rows: the three routes always, guarded ones when there are any."""
    return [p for p in _PATHS if p in by_path or p in ("skipped", "cascade", "direct")]


def _action_label(r: Row) -> str:
    if not r.action:
        return "unknown"
    return "shell (destructive)" if r.destructive else r.action


def risky_skip_share(rows: list[Row]) -> tuple[int, int]:
    """(risky, all): the calls the draft served alone (skipped, or guarded and safe), and those of
    them whose recorded action the guard policy calls risky. Calls with no recorded answer are
    left out."""
    alone = [r for r in rows if served_alone(r) and r.action]
    return sum(1 for r in alone if r.risky), len(alone)


def actions_report(rows: list[Row], out: TextIO) -> None:
    """The path mix by what the strong model actually did (its recorded answer), and the share of
    the calls the draft served alone that took a risky action."""
    known = [r for r in rows if r.action]
    if not known:
        return
    cols = [p for p in _PATHS if any(_label(r) == p for r in rows)]
    counts: dict[tuple[str, str], int] = {}
    for r in rows:
        counts[(_action_label(r), _label(r))] = counts.get((_action_label(r), _label(r)), 0) + 1
    body = []
    for a in _ACTIONS:
        line = [counts.get((a, p), 0) for p in cols]
        if sum(line):
            body.append([a + (" *" if any(r.risky for r in rows if _action_label(r) == a) else "")]
                        + [str(v) for v in line] + [str(sum(line))])
    print("\nWhat the strong model did on each call (its recorded answer) by the path it was routed to;\n"
          "* risky (the guard policy: config guard.risky_actions, destructive commands):\n", file=out)
    _table(["action"] + cols + ["total"], body, out)
    risky, alone = risky_skip_share(rows)
    if alone:
        print(f"\nRisky-skip share: {risky} of the {alone} calls the draft served alone (skipped, or guarded "
              f"and safe) took a risky action: {risky / alone:.3f}.", file=out)


def write_json(rows: list[Row], out: TextIO | None = None) -> None:
    """One line per call: request_id, path, rule, both costs, the simulated token split per
    provider (`tokens`: all_strong, and the routed plan's strong and draft calls)."""
    out = out or sys.stdout
    for r in rows:
        print(json.dumps({k: v for k, v in asdict(r).items() if v is not None or k.startswith("cost")}), file=out)
