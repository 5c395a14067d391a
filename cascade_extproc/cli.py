"""Command line: serve, up, route, replay, eval, sim, envoy-config, gen-certs."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

import yaml

from cascade_extproc import config as config_mod
from cascade_extproc.config import ConfigError


def _load(path: str | None) -> config_mod.Config:
    from cascade_extproc.app import load_config  # a config is valid when a runtime can be built from it

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"cascade-extproc: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _setup_logging(cfg: config_mod.Config) -> None:
    from cascade_extproc.metering import logs
    from cascade_extproc.types import Api

    keys = [cfg.providers.for_api(api).draft.api_key() or "" for api in Api]
    logs.setup(cfg.log_level, secrets=keys)


# The event loop the server runs on: asyncio's, or uvloop (when installed) with
# CASCADE_EXTPROC_LOOP=uvloop. Measured side by side (bench/floor.py, docs/performance.md): no
# gain beyond noise here, since the cost per call is grpc's own machinery, not the loop's.
LOOP_ENV = "CASCADE_EXTPROC_LOOP"


def run_loop(coro: Any) -> Any:
    if os.environ.get(LOOP_ENV, "asyncio") == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def cmd_serve(args: argparse.Namespace) -> int:
    from cascade_extproc.app import serve

    cfg = _load(args.config)
    _setup_logging(cfg)
    run_loop(serve(cfg, args.config))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from cascade_extproc.deploy.stack import up

    cfg = _load(args.config)
    _setup_logging(cfg)
    return asyncio.run(up(cfg, listen=args.listen, admin=args.admin, force_sim=args.sim))


def cmd_route(args: argparse.Namespace) -> int:
    from cascade_extproc.routing.router import Router
    from cascade_extproc.types import Api

    router = Router.from_config(_load(args.config))
    if args.file == "-":
        return _route_lines(sys.stdin, router, Api(args.api))
    try:
        with open(args.file, encoding="utf-8") as f:
            return _route_lines(f, router, Api(args.api))
    except BrokenPipeError:  # the reader (say `head`) has seen enough
        return 0
    except OSError as exc:
        print(f"cascade-extproc route: {exc}", file=sys.stderr)
        return 2


def _route_lines(lines, router, api) -> int:
    from cascade_extproc.codecs import CodecError, dumps, parse_request

    for n, line in enumerate(lines, 1):
        raw = line.strip().encode()
        if not raw:
            continue
        out: dict[str, Any] = {"line": n}
        try:  # a line written by `replay --write` wraps the request with its recorded details
            wrapped = json.loads(raw)
        except ValueError:
            wrapped = None
        if isinstance(wrapped, dict) and isinstance(wrapped.get("request"), dict):
            out["request_id"] = wrapped.get("request_id")
            raw = dumps(wrapped["request"])
        try:
            req = parse_request(api, raw, {})
        except CodecError as exc:
            out.update(path="direct", rule="unparsed-body", error=str(exc), features={})
        else:
            d = router.decide(req, len(raw))
            features = d.features
            out.update(path=str(d.route), rule=d.rule,
                       features=features.resolved() if hasattr(features, "resolved") else features)
        print(json.dumps(out), flush=True)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    import os

    from cascade_extproc.offline import replay, transcripts

    cfg = _load(args.config)
    try:
        if args.from_claude_code:
            calls, stats = transcripts.load_with_stats(args.from_claude_code)
            sources = stats["files"]
        elif args.file:
            calls, sources = transcripts.read_jsonl(args.file), 1
        else:
            print("cascade-extproc replay: give FILE.jsonl or --from-claude-code PATH", file=sys.stderr)
            return 2
    except (OSError, ValueError) as exc:
        print(f"cascade-extproc replay: {exc}", file=sys.stderr)
        return 2
    if args.write:
        with open(args.write, "w", encoding="utf-8") as out:
            transcripts.write_jsonl(calls, out)
        print(f"wrote {len(calls)} requests to {args.write}", file=sys.stderr)
        return 0
    rows = replay.plan(calls, cfg)
    if args.target:
        key = os.environ.get("ANTHROPIC_API_KEY", "replay")
        asyncio.run(replay.send_all(calls, rows, args.target, key, args.drop_thinking))
    if args.json:
        replay.write_json(rows)
    else:
        replay.report(rows, sys.stdout, sources=sources, accept_rate=cfg.router.economics.accept_rate)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from cascade_extproc.metering.prices import PriceTable
    from cascade_extproc.offline import eval as harness

    cfg = _load(args.config)
    return harness.main(args, PriceTable.from_config(cfg.pricing.models))


def cmd_sim(args: argparse.Namespace) -> int:
    from cascade_extproc import sim

    logging.basicConfig(level="INFO", stream=sys.stderr)
    return sim.main(args)


def cmd_envoy_config(args: argparse.Namespace) -> int:
    from cascade_extproc.config import Addr
    from cascade_extproc.deploy import envoy_config

    cfg = _load(args.config)
    transparent = None
    try:
        if args.transparent:
            hosts = tuple(h for h in (args.transparent_hosts or "").split(",") if h.strip())
            transparent = envoy_config.TransparentConfig(
                listen=tuple(Addr.parse(a) for a in args.transparent), certs_dir=args.certs, hosts=hosts)
        elif args.transparent_hosts:
            raise ValueError("--transparent-hosts needs --transparent")
        boot = envoy_config.build(cfg, listen=Addr.parse(args.listen), grpc=Addr.parse(cfg.listen.grpc),
                                  admin=Addr.parse(args.envoy_admin),
                                  health=Addr.parse(args.health) if args.health else None,
                                  transparent=transparent, upstream_ca=args.upstream_ca)
    except ValueError as exc:
        print(f"cascade-extproc envoy-config: {exc}", file=sys.stderr)
        return 2
    print(envoy_config.HEADER + yaml.dump(boot, Dumper=_BlockDumper, sort_keys=False), end="")
    return 0


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the Lua filters' code) as YAML literal blocks, readable in the file."""


