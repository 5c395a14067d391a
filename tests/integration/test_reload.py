"""Hot reload through the kubelet's ConfigMap update: a new timestamped directory, then an
atomic rename of the `..data` symlink. A bad config keeps the last good one."""
import asyncio
import os
from pathlib import Path

import grpc
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cascade_extproc import config
from cascade_extproc._proto import external_processor_pb2_grpc as ep_grpc
from cascade_extproc.app import App
from prometheus_client import generate_latest
from envoy_messages import request_msg

BASE = {"listen": {"grpc": "127.0.0.1:0", "admin": "127.0.0.1:0", "relay": "127.0.0.1:0"}, "reload_interval_s": 0.05}
SKIP_ALL = [{"name": "everything-to-draft", "route": "skipped"}]
DIRECT_ALL = [{"name": "everything-direct", "route": "direct"}]


def kubelet_write(mount: Path, generation: int, data: dict) -> None:
    """What the kubelet does: write ..<ts>/, point ..data_tmp at it, rename over ..data."""
    target = mount / f"..2026_11_28_00_00_0{generation}.000000000"
    target.mkdir()
    (target / "config.yaml").write_text(yaml.safe_dump(data))
    tmp = mount / "..data_tmp"
    tmp.symlink_to(target.name)
    os.rename(tmp, mount / "..data")  # atomic
    if not (mount / "config.yaml").is_symlink():
        (mount / "config.yaml").symlink_to("..data/config.yaml")


async def decide(app: App) -> str:
    body = {"model": "claude-sonnet-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        call = ep_grpc.ExternalProcessorStub(ch).Process()
        await call.write(request_msg("/v1/messages", body, **{"x-api-key": "client-key"}))
        resp = await call.read()
        await call.done_writing()
    return resp.dynamic_metadata.fields["cascade"].struct_value.fields["path"].string_value


def reloads(app: App, result: str) -> float:
    for fam in text_string_to_metric_families(generate_latest(app.metrics.registry).decode()):
        for s in fam.samples:
            if s.name == "cascade_config_reloads_total" and s.labels["result"] == result:
                return s.value
    return 0.0


async def wait_for(predicate, timeout_s=5.0):
    for _ in range(int(timeout_s / 0.02)):
        if await predicate():
            return True
        await asyncio.sleep(0.02)
    return False


def test_configmap_swap_reloads_and_bad_config_keeps_the_last_good(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_DRAFT_API_KEY", "k-draft-for-reload-test")
    mount = tmp_path / "config"
    mount.mkdir()
    kubelet_write(mount, 1, {**BASE, "router": {"rules": SKIP_ALL}})
    path = mount / "config.yaml"

    async def scenario():
        app = App(config.load(path), config_path=str(path))
        await app.start()
        try:
            assert await decide(app) == "skipped"
            conversations = app.runtime().router.conversations
            assert conversations is app.conversations and len(conversations) == 1
            kubelet_write(mount, 2, {**BASE, "router": {"rules": DIRECT_ALL}})
            assert await wait_for(lambda: _is(app, "direct")), "the new rules were not applied"
            # The conversation state outlives the rebuilt runtime (the caches it knows stay known).
            assert app.runtime().router.conversations is conversations and len(conversations) == 1
            assert reloads(app, "ok") == 1
            # A bad config (an unknown feature) is rejected; the last good one stays.
            kubelet_write(mount, 3, {**BASE, "router": {"rules": [{"name": "x", "route": "skipped",
                                                                    "when": {"nope": 1}}]}})
            assert await wait_for(lambda: _count(app, "error", 1)), "the bad config was not noticed"
            assert await decide(app) == "direct"
            # And a good one after it is applied again.
            kubelet_write(mount, 4, {**BASE, "router": {"rules": SKIP_ALL}})
            assert await wait_for(lambda: _is(app, "skipped"))
            assert reloads(app, "ok") == 2 and reloads(app, "error") == 1
        finally:
            await app.stop(0)

    asyncio.run(scenario())


def test_a_change_envoy_cannot_take_is_refused(tmp_path, monkeypatch):
    """The strong provider's base URL is in Envoy's bootstrap: applied by the server alone, direct
    requests would go to the old provider while verify calls go to the new one. Refused, counted,
    and the rest of that file (the new rules) is not applied either: the running config stays
    whole."""
    monkeypatch.setenv("CASCADE_DRAFT_API_KEY", "k-draft-for-reload-test")
    mount = tmp_path / "config"
    mount.mkdir()
    kubelet_write(mount, 1, {**BASE, "router": {"rules": SKIP_ALL}})
    path = mount / "config.yaml"
    moved = {"providers": {"anthropic": {"strong": {"base_url": "https://elsewhere.example"}}}}

    async def scenario():
        app = App(config.load(path), config_path=str(path))
        await app.start()
        try:
            kubelet_write(mount, 2, {**BASE, **moved, "router": {"rules": DIRECT_ALL}})
            assert await wait_for(lambda: _count(app, "needs_restart", 1)), "the change was not refused"
            assert await decide(app) == "skipped" and reloads(app, "ok") == 0
            assert app.cfg.providers.anthropic.strong.base_url == "https://api.anthropic.com"
        finally:
            await app.stop(0)

    asyncio.run(scenario())


async def _is(app, path):
    return await decide(app) == path


async def _count(app, result, n):
    return reloads(app, result) == n
