"""Cheap, pure features of a request that the rules can test.

Token counts are estimates: about 4 characters (or bytes of JSON) per token, what provider
tokenizers average on agentic traffic (code, English, JSON). Good enough for thresholds; the
cost model uses real usage wherever the provider reports it.
Only the last turn and the last assistant turn are inspected, so the cost does not grow with
the conversation, except `context_tokens`, which comes from the body's size, and the
conversation features, which walk back at most MAX_STEPS assistant turns.
The cache features read the conversation's state (routing/state.py): what each provider's
prompt cache holds of it now, from the usage its answers reported.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from cascade_extproc import actions
from cascade_extproc.config import ConfigError, Economics
from cascade_extproc.metering.cache import CacheTable, Conversation, Side, asked_ttl
from cascade_extproc.metering.prices import Price, PriceTable
from cascade_extproc.routing.economics import cascade_saving, skip_saving
from cascade_extproc.types import Api, Block, Request

CHARS_PER_TOKEN = 4
# Text classifiers (code, keywords) look at the head and tail of a long last turn only: what a
# turn is about shows there, and scanning a pasted 200 KB file would cost milliseconds.
SCAN_CHARS = 4096
_CODE = re.compile(r"```|^\s*(def|class|function|import|#include|SELECT)\b", re.MULTILINE)

# Names and types of every feature, so rule conditions can be validated at config load.
FEATURES: dict[str, type] = {
    "api": str,
    "model": str,
    "stream": bool,
    "tools": int,
    "strict_tools": bool,
    "tool_choice": str,
    "messages": int,
    "user_turns": int,
    "last_turn": str,
    "last_turn_tokens": int,
    "context_tokens": int,
    "in_tool_loop": bool,
    "recent_tools": list,
    "thinking": bool,
    "images": int,
    "has_code": bool,
    "keywords": list,
    "max_tokens": int,
    "client": str,
    "priced": bool,
    "cascade_saving": float,
    "skip_saving": float,
    "strong_cache_warm": bool,
    "strong_cache_age_s": float,
    "tokens_since_strong": int,
    "draft_cache_warm": bool,
    # The conversation so far (walked back at most MAX_STEPS assistant turns):
    "prev_action": str,
    "tool_error": bool,
    "edit_streak": int,
    "steps_since_user": int,
    "user_intent": list,
    "plan_mode": bool,
}

# How far back the conversation features walk: in a long tool loop the user's message can be
# hundreds of turns back, and nothing past this many steps changes a rule's mind.
MAX_STEPS = 32
# Claude Code says so in a system-reminder of the user turn while plan mode is on, and again
# when it ends (the latest of the two wins).
_PLAN_ON = re.compile(r"plan mode (?:is )?(?:still )?active", re.IGNORECASE)
_PLAN_OFF = re.compile(r"exited plan mode|plan mode (?:is )?(?:now )?(?:off|inactive|exited)", re.IGNORECASE)
_REMINDER = re.compile(r"<system-reminder>.*?(?:</system-reminder>|$)", re.DOTALL)


@dataclass(frozen=True)
class Context:
    """What features need besides the request: keyword classes and the cost model."""

    keywords: Mapping[str, re.Pattern[str]] = field(default_factory=dict)
    prices: PriceTable | None = None
    draft_models: Mapping[Api, str] = field(default_factory=dict)
    economics: Economics = field(default_factory=Economics)
    caches: CacheTable = field(default_factory=lambda: CacheTable([]))


def compile_keywords(classes: Mapping[str, str], key: str = "router.keywords") -> dict[str, re.Pattern[str]]:
    out = {}
    for name, pattern in classes.items():
        if not isinstance(pattern, str):
            raise ConfigError(f"{key}.{name}", "expected a regex string")
        try:
            out[name] = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(f"{key}.{name}", f"bad regex: {exc}") from None
    return out


def estimate_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


class Features(dict):
    """The features of a request: a dict whose costly entries (`lazy`) are computed on first read."""

    lazy: dict[str, Callable[[], Any]]

    def __missing__(self, key: str) -> Any:
        make = self.__dict__.get("lazy", {}).pop(key, None)
        if make is None:
            raise KeyError(key)
        self[key] = value = make()
        return value

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def resolved(self) -> dict[str, Any]:
        """Every feature, computed (for output)."""
        for key in list(self.__dict__.get("lazy", {})):
            self[key]
        return dict(self)


def extract(req: Request, body_bytes: int, ctx: Context | None = None, conv: Conversation | None = None,
            now: float = 0.0) -> "Features":
    """All features of `req`; `body_bytes` is the size of the raw body, `conv` what the sidecar
    knows of the conversation at `now` (None: nothing, as for its first request)."""
    ctx = ctx or Context()
    conv = conv or Conversation()
    body = req.body
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    anthropic = req.api is Api.ANTHROPIC
    last_turn, text, images = (_anthropic_last_turn if anthropic else _openai_last_turn)(last)
    if anthropic:
        thinking = isinstance(body.get("thinking"), dict) and body["thinking"].get("type") in ("enabled", "adaptive")
        max_tokens = body.get("max_tokens")
    else:
        thinking = "reasoning_effort" in body
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    recent = _recent_tools(messages, anthropic)
    scan = text if len(text) <= 2 * SCAN_CHARS else text[:SCAN_CHARS] + "\n" + text[-SCAN_CHARS:]
    tools = body.get("tools") if isinstance(body.get("tools"), list) else []
    features = Features({
        "api": str(req.api),
        "model": req.model,
        "stream": req.stream,
        "tools": len(tools),
        "strict_tools": any(isinstance(t, dict) and (t.get("strict") or (t.get("function") or {}).get("strict"))
                            for t in tools),
        "tool_choice": _tool_choice(body.get("tool_choice")),
        "messages": len(messages),
        "user_turns": sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "user"),
        "last_turn": last_turn,
        "last_turn_tokens": estimate_tokens(len(text)),
        "context_tokens": estimate_tokens(body_bytes),
        "in_tool_loop": last_turn in ("tool_result", "tool_error") and bool(recent),
        "recent_tools": recent,
        "thinking": thinking,
        "images": images,
        "max_tokens": max_tokens if isinstance(max_tokens, int) else 0,
        "client": _client(req.headers.get("user-agent", "")),
        "priced": None,
        "cascade_saving": None,
        "skip_saving": None,
    })
    # The text classifiers (regexes over up to 2 x SCAN_CHARS of text: the costliest features, about
    # 0.2-0.7 ms each on a few KB) run only when a rule reads them: a request the first rules
    # settle (a cheap model, a forced tool choice) never pays for them.
    features.lazy = {
        "has_code": lambda: bool(_CODE.search(scan)),
        "keywords": lambda: [name for name, rx in ctx.keywords.items() if last_turn == "user_text" and rx.search(scan)],
    }
    context = features["context_tokens"]
    draft_model = ctx.draft_models.get(req.api, "")
    s = conv.strong
    features["strong_cache_warm"] = s.warm(now, req.model)
    features["strong_cache_age_s"] = s.age(now)
    features["tokens_since_strong"] = context - s.context if s.seen_at is not None else context
    features["draft_cache_warm"] = conv.draft.warm(now, draft_model)
    features.update(_conversation(messages, anthropic, last_turn, ctx))
    prices = _prices(req, ctx)
    if prices is not None:
        strong, draft = prices
        features["priced"] = strong is not None and draft is not None
        if strong is not None and draft is not None:  # else rules on the savings do not match
            ask = asked_ttl(req.body, req.raw) if anthropic else None
            sides = (Side(req.model, strong, ctx.caches.lookup(req.model)),
                     Side(draft_model, draft, ctx.caches.lookup(draft_model)))
            features["cascade_saving"] = cascade_saving(conv, *sides, now, context, ask, ctx.economics)
            features["skip_saving"] = skip_saving(conv, *sides, now, context, ask, ctx.economics)
    return features


def _conversation(messages: list[Any], anthropic: bool, last_turn: str, ctx: Context) -> dict[str, Any]:
    """The conversation features: what the previous steps did and what the user last asked.

    - prev_action: the action of the last assistant turn (actions.py: the riskiest of its tool
      calls, `text` when it called none; `none` when there is no assistant turn).
    - tool_error: the last turn answers a tool call with an error.
    - edit_streak: how many assistant turns in a row, back from the last, edited a file.
    - steps_since_user: assistant turns since the last message the user wrote (tool results and
      reminders are not the user writing); MAX_STEPS when it is further back.
    - user_intent: the keyword classes (router.keywords) found in that message.
    - plan_mode: Claude Code's plan mode is on (its system-reminder, in the user turns since
      that message)."""
    prev = next((_action_of(m, anthropic) for m in reversed(messages)
                 if isinstance(m, dict) and m.get("role") == "assistant"), "none")
    streak, steps, intent, plan = 0, 0, [], None
    streak_open = True
    for m in reversed(messages):
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        if role == "assistant":
            if streak_open:  # classified only while the streak lasts: the walk stays cheap
                streak_open = (prev if steps == 0 else _action_of(m, anthropic)) == actions.FILE_EDIT
            streak += streak_open
            steps += 1
            if steps >= MAX_STEPS:
                break
            continue
        if role not in ("user", "tool"):
            continue
        content = m.get("content")
        if role == "tool" or isinstance(content, list) and len(content) == 1 and isinstance(content[0], dict) \
                and content[0].get("type") == "tool_result":
            continue  # a bare tool result, most turns of a loop: neither the user nor a reminder
        if plan is None:
            plan = _plan_mode(content)
        if role == "user" and _user_wrote(content):
            text = _text_of(content) if isinstance(content, list) else str(content)
            text = _REMINDER.sub("", text)
            scan = text if len(text) <= 2 * SCAN_CHARS else text[:SCAN_CHARS] + "\n" + text[-SCAN_CHARS:]
            intent = [name for name, rx in ctx.keywords.items() if rx.search(scan)]
            break
    return {"prev_action": prev, "tool_error": last_turn == "tool_error", "edit_streak": streak,
            "steps_since_user": steps, "user_intent": intent, "plan_mode": bool(plan)}


def _action_of(msg: dict[str, Any], anthropic: bool) -> str:
    if anthropic:
        return actions.classify_json(msg.get("content")).kind
    return actions.classify([Block("tool_use", name=str((c.get("function") or {}).get("name", "")), input=_arguments(c))
                             for c in msg.get("tool_calls") or [] if isinstance(c, dict)]).kind


def _arguments(call: dict[str, Any]) -> dict[str, Any]:
    args = (call.get("function") or {}).get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return {}
    return args if isinstance(args, dict) else {}


def _user_wrote(content: Any) -> bool:
    """A message the user wrote: text that is not only tool results or system reminders."""
    if isinstance(content, str):
        return bool(_REMINDER.sub("", content).strip())
    if not isinstance(content, list):
        return False
    if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
        return False
    return any(isinstance(b, dict) and (b.get("type") == "image" or b.get("type") == "image_url" or
                                        isinstance(b.get("text"), str) and _REMINDER.sub("", b["text"]).strip())
               for b in content)


def _plan_mode(content: Any) -> bool | None:
    """True or False when a user turn's reminders say plan mode is on or ended; None: silent."""
    texts = [content] if isinstance(content, str) else [
        b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)] \
        if isinstance(content, list) else []
    verdict = None
    for text in texts:
        if "plan mode" not in text.lower():
            continue
        for reminder in _REMINDER.findall(text):
            if _PLAN_OFF.search(reminder):
                verdict = False
            elif _PLAN_ON.search(reminder):
                verdict = True
    return verdict


