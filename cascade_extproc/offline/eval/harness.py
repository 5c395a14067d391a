"""`cascade-extproc eval`: the suites, the arguments, and one paired run from end to end: the
baseline arm, then each candidate arm (the cascade stack, once per router setting when several
are swept), then the report (Markdown on stdout; with --out also rows.jsonl, summary.json,
report.md and cost_quality.svg, a point per arm)."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TextIO

import aiohttp

from cascade_extproc.metering.prices import PriceTable
from cascade_extproc.offline.eval import report
from cascade_extproc.offline.eval.runner import Row, Runner, Target, switch_setting
from cascade_extproc.offline.eval.suites import agentic, paper20
from cascade_extproc.offline.eval.tasks import AnyTask
from cascade_extproc.types import Api

SUITES: dict[str, list[AnyTask]] = {"paper20": list(paper20.TASKS), "agentic": list(agentic.TASKS)}
BASELINE = "baseline"
KEY_ENV = {Api.ANTHROPIC: "ANTHROPIC_API_KEY", Api.OPENAI: "OPENAI_API_KEY"}
DEFAULT_MODEL = {Api.ANTHROPIC: "claude-sonnet-5", Api.OPENAI: "gpt-5.4"}


def select(tasks: list[AnyTask], ids: str | None, limit: int | None) -> list[AnyTask]:
    if ids:
        wanted = [i.strip() for i in ids.split(",") if i.strip()]
        known = {t.id: t for t in tasks}
        unknown = [i for i in wanted if i not in known]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; the suite has {', '.join(known)}")
        tasks = [known[i] for i in wanted]
    return tasks[:limit] if limit else tasks


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", required=True, choices=sorted(SUITES))
    p.add_argument("--target", required=True, metavar="URL",
                   help="the cascade stack's base URL, as the SDK takes it (Envoy: http://127.0.0.1:10000, "
                        "or .../openai/v1 with --api openai)")
    p.add_argument("--baseline", required=True, metavar="URL",
                   help="the strong model alone: its provider's base URL, or a stack in pass-through mode")
    p.add_argument("--target-admin", metavar="URL",
                   help="the stack's admin URL (http://127.0.0.1:9464): costs from its ledger, every call "
                        "included; without it, costs are priced from the answers' usage")
    p.add_argument("--baseline-admin", metavar="URL", help="the same for a baseline that is a stack")
    p.add_argument("--api", choices=[a.value for a in Api], default="anthropic")
    p.add_argument("--model", help="the strong model the client asks for (default: claude-sonnet-5 / gpt-5.4)")
    p.add_argument("--tasks", metavar="ID,ID", help="only these tasks, in this order")
    p.add_argument("--limit", type=int, help="only the first N tasks")
    p.add_argument("--seed", type=int, default=0, help="sent as the OpenAI seed; seeds the bootstrap")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-tokens", type=int, help="cap every answer (default: each task's own)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per model call")
    p.add_argument("--setting", action="append", metavar="LABEL=CONFIG.yaml",
                   help="sweep router settings: run the candidate arm once per setting, each a complete "
                        "config written over --stack-config (the running stack reloads it); repeat")
    p.add_argument("--stack-config", metavar="PATH", help="the running stack's config file (with --setting)")
    p.add_argument("--out", metavar="DIR", help="write rows.jsonl, summary.json, report.md (and the plot) here")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _settings(args: argparse.Namespace) -> list[tuple[str, str]]:
    out = []
    for spec in args.setting or []:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"--setting {spec!r}: expected LABEL=CONFIG.yaml")
        out.append((label, Path(path).read_text()))
    if out and not (args.stack_config and args.target_admin):
        raise ValueError("--setting needs --stack-config and --target-admin (to see the stack reload)")
    return out


async def run(args: argparse.Namespace, prices: PriceTable, tasks: list[AnyTask],
              settings: list[tuple[str, str]], progress) -> list[Row]:
    api = Api(args.api)
    key = os.environ.get(KEY_ENV[api], "eval")
    model = args.model or DEFAULT_MODEL[api]
    rows: list[Row] = []
    async with aiohttp.ClientSession() as session:
        runner = Runner(args.suite, api, model, prices, session, seed=args.seed, temperature=args.temperature,
                        max_tokens=args.max_tokens, timeout_s=args.timeout, progress=progress)
        rows += await runner.run_arm(tasks, Target(BASELINE, args.baseline, args.baseline_admin, key))
        if not settings:
            rows += await runner.run_arm(tasks, Target("cascade", args.target, args.target_admin, key))
            return rows
        stack_config = Path(args.stack_config)
        original = stack_config.read_text()
        try:
            for label, text in settings:
                await switch_setting(stack_config, text, args.target_admin, session)
                rows += await runner.run_arm(tasks, Target(label, args.target, args.target_admin, key))
        finally:
            await switch_setting(stack_config, original, args.target_admin, session)
    return rows


def main(args: argparse.Namespace, prices: PriceTable, out: TextIO | None = None) -> int:
    try:
        tasks = select(SUITES[args.suite], args.tasks, args.limit)
        settings = _settings(args)
    except (OSError, ValueError) as exc:
        print(f"cascade-extproc eval: {exc}", file=sys.stderr)
        return 2
    progress = (lambda _: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        rows = asyncio.run(run(args, prices, tasks, settings, progress))
    except RuntimeError as exc:
        print(f"cascade-extproc eval: {exc}", file=sys.stderr)
        return 1
    meta = {"suite": args.suite, "api": args.api, "model": args.model or DEFAULT_MODEL[Api(args.api)],
            "tasks": len(tasks), "baseline": args.baseline, "target": args.target, "seed": args.seed,
            "temperature": args.temperature, "max_tokens": args.max_tokens or "per task"}
    text = report.markdown(rows, BASELINE, meta, args.seed)
    (out or sys.stdout).write(text)
    if args.out:
        d = Path(args.out)
        d.mkdir(parents=True, exist_ok=True)
        (d / "report.md").write_text(text)
        with (d / "rows.jsonl").open("w") as f:
            for r in rows:
                f.write(json.dumps(r.as_json()) + "\n")
        (d / "summary.json").write_text(json.dumps(report.as_json(rows, BASELINE, meta, args.seed), indent=2) + "\n")
        (d / "cost_quality.svg").write_text(report.svg_plot(rows, f"{args.suite}: cost vs pass rate"))
    return 0
