"""Run a suite, paired: the same tasks, in the same order, with the same seed and temperature,
against a baseline (the strong model alone: a provider's URL, or the stack in pass-through mode)
and against each candidate (the cascade stack, under one router setting or several).

Cost per task: when a target's admin URL is given (the stack's /metrics), the difference of
the ledger's `cascade_cost_usd_total` across the task: every call the stack made for it, draft
and verify included. Otherwise each answer's usage priced with the price table, at the model the
answer names when it has a price, else at the model asked for: exact for a provider called
directly, and for the stack an undercount where a cascade made calls the answer does not show.
"""
from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from cascade_extproc.metering.prices import PriceTable
from cascade_extproc.offline.eval import agent
from cascade_extproc.offline.eval.client import Call, Client
from cascade_extproc.offline.eval.tasks import AgenticTask, AnyTask, Task
from cascade_extproc.types import Api, Block, ChatRequest, Message, Response

DRAFT_PATHS = ("skipped", "accepted")  # the draft's answer reached the client (the dashboard's draft use)


@dataclass
class Target:
    arm: str  # the arm's name in the report: "baseline", "cascade", or a router setting's label
    url: str  # base URL, as an SDK takes it
    admin_url: str | None = None  # the stack's admin server: costs from its ledger
    api_key: str = "eval"


@dataclass
class Row:
    """One task on one arm: a JSON row of the report."""

    suite: str
    task: str
    kind: str
    arm: str
    passed: bool
    detail: str  # why it failed (the check's words, or the model call's error)
    cost_usd: float | None
    cost_source: str  # "ledger" or "usage"
    latency_s: float  # the task's wall time: all its model calls and tool runs
    steps: int  # model calls
    paths: list[str] = field(default_factory=list)  # x-cascade-path of each model call
    call_latency_s: list[float] = field(default_factory=list)
    input_tokens: int = 0  # the answers' usage (what the client was told)
    output_tokens: int = 0
    cache_read_tokens: int = 0
    errors: list[str] = field(default_factory=list)  # failed model calls
    stopped: str = ""  # agentic: answered | step-limit | model-error

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Ledger:
    """The stack's own account, read from its /metrics: cost and requests so far."""

    def __init__(self, admin_url: str, session: aiohttp.ClientSession):
        self.url = admin_url.rstrip("/") + "/metrics"
        self.session = session

    async def read(self) -> dict[str, float]:
        async with self.session.get(self.url, timeout=aiohttp.ClientTimeout(total=10)) as r:
            text = await r.text()
        out = {"cost": 0.0, "requests": 0.0, "unpriced": 0.0, "reloads_ok": 0.0}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == "cascade_cost_usd_total":
                    out["cost"] += s.value
                elif s.name == "cascade_requests_total":
                    out["requests"] += s.value
                elif s.name == "cascade_unpriced_requests_total":
                    out["unpriced"] += s.value
                elif s.name == "cascade_config_reloads_total" and s.labels.get("result") == "ok":
                    out["reloads_ok"] += s.value
        return out

    async def settled(self, before: dict[str, float], calls: int, timeout: float = 10.0) -> dict[str, float]:
        """The account once the task's `calls` are all recorded (the ledger records a request when
        its answer has gone out, a moment after the client has it)."""
        deadline = time.monotonic() + timeout
        while True:
            now = await self.read()
            if now["requests"] - before["requests"] >= calls or time.monotonic() > deadline:
                return now
            await asyncio.sleep(0.05)


class Runner:
    def __init__(self, suite: str, api: Api, model: str, prices: PriceTable, session: aiohttp.ClientSession,
                 seed: int = 0, temperature: float = 0.0, max_tokens: int | None = None,
                 timeout_s: float = 300.0, progress: Callable[[str], None] | None = None):
        self.suite, self.api, self.model, self.prices, self.session = suite, api, model, prices, session
        self.seed, self.temperature, self.max_tokens, self.timeout_s = seed, temperature, max_tokens, timeout_s
        self.progress = progress or (lambda _: None)

    def _price(self, calls: list[Call]) -> float | None:
        total = 0.0
        for c in calls:
            if c.response is None:
                continue
            price = self.prices.lookup(c.response.model) or self.prices.lookup(self.model)
            if price is None:
                return None
            total += price.cost(c.usage)
        return total

    async def run_task(self, task: AnyTask, target: Target) -> Row:
        client = Client(self.api, target.url, target.api_key, self.session, self.timeout_s, self.seed)
        ledger = Ledger(target.admin_url, self.session) if target.admin_url else None
        before = await ledger.read() if ledger else None
        calls: list[Call] = []

        async def send(req: ChatRequest) -> Response | None:
            call = await client.send(req)
            calls.append(call)
            return call.response

        started = time.monotonic()
        stopped = ""
        if isinstance(task, AgenticTask):
            with tempfile.TemporaryDirectory(prefix=f"eval-{task.id}-") as tmp:
                ws = agent.Workspace(Path(tmp))
                ws.write_files(task.files)
                run = await agent.run(task, ws, send, self.model, self.max_tokens, self.temperature)
                stopped = run.stopped
                verdict = await asyncio.to_thread(agent.check, task, ws)
        else:
            resp = await send(self._single_turn(task))
            verdict = await asyncio.to_thread(task.check, resp.text) if resp is not None else None
        latency = time.monotonic() - started
        errors = [c.error for c in calls if c.error]
        passed = bool(verdict and verdict.passed) and not (errors and not isinstance(task, AgenticTask))
        detail = (verdict.detail if verdict else "") or ("; ".join(errors) if errors else "")
        if ledger and before is not None:
            after = await ledger.settled(before, len(calls))
            cost = None if after["unpriced"] > before["unpriced"] else after["cost"] - before["cost"]
            source = "ledger"
        else:
            cost, source = self._price(calls), "usage"
        row = Row(self.suite, task.id, task.kind, target.arm, passed, detail[:300], cost, source, latency,
                  len(calls), [c.path for c in calls], [round(c.latency_s, 4) for c in calls],
                  sum(c.usage.input_tokens for c in calls), sum(c.usage.output_tokens for c in calls),
                  sum(c.usage.cache_read_tokens for c in calls), errors, stopped)
        self.progress(f"{target.arm:>10} {task.id:<24} {'pass' if passed else 'FAIL'} "
                      f"{latency:6.1f}s {','.join(row.paths)}")
        return row

    def _single_turn(self, task: Task) -> ChatRequest:
        return ChatRequest(model=self.model, messages=[Message("user", [Block("text", text=task.prompt)])],
                           system=task.system, max_tokens=self.max_tokens or task.max_tokens,
                           temperature=self.temperature)

    async def run_arm(self, tasks: list[AnyTask], target: Target) -> list[Row]:
        return [await self.run_task(t, target) for t in tasks]


async def switch_setting(stack_config: Path, content: str, admin_url: str, session: aiohttp.ClientSession,
                         timeout: float = 30.0) -> None:
    """Put a router setting in force on a running stack: write its config file, which the stack
    re-reads when it changes (reload_interval_s), and wait until its admin counts one more good
    reload. Raises when the stack refused the file or did not reload in time."""
    ledger = Ledger(admin_url, session)
    before = await ledger.read()
    if stack_config.read_text() == content:
        return
    stack_config.write_text(content)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await ledger.read())["reloads_ok"] > before["reloads_ok"]:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the stack did not apply {stack_config} within {timeout:.0f} s: see its log (a refused "
                       "key?); a stack started with `up` does not watch its config file: sweep a stack run "
                       "with `serve --config FILE` behind Envoy (docs/quality.md)")
