"""Typed configuration: defaults, loading from YAML, validation that names the bad key.

A leaf: the schema and its loading, nothing of ours but types. What compiles a section (the
router's rules, the price table) imports this module, never the other way round; a config is
valid when a runtime can be built from it (app.load_config).
"""
from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import yaml

from cascade_extproc.types import Api

DEFAULTS_FILE = FsPath(__file__).parent / "defaults" / "config.yaml"
# Envoy's timeout for a model call's whole answer, on every model route (deploy/envoy_config.py):
# the client's own timeout is the one that should fire. The sidecar's own limits stay below it.
ROUTE_TIMEOUT_S = 600


class ConfigError(ValueError):
    """A config value is missing or wrong; `key` is its dotted path."""

    def __init__(self, key: str, message: str):
        super().__init__(f"config key {key!r}: {message}")
        self.key = key


@dataclass(frozen=True)
class Addr:
    """Where something listens (the `listen` keys): HOST:PORT, or unix:/path."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Addr":
        """HOST:PORT, or unix:/path for a Unix socket (Envoy ↔ server: no TCP stack on the way)."""
        if text.startswith("unix:"):
            if len(text) <= len("unix:"):
                raise ValueError(f"expected unix:/path, got {text!r}")
            return cls(text, 0)
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected HOST:PORT or unix:/path, got {text!r}")
        return cls(host.strip("[]"), int(port))

    @property
    def is_unix(self) -> bool:
        return self.host.startswith("unix:")

    def __str__(self) -> str:
        return self.host if self.is_unix else f"{self.host}:{self.port}"

    @property
    def path(self) -> str:
        return self.host[len("unix:"):]


@dataclass(frozen=True)
class ProviderConfig:
    base_url: str
    # The API the provider speaks: "anthropic" or "openai"; empty means the client's own.
    format: str = ""
    # Draft providers only: the model to ask and where the sidecar's own key lives.
    model: str = ""
    api_key_env: str = ""
    api_key_file: str = ""

    def api(self, client_api: Api) -> Api:
        return Api(self.format) if self.format else client_api

    def api_key(self) -> str | None:
        """The sidecar's key for this provider: the mounted file wins over the environment."""
        if self.api_key_file:
            try:
                key = FsPath(self.api_key_file).read_text().strip()
            except OSError:
                key = ""
            if key:
                return key
        if self.api_key_env:
            return os.environ.get(self.api_key_env) or None
        return None


@dataclass(frozen=True)
class ApiProviders:
    strong: ProviderConfig
    draft: ProviderConfig


@dataclass(frozen=True)
class Providers:
    anthropic: ApiProviders
    openai: ApiProviders

    def for_api(self, api: Api) -> ApiProviders:
        return self.anthropic if api is Api.ANTHROPIC else self.openai


@dataclass(frozen=True)
class CascadeConfig:
    draft_timeout_s: float = 60.0
    verify_timeout_s: float = 120.0
    # When verification fails (error, timeout, unusable verdict): "fallback" sends the original
    # request to the strong model; "serve_draft" answers with the unverified draft.
    on_verify_failure: str = "fallback"
    # Cascades in flight at once; past that, requests pass through to the strong model.
    max_concurrent: int = 32
    # The draft's output budget on every path that asks it: a client limit above it, or none, is
    # replaced by it (defaults/config.yaml says why 8192).
    draft_max_tokens: int = 8192
    # A skipped answer's time limit, from the request: a stream ends there as a length stop; a
    # JSON answer not in by then is answered by the strong model.
    skipped_max_s: float = 300.0
    # A draft caught repeating itself (cascade/repetition.py) is a failed draft.
    detect_repetition: bool = True


@dataclass(frozen=True)
class Listen:
    grpc: str = "127.0.0.1:50051"
    admin: str = "127.0.0.1:9464"
    relay: str = "127.0.0.1:50052"  # skipped requests, from Envoy (extproc/relay.py)


@dataclass(frozen=True)
class Limits:
    # Envoy buffers the whole body for us; agentic contexts reach several MB.
    max_body_bytes: int = 64 * 1024 * 1024
    # Envoy's heap past which it sheds load: below its container's memory limit (1 GiB in k8s/).
    envoy_max_heap_bytes: int = 768 * 1024 * 1024


@dataclass(frozen=True)
class Economics:
    """Assumptions for the expected saving of a cascade (see docs/routing.md)."""

    expected_output_tokens: int = 600  # a typical agentic answer's length
    accept_rate: float = 0.7  # share of drafts the strong model accepts
    verdict_tokens: int = 10  # "ACCEPT <nonce>"
    instruction_tokens: int = 150  # the verify turn around the draft


@dataclass(frozen=True)
class RouterConfig:
    rules: list[dict[str, Any]] = field(default_factory=list)
    # Keyword classes: name → regex searched (case-insensitive) in the last user text.
    keywords: dict[str, str] = field(default_factory=dict)
    economics: Economics = field(default_factory=Economics)
    # Conversations whose prompt-cache state the router keeps (an LRU; about 800 bytes each).
    max_conversations: int = 10000


