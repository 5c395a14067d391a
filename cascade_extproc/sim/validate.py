"""Request validation for the simulated providers (a SIMULATION: no model runs here).

The subset of the real APIs' checks that a sidecar rewriting requests can get wrong, with the
real APIs' wording: field shapes, extended-thinking rules, thinking signatures, and tool
call/result pairing. A failed check raises BadRequest, which the sim answers with a 400.

Signatures: a thinking block's signature is only valid at the provider that issued it. The sim
signs as `sim-sig-<name>-<16 hex of sha256(name + thinking text)>` and redacted thinking data
starts with `sim-redacted-<name>-`, where <name> is the SimProvider's name ("sim" if empty).

Imports nothing from the rest of cascade_extproc, like the whole sim package: it is written
against the public wire formats, so it independently checks our codecs.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any


class BadRequest(Exception):
    pass


def need(ok: Any, message: str) -> None:
    if not ok:
        raise BadRequest(message)


def thinking_signature(name: str, thinking: str) -> str:
    """The signature provider `name` gives a thinking block with this text."""
    name = name or "sim"
    return f"sim-sig-{name}-{hashlib.sha256((name + thinking).encode()).hexdigest()[:16]}"


def redacted_prefix(name: str) -> str:
    """How the data of a redacted_thinking block issued by provider `name` starts."""
    return f"sim-redacted-{name or 'sim'}-"


def thinking_enabled(body: dict) -> bool:
    """Whether a (validated) Anthropic request asks for extended thinking."""
    return isinstance(body.get("thinking"), dict) and body["thinking"].get("type") in ("enabled", "adaptive")


_TOOL_ID_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
_THINKING = ("thinking", "redacted_thinking")
_THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
_REASONING_EFFORTS = (None, "none", "minimal", "low", "medium", "high", "xhigh")


def _is_list_of(value: Any, ok: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) and ok(v) for v in value)


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def check_unique_keys(pairs: list[tuple[str, Any]]) -> None:
    """The top-level members of a request body, as parsed: each key at most once."""
    seen: set[str] = set()
    for key, _ in pairs:
        need(key not in seen, f"Invalid JSON: duplicate key '{key}' in the request body")
        seen.add(key)


# ---- Anthropic Messages ----

def _check_anthropic_block(b: dict, where: str, name: str) -> None:
    kind = b.get("type")
    need(isinstance(kind, str), f"{where}.type: Field required")
    need(kind != "text" or isinstance(b.get("text"), str), f"{where}.text: Field required")
    if kind == "tool_use":
        need(isinstance(b.get("input"), dict) and b.get("id") and b.get("name"),
             f"{where}: tool_use needs id, name and input")
        need(isinstance(b["id"], str) and _TOOL_ID_RE.match(b["id"]),
             f"{where}.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
    need(kind != "tool_result" or isinstance(b.get("tool_use_id"), str), f"{where}.tool_use_id: Field required")
    if kind == "thinking":
        need(isinstance(b.get("thinking"), str), f"{where}.thinking: Field required")
        sig = b.get("signature")
        need(isinstance(sig, str) and sig, f"{where}.signature: Field required")
        # The real API rejects signatures it did not issue, and any change to the signed text.
        need(sig == thinking_signature(name, b["thinking"]), f"{where}: Invalid `signature` in `thinking` block")
    if kind == "redacted_thinking":
        data = b.get("data")
        need(isinstance(data, str) and data, f"{where}.data: Field required")
        need(data.startswith(redacted_prefix(name)), f"{where}: Invalid `data` in `redacted_thinking` block")


def _check_thinking(body: dict, generating: bool) -> None:
    thinking = body.get("thinking")
    if thinking is None:
        return
    need(isinstance(thinking, dict) and thinking.get("type") in ("enabled", "disabled", "adaptive"),
         "thinking: Input tag does not match any of the expected tags: 'enabled', 'disabled', 'adaptive'")
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        need(type(budget) is int, "thinking.enabled.budget_tokens: Field required")
        need(budget >= 1024, "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
        need(not generating or body["max_tokens"] > budget,
             "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation "
             f"at {_THINKING_DOCS}#max-tokens-and-context-window-size")
    if not thinking_enabled(body):
        return
    need((body.get("tool_choice") or {}).get("type") not in ("any", "tool"),
         "Thinking may not be enabled when `tool_choice` forces tool use.")
    need(body.get("temperature") in (None, 1), "`temperature` may only be set to 1 when thinking is enabled. "
         f"Please consult our documentation at {_THINKING_DOCS}#feature-compatibility")


def _anthropic_turns(msgs: list[dict]) -> list[tuple[str, int, list[tuple[str, dict]]]]:
    """Consecutive same-role messages merged, as the API does: (role, first index, [(where, block)])."""
    turns: list[tuple[str, int, list[tuple[str, dict]]]] = []
    for i, m in enumerate(msgs):
        blocks = [(f"messages.{i}.content.{j}", b) for j, b in enumerate(m["content"])] \
            if isinstance(m["content"], list) else []
        if turns and turns[-1][0] == m["role"]:
            turns[-1][2].extend(blocks)
        else:
            turns.append((m["role"], i, blocks))
    return turns


def _check_anthropic_tools(msgs: list[dict], thinking: bool) -> None:
    turns = _anthropic_turns(msgs)
    seen: set[str] = set()
    for k, (role, first, blocks) in enumerate(turns):
        if role == "assistant":
            ids = [b["id"] for _, b in blocks if b["type"] == "tool_use"]
            need(len(set(ids)) == len(ids) and not seen & set(ids), "`tool_use` ids must be unique")
            seen.update(ids)
            if ids and k + 1 < len(turns):
                answered = {b["tool_use_id"] for _, b in turns[k + 1][2] if b["type"] == "tool_result"}
                missing = [x for x in ids if x not in answered]
                need(not missing, f"messages.{turns[k + 1][1]}: `tool_use` ids were found without `tool_result` "
                     f"blocks immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                     "corresponding `tool_result` block in the next message.")
            continue
        offered = {b["id"] for _, b in turns[k - 1][2] if b["type"] == "tool_use"} if k else set()
        for where, b in blocks:
            need(b["type"] != "tool_result" or b["tool_use_id"] in offered,
                 f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: {b.get('tool_use_id')}. "
                 "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.")
    final = next((t for t in reversed(turns) if t[0] == "assistant"), None)
    if thinking and final and any(b["type"] == "tool_use" for _, b in final[2]):
        where, first_block = final[2][0]
        need(first_block["type"] in _THINKING,
             f"{where}.type: Expected `thinking` or `redacted_thinking`, but found `{first_block['type']}`. "
             "When `thinking` is enabled, a final `assistant` message must start with a thinking block "
             "(preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include "
             "thinking blocks from previous turns. To avoid this requirement, disable `thinking`. Please "
             f"consult our documentation at {_THINKING_DOCS}")


def check_anthropic(body: dict, *, generating: bool, name: str) -> None:
    """Validate a Messages (generating) or count_tokens request sent to provider `name`."""
    need(isinstance(body.get("model"), str) and body["model"], "model: Field required")
    max_tokens = body.get("max_tokens")
    need(not generating or (type(max_tokens) is int and max_tokens >= 1), "max_tokens: Field required")
    msgs = body.get("messages")
    need(isinstance(msgs, list) and msgs, "messages: at least one message is required")
    for i, m in enumerate(msgs):
        need(isinstance(m, dict) and m.get("role") in ("user", "assistant"),
             f"messages.{i}.role: Input should be 'user' or 'assistant'")
        need(isinstance(m.get("content"), str) or _is_list_of(m.get("content"), lambda b: True),
             f"messages.{i}.content: Input should be a valid string or list of blocks")
        for j, block in enumerate(m["content"] if isinstance(m["content"], list) else []):
            _check_anthropic_block(block, f"messages.{i}.content.{j}", name)
    need(body.get("stream") is None or isinstance(body["stream"], bool), "stream: Input should be a valid boolean")
    need(body.get("system") is None or isinstance(body["system"], (str, list)), "system: invalid")
    stop = body.get("stop_sequences")
    need(stop is None or (isinstance(stop, list) and all(isinstance(x, str) for x in stop)),
         "stop_sequences: Input should be a valid list")
    for key in ("temperature", "top_p"):
        need(_number(body.get(key)), f"{key}: Input should be a valid number")
    tools = body.get("tools") or []
    need(_is_list_of(tools, lambda t: isinstance(t.get("name"), str)), "tools: each tool needs a name")
    tc = body.get("tool_choice")
    need(tc is None or (isinstance(tc, dict) and tc.get("type") in ("auto", "any", "none")) or (
        isinstance(tc, dict) and tc.get("type") == "tool" and tc.get("name") in {t["name"] for t in tools}),
        "tool_choice: invalid, or names a tool not in tools")
    _check_thinking(body, generating)
    _check_anthropic_tools(msgs, thinking_enabled(body))


# ---- OpenAI Chat Completions ----

def _check_openai_tools(msgs: list[dict]) -> None:
    answerable: set[str] | None = None  # ids the tool messages from here on may answer
    pending: list[str] = []             # ids of the last tool calls not answered yet

    def all_answered() -> None:
        need(not pending, "An assistant message with 'tool_calls' must be followed by tool messages responding "
             "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
             + ", ".join(pending))

    for i, m in enumerate(msgs):
        if m["role"] == "tool":
            need(answerable is not None, "Invalid parameter: messages with role 'tool' must be a response to a "
                 "preceeding message with 'tool_calls'.")
            need(m["tool_call_id"] in answerable, f"Invalid parameter: 'tool_call_id' of '{m['tool_call_id']}' "
                 "not found in 'tool_calls' of previous message.")
            pending = [x for x in pending if x != m["tool_call_id"]]
            continue
        all_answered()
        calls = (m.get("tool_calls") or []) if m["role"] == "assistant" else []
        answerable = {c["id"] for c in calls} if calls else None
        pending = [c["id"] for c in calls]
    all_answered()


def check_openai(body: dict) -> None:
    """Validate a Chat Completions request."""
    need(isinstance(body.get("model"), str) and body["model"], "you must provide a model parameter")
    msgs = body.get("messages")
    need(isinstance(msgs, list) and msgs, "'messages' must contain at least one message")
    for i, m in enumerate(msgs):
        need(isinstance(m, dict) and m.get("role") in ("system", "developer", "user", "assistant", "tool"),
             f"Invalid value for 'messages[{i}].role'")
        need(m.get("content") is None or isinstance(m["content"], (str, list)),
             f"Invalid type for 'messages[{i}].content'")
        need(m["role"] != "tool" or isinstance(m.get("tool_call_id"), str),
             f"Missing required parameter: 'messages[{i}].tool_call_id'")
        need(_is_list_of(m.get("tool_calls") or [], lambda c: isinstance(c.get("id"), str) and isinstance(
            c.get("function"), dict) and isinstance(c["function"].get("arguments"), str)),
            f"Invalid 'messages[{i}].tool_calls'")
    for key in ("max_tokens", "max_completion_tokens", "n"):
        need(body.get(key) is None or (type(body[key]) is int and body[key] >= 1), f"Invalid '{key}'")
    need(body.get("stream") is None or isinstance(body["stream"], bool),
         "Invalid type for 'stream': expected a boolean")
    need(body.get("stream_options") is None or body.get("stream") is True,
         "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
    stop = body.get("stop")
    need(stop is None or isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(x, str) for x in stop)),
         "Invalid type for 'stop'")
    for key in ("temperature", "top_p"):
        need(_number(body.get(key)), f"Invalid type for '{key}': expected a number")
    need(body.get("reasoning_effort") in _REASONING_EFFORTS, "Invalid value for 'reasoning_effort'")
    tools = body.get("tools") or []
    need(_is_list_of(tools, lambda t: isinstance(t.get("function"), dict) and isinstance(
        t["function"].get("name"), str)), "Invalid 'tools'")
    tc = body.get("tool_choice")
    need(tc in (None, "none", "auto", "required") or (isinstance(tc, dict) and isinstance(
        tc.get("function"), dict) and tc["function"].get("name") in {t["function"]["name"] for t in tools}),
        "Invalid 'tool_choice'")
    _check_openai_tools(msgs)