def _prices(req: Request, ctx: Context) -> tuple[Price | None, Price | None] | None:
    """(strong, draft) prices of this request's models, either None where unknown; None when
    there is no price table to ask (then `priced` is unset, and matches nothing)."""
    if ctx.prices is None or req.api not in ctx.draft_models:
        return None
    return ctx.prices.lookup(req.model), ctx.prices.lookup(ctx.draft_models[req.api])


def _client(user_agent: str) -> str:
    """The product part of a user-agent: claude-cli, anthropic, openai, ..."""
    return user_agent.split("/", 1)[0].strip().lower() if user_agent else ""


def _tool_choice(choice: Any) -> str:
    """Anthropic {type: auto|any|tool|none}; OpenAI "auto"|"none"|"required"|{type: function}."""
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict):
        return str(choice.get("type", "unknown"))
    return "unknown"


def _recent_tools(messages: list[Any], anthropic: bool) -> list[str]:
    """Tools the last assistant turn called."""
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "assistant":
            if anthropic:
                content = m.get("content")
                blocks = content if isinstance(content, list) else []
                return [str(b.get("name")) for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"]
            return [str((c.get("function") or {}).get("name")) for c in m.get("tool_calls") or [] if isinstance(c, dict)]
    return []


def _anthropic_last_turn(msg: dict[str, Any]) -> tuple[str, str, int]:
    role, content = msg.get("role"), msg.get("content")
    if role == "assistant":
        return "assistant", _text_of(content), 0
    if role != "user":
        return "other", "", 0
    if isinstance(content, str):
        return "user_text", content, 0
    if not isinstance(content, list):
        return "other", "", 0
    images = sum(1 for b in content if isinstance(b, dict) and b.get("type") == "image")
    results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
    if results:
        kind = "tool_error" if any(b.get("is_error") for b in results) else "tool_result"
        return kind, "".join(_text_of(b.get("content")) for b in results), images
    text = _text_of(content)
    return ("user_text", text, images) if text or images else ("other", "", 0)


def _openai_last_turn(msg: dict[str, Any]) -> tuple[str, str, int]:
    role, content = msg.get("role"), msg.get("content")
    text = _text_of(content)
    images = sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url") \
        if isinstance(content, list) else 0
    if role == "tool":
        return "tool_result", text, 0
    if role == "user":
        return "user_text", text, images
    if role == "assistant":
        return "assistant", text, 0
    return "other", text, 0


def _text_of(content: Any) -> str:
    """The text in a string or a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            b.get("text", "") for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
    return ""
