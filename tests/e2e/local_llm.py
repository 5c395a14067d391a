"""Real local models for the e2e tests: two llama-servers (draft, strong) from
scripts/local_models.py, and a stack whose providers are those servers on both APIs.

The binary and the weights come from the cache that `python scripts/local_models.py build` fills
(`.ci/run` runs it). Tests call `require_local_models()`: it skips when they are missing, except
under CI=true, where it fails (CI must run these tests), as browser.py does for Chromium.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from cascade_extproc import config as config_mod

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("local_models", ROOT / "scripts" / "local_models.py")
local_models = importlib.util.module_from_spec(_spec)
sys.modules["local_models"] = local_models
_spec.loader.exec_module(local_models)

STRONG_MODEL = {"anthropic": "claude-sonnet-5", "openai": "gpt-5.4"}  # what the clients ask for
DRAFT_MODEL = "local-draft"
# The local draft priced like DeepSeek's chat model, so costs and savings show; the strong model
# keeps the price of the model the client asked for. What the tiny model costs is not the point.
LOCAL_PRICE = local_models.LOCAL_PRICE


def require_local_models() -> None:
    gone = local_models.missing()
    if gone:
        reason = "local models missing: " + "; ".join(gone) + " (python scripts/local_models.py build)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI must run the local-model tests (.ci/run builds them)")
        pytest.skip(reason)


def stack_config() -> dict:
    """The stack's config for local models: generous timeouts (a 2-core machine, shared), the
    local draft priced."""
    return {"cascade": {"draft_timeout_s": 120, "verify_timeout_s": 180},
            "pricing": {"models": [LOCAL_PRICE, *config_mod.load(None).pricing.models]}}


def upstreams(servers: dict) -> dict[str, str]:
    return {f"{role}_{api}": getattr(servers[role], f"{api}_url") for role in ("draft", "strong")
            for api in ("anthropic", "openai")}
