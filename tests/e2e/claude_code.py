"""Requests shaped like Claude Code's: beta headers, system blocks with cache_control,
metadata, thinking, 20+ tools, `?beta=true`, a cache breakpoint on the last user block."""
from __future__ import annotations

import copy

BETA = "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
HEADERS = {"anthropic-beta": BETA, "anthropic-version": "2023-06-01", "x-app": "cli",
           "user-agent": "claude-cli/2.0.0 (external, cli)"}
SYSTEM = [
    {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
     "cache_control": {"type": "ephemeral"}},
    {"type": "text", "text": "You are an interactive CLI tool that helps users with software "
     "engineering tasks. Use the instructions below and the tools available to you. " * 20,
     "cache_control": {"type": "ephemeral"}},
]
_TOOL_NAMES = ["Task", "Bash", "Glob", "Grep", "LS", "ExitPlanMode", "Read", "Edit", "MultiEdit",
               "Write", "NotebookEdit", "WebFetch", "TodoWrite", "WebSearch", "BashOutput",
               "KillShell", "SlashCommand", "NotebookRead", "AskUser", "ListMcpResources",
               "ReadMcpResource", "Skill"]
TOOLS = [{"name": n, "description": f"{n}: a Claude Code tool. " * 5,
          "input_schema": {"type": "object", "$schema": "http://json-schema.org/draft-07/schema#",
                           "additionalProperties": False,
                           "properties": {"path": {"type": "string", "description": "Absolute path"},
                                          "limit": {"type": "integer"}},
                           "required": ["path"]}}
         for n in _TOOL_NAMES]


def request(messages: list[dict], *, thinking: bool = True, **overrides) -> dict:
    """Keyword arguments for `client.messages.create` / `.stream`."""
    msgs = copy.deepcopy(messages)
    last = msgs[-1]
    if last["role"] == "user":  # Claude Code puts a cache breakpoint on the newest user block
        if isinstance(last["content"], str):
            last["content"] = [{"type": "text", "text": last["content"]}]
        last["content"][-1]["cache_control"] = {"type": "ephemeral"}
    kw = {"model": "claude-sonnet-5", "max_tokens": 32000, "system": SYSTEM, "tools": TOOLS,
          "messages": msgs, "metadata": {"user_id": "user_0123abcd_account__session_4567"},
          "extra_body": {"temperature": 1}, "extra_headers": HEADERS, "extra_query": {"beta": "true"},
          "timeout": 120}  # the SDK insists on one for a large max_tokens without streaming
    if thinking:
        kw["thinking"] = {"type": "enabled", "budget_tokens": 31999}
    kw.update(overrides)
    return kw


def as_history(message) -> dict:
    """An SDK response message as the assistant turn Claude Code sends back next time."""
    return {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]}