@dataclass(frozen=True)
class PricingConfig:
    # Ordered {match, input, output, cache_write, cache_read[, cache_write_1h]}, USD per MTok.
    models: list[dict[str, Any]] = field(default_factory=list)
    # Ordered {match, mode: explicit | automatic, ttl_s}: how each provider caches prompts.
    caches: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ShadowConfig:
    # The share of would-be draft turns for which the draft is also asked, in the background,
    # and its answer compared with the strong model's.
    sample_rate: float = 0.0
    max_concurrent: int = 4  # background draft calls at once; more are not sampled
    agreement_threshold: float = 0.6  # text answers agree when this share of words matches


# The action kinds of actions.py (config is a leaf; test_config checks the two agree).
ACTION_KINDS = ("file_edit", "shell", "read_only", "subagent", "text", "other")


@dataclass(frozen=True)
class GuardConfig:
    """What a skip may not serve unchecked (actions.py; the guarded path, replay, shadow mode)."""

    # Action kinds a draft may not take unchecked: file_edit shell read_only subagent text other.
    risky_actions: list[str] = field(default_factory=lambda: ["file_edit", "subagent"])
    # A final answer to the user counts as risky too (adds "text" to risky_actions).
    text_is_risky: bool = False
    # Shell commands matching a destructive pattern are risky even when "shell" is not.
    destructive_shell: bool = True
    # Regexes (case-insensitive, searched in the command); None: actions.DESTRUCTIVE_PATTERNS.
    destructive_patterns: list[str] | None = None
    extra_destructive_patterns: list[str] = field(default_factory=list)  # added to the above
    # A risky draft on the guarded path: "verify" (the strong model checks it: accepted or
    # enhanced) or "direct" (the strong model answers the original request).
    on_risky: str = "verify"


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry traces (metering/tracing.py). What is left empty here, the standard OTEL_*
    environment variables say (OTEL_EXPORTER_OTLP_ENDPOINT, _PROTOCOL, _HEADERS, OTEL_TRACES_SAMPLER,
    OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME, ...)."""

    enabled: bool = False
    endpoint: str = ""  # the collector: http://host:4317 (grpc) or http://host:4318 (http/protobuf)
    protocol: str = ""  # grpc | http/protobuf; "": OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL, else grpc
    sample_ratio: float | None = None  # share of new traces kept; None: OTEL_TRACES_SAMPLER, else all
    resource_attributes: dict[str, str] = field(default_factory=dict)  # over OTEL_RESOURCE_ATTRIBUTES
    # Prompt and answer text on the provider-call spans, redacted of keys: off, it is the user's data.
    capture_content: bool = False


@dataclass(frozen=True)
class Config:
    providers: Providers
    # "active": route for real; "shadow": decide and record, change nothing.
    mode: str = "active"
    # Read usage from every answer (asking OpenAI streams for it, hidden from the client).
    metering: bool = True
    log_level: str = "info"
    reload_interval_s: float = 2.0  # how often the config file is checked for changes
    # On SIGTERM, how long streams in flight (cascades included) may take to finish.
    shutdown_grace_s: float = 190.0
    listen: Listen = field(default_factory=Listen)
    limits: Limits = field(default_factory=Limits)
    cascade: CascadeConfig = field(default_factory=CascadeConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)
    shadow: ShadowConfig = field(default_factory=ShadowConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)


def _merge(base: Any, over: Any) -> Any:
    """Deep-merge mappings; anything else (lists included) is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v)
        return out
    return over


