"""Pass-through HTTPS cannot run Envoy out of memory: slow readers of large downloads hold at most
Envoy's ordinary 1 MiB per connection, not the 64 MiB the model routes may buffer.

With the model calls' limit on the whole transparent listener, 8 slow readers took Envoy from
65 MB to 605 MB; about 15 would reach a 1 GiB limit, and while Envoy restarts every HTTPS
connection of the app is refused.
"""
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from cascade_extproc import config as config_mod
from cascade_extproc.config import Addr
from cascade_extproc.deploy import certs, envoy_config
from cascade_extproc.deploy.envoy_config import TransparentConfig
from transparent_net import ENVOY_UID, TRANSPARENT_PORT, NetNs, as_uid, python, real_envoy_binary, require_netns, workdir

HERE = Path(__file__).resolve().parent
DOWNLOADS = "198.18.0.11"
READERS, SECONDS = 8, 6.0
MIB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_slow_readers_of_pass_through_downloads_stay_bounded():
    require_netns()
    work = workdir()
    ns = None
    envoy_log = work / "envoy.log"
    try:
        ns = NetNs([DOWNLOADS], {"downloads.example": DOWNLOADS})
        pod = certs.generate(work / "pod-certs", ["api.anthropic.com"])
        os.chown(pod.leaf_key, ENVOY_UID, ENVOY_UID)
        key = work / "draft-key"
        key.write_text("draft-secret-key-0123\n")
        os.chown(key, ENVOY_UID, ENVOY_UID)
        draft = {"base_url": "http://127.0.0.1:18081", "model": "sim-draft-claude", "api_key_file": str(key)}
        (work / "config.yaml").write_text(yaml.safe_dump({"providers": {
            "anthropic": {"strong": {"base_url": "https://api.anthropic.com"}, "draft": draft},
            "openai": {"strong": {"base_url": "http://127.0.0.1:18082/v1"},
                       "draft": {**draft, "base_url": "http://127.0.0.1:18082/v1"}}}}))
        cfg = config_mod.load(work / "config.yaml")
        admin_dir = work / "envoy-admin"
        admin_dir.mkdir()
        os.chown(admin_dir, ENVOY_UID, ENVOY_UID)
        boot = envoy_config.build(cfg, listen=Addr("127.0.0.1", 10000), grpc=Addr.parse(cfg.listen.grpc),
                                  admin=Addr.parse(f"unix:{admin_dir}/admin.sock"),
                                  transparent=TransparentConfig(listen=(Addr("127.0.0.1", TRANSPARENT_PORT),),
                                                                certs_dir=str(work / "pod-certs")))
        (work / "envoy.yaml").write_text(yaml.safe_dump(boot, sort_keys=False))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work)}
        envoy = ns.spawn([*as_uid(ENVOY_UID), real_envoy_binary(), "-c", str(work / "envoy.yaml"),
                          "--log-level", "warning", "--disable-hot-restart", "--concurrency", "1"], envoy_log, env)
        ns.capture()
        deadline = time.monotonic() + 20
        while not (admin_dir / "admin.sock").exists():
            assert envoy.poll() is None and time.monotonic() < deadline, envoy_log.read_text()
            time.sleep(0.05)
        time.sleep(0.5)
        before = rss_bytes(envoy.pid)

        readers = subprocess.Popen(ns.cmd([python(), str(HERE / "slow_readers.py"), DOWNLOADS, str(READERS),
                                           str(SECONDS)]), stdout=subprocess.PIPE, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert readers.stdout.readline().strip() == "ready"
        peak = before
        while readers.poll() is None:
            peak = max(peak, rss_bytes(envoy.pid))
            time.sleep(0.2)
        sent = json.loads(readers.stdout.read().strip().splitlines()[-1])["sent"]

        assert envoy.poll() is None, envoy_log.read_text()
        # Every reader's download did go through Envoy, and filled what lies between.
        assert len(sent) == READERS and all(s > 256 * 1024 for s in sent), sent
        # Envoy's share: about its 1 MiB per connection (the rest sits in the kernel's socket
        # buffers), nowhere near the model routes' 64 MiB.
        print(f"envoy RSS {before / MIB:.0f} -> {peak / MIB:.0f} MiB; sent per reader {[s // MIB for s in sent]} MiB")
        assert peak - before < READERS * 4 * MIB, (before, peak)
    finally:
        if ns is not None:
            ns.close()
        shutil.rmtree(work, ignore_errors=True)
