"""Config: defaults, merging a user file over them, and errors that name the bad key."""
from __future__ import annotations

import pytest
import yaml

from cascade_extproc import app, config
from cascade_extproc.config import ConfigError, ProviderConfig
from cascade_extproc.types import Api


def write(tmp_path, data) -> str:
    p = tmp_path / "config.yaml"
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(p)


def key_of(data, parse=config.parse) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert info.value.key in str(info.value)  # the message names the key too
    return info.value.key


# --- defaults and merging ------------------------------------------------------------------

def test_defaults_load():
    cfg = config.load()
    assert cfg.log_level == "info"
    assert cfg.listen.grpc == "127.0.0.1:50051"
    assert cfg.limits.max_body_bytes == 64 * 1024 * 1024
    assert cfg.cascade.draft_timeout_s == 60.0 and isinstance(cfg.cascade.draft_timeout_s, float)
    assert (cfg.cascade.draft_max_tokens, cfg.cascade.skipped_max_s, cfg.cascade.detect_repetition) == (8192, 300, True)
    assert cfg.providers.for_api(Api.ANTHROPIC).strong.base_url == "https://api.anthropic.com"
    assert cfg.providers.for_api(Api.OPENAI).draft.model == "deepseek-chat"
    assert [r["name"] for r in cfg.router.rules][-1] == "complex-turn"
    assert config.parse(None) == cfg  # an empty file is the defaults


def test_user_file_merges_mappings_and_replaces_lists(tmp_path):
    path = write(tmp_path, {
        "cascade": {"draft_timeout_s": 5},
        "providers": {"anthropic": {"draft": {"model": "my-draft"}}},
        "router": {"rules": [{"name": "all", "route": "cascade"}]},
    })
    cfg = config.load(path)
    # Mappings merge: the sibling keys keep their defaults.
    assert cfg.cascade.draft_timeout_s == 5.0
    assert cfg.cascade.verify_timeout_s == 120.0
    assert cfg.providers.anthropic.draft.model == "my-draft"
    assert cfg.providers.anthropic.draft.base_url == "https://api.deepseek.com/anthropic"
    assert cfg.providers.anthropic.draft.api_key_env == "CASCADE_DRAFT_API_KEY"
    assert cfg.providers.openai.draft.model == "deepseek-chat"
    # Lists replace: the default rules are gone.
    assert cfg.router.rules == [{"name": "all", "route": "cascade"}]


# --- errors name the key -------------------------------------------------------------------

@pytest.mark.parametrize("data, key", [
    ({"nope": 1}, "nope"),
    ({"cascade": {"draft_timeout": 5}}, "cascade.draft_timeout"),
    ({"providers": {"openai": {"draft": {"modle": "x"}}}}, "providers.openai.draft.modle"),
    ({"cascade": {"draft_timeout_s": "soon"}}, "cascade.draft_timeout_s"),
    ({"cascade": {"verify_timeout_s": True}}, "cascade.verify_timeout_s"),
    ({"limits": {"max_body_bytes": 1.5}}, "limits.max_body_bytes"),
    ({"listen": {"grpc": 50051}}, "listen.grpc"),
    ({"listen": "127.0.0.1:1"}, "listen"),
    ({"router": {"rules": {"name": "x"}}}, "router.rules"),
    ({"providers": {"anthropic": {"strong": {"base_url": "ftp://x"}}}}, "providers.anthropic.strong.base_url"),
    ({"providers": {"openai": {"draft": {"base_url": "api.deepseek.com"}}}}, "providers.openai.draft.base_url"),
    ({"providers": {"openai": {"draft": {"model": ""}}}}, "providers.openai.draft.model"),
    ({"log_level": "verbose"}, "log_level"),
    ({"cascade": {"draft_timeout_s": 0}}, "cascade.draft_timeout_s"),
    ({"cascade": {"verify_timeout_s": -1}}, "cascade.verify_timeout_s"),
    ({"cascade": {"draft_max_tokens": 0}}, "cascade.draft_max_tokens"),
    ({"cascade": {"draft_max_tokens": 8192.5}}, "cascade.draft_max_tokens"),
    ({"cascade": {"skipped_max_s": 0}}, "cascade.skipped_max_s"),
    ({"cascade": {"skipped_max_s": 600}}, "cascade.skipped_max_s"),
    ({"cascade": {"detect_repetition": "yes"}}, "cascade.detect_repetition"),
    ({"limits": {"max_body_bytes": 10}}, "limits.max_body_bytes"),
    ([1, 2], "<root>"),
])
def test_bad_value_names_key(data, key):
    assert key_of(data) == key