def _build(cls: type, data: Any, key: str) -> Any:
    """Build dataclass `cls` from `data`, checking types and rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(key or "<root>", f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            raise ConfigError(_join(key, str(k)), "unknown key")
    values = {}
    for f in dataclasses.fields(cls):
        sub = _join(key, f.name)
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(sub, "required")
            continue
        values[f.name] = _convert(hints[f.name], data[f.name], sub)
    return cls(**values)


def _convert(tp: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        return _convert(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {type(value).__name__}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {type(value).__name__}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(key, f"expected {tp.__name__}, got {type(value).__name__}")
    return value


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check(cfg: Config) -> None:
    """What the schema alone can tell. The sections that compile (router rules and keywords, the
    price table) are checked by compiling them, where the runtime is built (app.py)."""
    for api in Api:
        pair = cfg.providers.for_api(api)
        for role in ("strong", "draft"):
            url = getattr(pair, role).base_url
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"providers.{api}.{role}.base_url", "must start with http:// or https://")
        if pair.strong.format not in ("", str(api)):
            raise ConfigError(f"providers.{api}.strong.format", f"must be {api}: the strong provider "
                              "gets the client's own request")
        if pair.draft.format not in ("", "anthropic", "openai"):
            raise ConfigError(f"providers.{api}.draft.format", "one of anthropic, openai")
        if not pair.draft.model:
            raise ConfigError(f"providers.{api}.draft.model", "required for a draft provider")
    if cfg.shutdown_grace_s < 0:
        raise ConfigError("shutdown_grace_s", "must be >= 0")
    if cfg.reload_interval_s <= 0:
        raise ConfigError("reload_interval_s", "must be > 0")
    if cfg.mode not in ("active", "shadow"):
        raise ConfigError("mode", "one of active, shadow")
    if not 0 <= cfg.shadow.sample_rate <= 1:
        raise ConfigError("shadow.sample_rate", "a share between 0 and 1")
    if cfg.shadow.max_concurrent < 1:
        raise ConfigError("shadow.max_concurrent", "must be >= 1")
    if not 0 <= cfg.shadow.agreement_threshold <= 1:
        raise ConfigError("shadow.agreement_threshold", "a share between 0 and 1")
    if cfg.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level", "one of debug, info, warning, error")
    for name in ("draft_timeout_s", "verify_timeout_s"):
        if getattr(cfg.cascade, name) <= 0:
            raise ConfigError(f"cascade.{name}", "must be > 0")
    if cfg.cascade.max_concurrent < 1:
        raise ConfigError("cascade.max_concurrent", "must be >= 1")
    if cfg.cascade.draft_max_tokens < 1:
        raise ConfigError("cascade.draft_max_tokens", "must be >= 1")
    if not 0 < cfg.cascade.skipped_max_s < ROUTE_TIMEOUT_S:
        raise ConfigError("cascade.skipped_max_s", f"must be > 0 and below Envoy's route timeout ({ROUTE_TIMEOUT_S} s), "
                          "which would cut the stream")
    if cfg.cascade.on_verify_failure not in ("fallback", "serve_draft"):
        raise ConfigError("cascade.on_verify_failure", "one of fallback, serve_draft")
    if cfg.limits.max_body_bytes < 1024:
        raise ConfigError("limits.max_body_bytes", "must be >= 1024")
    if cfg.limits.envoy_max_heap_bytes < 4 * cfg.limits.max_body_bytes:
        raise ConfigError("limits.envoy_max_heap_bytes", "must hold at least 4 bodies of limits.max_body_bytes")
    tr = cfg.tracing
    if tr.protocol not in ("", "grpc", "http/protobuf"):
        raise ConfigError("tracing.protocol", "one of grpc, http/protobuf")
    if tr.sample_ratio is not None and not 0 <= tr.sample_ratio <= 1:
        raise ConfigError("tracing.sample_ratio", "a share between 0 and 1")
    if tr.endpoint and not tr.endpoint.startswith(("http://", "https://")):
        raise ConfigError("tracing.endpoint", "must start with http:// or https://")
    for k, v in tr.resource_attributes.items():
        if not isinstance(v, (str, int, float, bool)):
            raise ConfigError(f"tracing.resource_attributes.{k}", "a string, number or boolean")
    eco = cfg.router.economics
    if not 0 <= eco.accept_rate <= 1:
        raise ConfigError("router.economics.accept_rate", "a share between 0 and 1")
    for name in ("expected_output_tokens", "verdict_tokens", "instruction_tokens"):
        if getattr(eco, name) < 0:
            raise ConfigError(f"router.economics.{name}", "must be >= 0")
    if cfg.router.max_conversations < 1:
        raise ConfigError("router.max_conversations", "must be >= 1")
    _check_guard(cfg.guard)


def _check_guard(guard: GuardConfig) -> None:
    for i, kind in enumerate(guard.risky_actions):
        if kind not in ACTION_KINDS:
            raise ConfigError(f"guard.risky_actions[{i}]", f"one of {', '.join(ACTION_KINDS)}")
    if guard.on_risky not in ("verify", "direct"):
        raise ConfigError("guard.on_risky", "one of verify, direct")
    for name in ("destructive_patterns", "extra_destructive_patterns"):
        for i, pattern in enumerate(getattr(guard, name) or []):
            try:
                re.compile(str(pattern))
            except re.error as exc:
                raise ConfigError(f"guard.{name}[{i}]", f"bad regex: {exc}") from None


def parse(data: Any) -> Config:
    """Validate user config data (merged over the defaults) into a Config, as far as the schema
    tells: app.parse_config also compiles what compiles."""
    defaults = yaml.safe_load(DEFAULTS_FILE.read_text())
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("<root>", "the config file must hold a mapping")
    cfg = _build(Config, _merge(defaults, data), "")
    _check(cfg)
    return cfg


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the config file at `path` (or the defaults alone)."""
    if path is None:
        return parse({})
    try:
        data = yaml.safe_load(FsPath(path).read_text())
    except yaml.YAMLError as exc:
        raise ConfigError("<file>", f"{path}: not valid YAML: {exc}") from None
    return parse(data)


def replace_providers(cfg: Config, **urls: str) -> Config:
    """A copy of `cfg` with base URLs swapped, e.g. anthropic_draft='http://...'."""
    prov = cfg.providers
    for k, url in urls.items():
        api, role = k.split("_")
        pair = getattr(prov, api)
        pair = dataclasses.replace(pair, **{role: dataclasses.replace(getattr(pair, role), base_url=url)})
        prov = dataclasses.replace(prov, **{api: pair})
    return dataclasses.replace(cfg, providers=prov)