_BlockDumper.add_representer(str, lambda dumper, s: dumper.represent_scalar(
    "tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def cmd_gen_certs(args: argparse.Namespace) -> int:
    from cascade_extproc.deploy import certs

    hosts = [h for h in args.hosts.split(",") if h.strip()]
    try:
        w = certs.generate(args.out, hosts, system_bundle_path=args.system_bundle, days=args.days)
    except (OSError, ValueError) as exc:
        print(f"cascade-extproc gen-certs: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {w.ca}, {w.bundle}, {w.leaf}, {w.leaf_key} for {', '.join(hosts)} "
          f"(the CA's private key was not kept)", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cascade-extproc", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the ext_proc gRPC server and the admin server")
    s.add_argument("--config", help="YAML config file (merged over the defaults)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("up", help="run the whole local stack: Envoy, server, simulated providers")
    s.add_argument("--config")
    s.add_argument("--listen", default="127.0.0.1:10000", help="client port (HOST:PORT)")
    s.add_argument("--admin", default=None, help="admin HTTP address (default: from config)")
    s.add_argument("--sim", action="store_true", help="use simulated providers even if keys are set")
    s.set_defaults(func=cmd_up)

    s = sub.add_parser("route", help="print the router's decision for requests (JSON lines)")
    s.add_argument("file", help="file of JSON requests, one per line, or - for stdin")
    s.add_argument("--config")
    s.add_argument("--api", choices=["anthropic", "openai"], default="anthropic")
    s.set_defaults(func=cmd_route)

    s = sub.add_parser("replay", help="route recorded calls: path mix, rule hits, cost vs all-strong")
    s.add_argument("file", nargs="?", help="JSON lines: calls written by --write, or request bodies")
    s.add_argument("--from-claude-code", metavar="PATH", help="a Claude Code transcript (.jsonl) or a folder of them")
    s.add_argument("--write", metavar="OUT", help="write the rebuilt requests as JSON lines and stop")
    s.add_argument("--target", metavar="URL", help="also send them through a running stack (e.g. make run)")
    s.add_argument("--drop-thinking", action="store_true",
                   help="with --target: drop recorded thinking blocks (simulated providers reject their signatures)")
    s.add_argument("--json", action="store_true", help="one JSON line per call instead of the report")
    s.add_argument("--config")
    s.set_defaults(func=cmd_replay)

    from cascade_extproc.offline import eval as harness

    s = sub.add_parser("eval", help="run a task suite paired: the strong model alone vs the cascade stack")
    harness.add_arguments(s)
    s.add_argument("--config", help="YAML config whose price table prices the answers (default: the defaults)")
    s.set_defaults(func=cmd_eval)

    from cascade_extproc import sim

    s = sub.add_parser("sim", help="run SIMULATED Anthropic and OpenAI providers (no real model)")
    sim.add_arguments(s)
    s.set_defaults(func=cmd_sim)

    s = sub.add_parser("envoy-config", help="print the Envoy bootstrap for a config")
    s.add_argument("--config")
    s.add_argument("--listen", default="127.0.0.1:10000")
    s.add_argument("--envoy-admin", default="127.0.0.1:9901")
    s.add_argument("--health", metavar="HOST:PORT", help="a listener for probes: GET /ready (Envoy's readiness)")
    s.add_argument("--transparent", metavar="HOST:PORT", action="append",
                   help="also a listener for iptables-captured TCP 443 (docs/transparent.md); "
                        "repeat for more addresses, e.g. 127.0.0.1:15443 and [::1]:15443")
    s.add_argument("--certs", default="/etc/cascade-certs", metavar="DIR",
                   help="with --transparent: where gen-certs wrote leaf.pem and leaf-key.pem")
    s.add_argument("--transparent-hosts", metavar="HOST,HOST",
                   help="with --transparent: intercept only these (default: every https strong provider's host)")
    s.add_argument("--upstream-ca", default=None, metavar="FILE",
                   help="CA bundle Envoy trusts for https upstreams (default: the system bundle)")
    s.set_defaults(func=cmd_envoy_config)

    s = sub.add_parser("gen-certs", help="make a pod-local CA and a certificate for the intercepted hosts")
    s.add_argument("--out", required=True, metavar="DIR", help="ca.pem, bundle.pem, leaf.pem, leaf-key.pem go here")
    s.add_argument("--hosts", required=True, metavar="HOST,HOST", help="e.g. api.anthropic.com,api.openai.com")
    s.add_argument("--system-bundle", metavar="PATH",
                   help="system CAs for bundle.pem (default: /etc/ssl/certs/ca-certificates.crt, else certifi's)")
    s.add_argument("--days", type=int, default=30, help="validity (default 30; a pod makes new ones at each start)")
    s.set_defaults(func=cmd_gen_certs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)