def test_log_level_is_case_insensitive():
    assert config.parse({"log_level": "DEBUG"}).log_level == "DEBUG"


def rules(*items):
    return {"router": {"rules": list(items)}}


@pytest.mark.parametrize("data, key", [
    (rules({"name": "a", "route": "cascade", "when": {"nope": 1}}), "router.rules[0].when.nope"),
    (rules({"name": "a", "route": "cascade", "when": {"tools": {"about": 1}}}), "router.rules[0].when.tools.about"),
    (rules({"name": "a", "route": "cascade", "when": {"model": {"matches": "(unclosed"}}}),
     "router.rules[0].when.model.matches"),
    (rules({"name": "a", "route": "cascade", "when": {"model": {"in": "haiku"}}}), "router.rules[0].when.model.in"),
    (rules({"name": "a", "route": "somewhere"}), "router.rules[0].route"),
    (rules({"name": "a"}), "router.rules[0].route"),
    (rules({"route": "direct"}), "router.rules[0].name"),
    (rules({"name": "a", "route": "direct", "priority": 1}), "router.rules[0].priority"),
    (rules({"name": "a", "route": "direct", "when": ["model"]}), "router.rules[0].when"),
    (rules("direct"), "router.rules[0]"),
    (rules({"name": "a", "route": "direct"}, {"name": "b", "route": "skipped"}, {"name": "a", "route": "cascade"}),
     "router.rules[2].name"),
])
def test_bad_rule_names_key(data, key):
    """Rules are compiled where the runtime is built: a config is valid when one can be."""
    assert key_of(data, app.parse_config) == key


def test_config_is_a_leaf_that_compiles_nothing():
    """config.parse knows the schema; the rule compiler and the price table are not its to run."""
    data = rules({"name": "a", "route": "cascade", "when": {"nope": 1}})
    assert config.parse(data).router.rules[0]["when"] == {"nope": 1}
    assert key_of(data, app.parse_config) == "router.rules[0].when.nope"


def test_invalid_yaml(tmp_path):
    path = write(tmp_path, "cascade: {draft_timeout_s: [1,\n")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == "<file>"
    assert "not valid YAML" in str(info.value)


def test_bad_key_from_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, "cascade:\n  draft_timeout_s: soon\n"))
    assert info.value.key == "cascade.draft_timeout_s"


# --- the draft API key ---------------------------------------------------------------------

def test_api_key_file_wins_over_env(tmp_path, monkeypatch):
    key_file = tmp_path / "key"
    key_file.write_text("  from-file\n\n")
    monkeypatch.setenv("TEST_CASCADE_KEY", "from-env")
    p = ProviderConfig(base_url="https://x", api_key_env="TEST_CASCADE_KEY", api_key_file=str(key_file))
    assert p.api_key() == "from-file"


def test_api_key_missing_or_empty_file_falls_back_to_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_CASCADE_KEY", "from-env")
    missing = ProviderConfig(base_url="https://x", api_key_env="TEST_CASCADE_KEY",
                             api_key_file=str(tmp_path / "absent"))
    assert missing.api_key() == "from-env"
    blank = tmp_path / "blank"
    blank.write_text(" \n")
    empty = ProviderConfig(base_url="https://x", api_key_env="TEST_CASCADE_KEY", api_key_file=str(blank))
    assert empty.api_key() == "from-env"


def test_api_key_env_only(monkeypatch):
    monkeypatch.setenv("TEST_CASCADE_KEY", "from-env")
    assert ProviderConfig(base_url="https://x", api_key_env="TEST_CASCADE_KEY").api_key() == "from-env"


def test_api_key_nothing_is_none(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_CASCADE_KEY", raising=False)
    assert ProviderConfig(base_url="https://x").api_key() is None
    assert ProviderConfig(base_url="https://x", api_key_env="TEST_CASCADE_KEY",
                          api_key_file=str(tmp_path / "absent")).api_key() is None
    monkeypatch.setenv("TEST_CASCADE_KEY", "")
    assert ProviderConfig(base_url="https://x", api_key_env="TEST_CASCADE_KEY").api_key() is None


def test_api_key_from_loaded_config(tmp_path, monkeypatch):
    key_file = tmp_path / "draft-key"
    key_file.write_text("sk-file\n")
    monkeypatch.setenv("CASCADE_DRAFT_API_KEY", "sk-env")
    cfg = config.parse({"providers": {"anthropic": {"draft": {"api_key_file": str(key_file)}}}})
    assert cfg.providers.anthropic.draft.api_key() == "sk-file"
    assert cfg.providers.openai.draft.api_key() == "sk-env"
