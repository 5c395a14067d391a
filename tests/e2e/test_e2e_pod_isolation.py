"""What the app container can reach in the pod: no draft key, no Envoy admin.

The app shares the pod's network (every loopback port) but has its own mounts and processes. A
coding agent runs arbitrary shell commands, so the app is treated as hostile: tests/e2e/app_probe.py
tries everything it can reach from that position, here a mount and PID namespace of its own
(unshare) in which the sidecar's volumes (the ext_proc socket, Envoy's admin socket, the draft
key) are not mounted, as in k8s/base/deployment.yaml.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stack import DRAFT_KEY, Stack

PROBE = Path(__file__).with_name("app_probe.py")
REQUIRES = "the app's position is built with unshare and mounts, which need root"


@pytest.fixture(scope="module")
def pod(tmp_path_factory):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        if os.environ.get("CI") == "true":
            pytest.fail(REQUIRES)
        pytest.skip(REQUIRES)
    s = Stack(tmp_path_factory.mktemp("pod"), pod_layout=True)
    yield s
    s.close()


def pod_listeners(stack: Stack) -> tuple[list[int], list[str]]:
    """The TCP ports and Unix socket paths the pod's processes (Envoy, the server) listen on:
    what the app could try. (Other processes on this machine, another test's stack say, are not
    the pod; in a pod they would not share its network or its mounts.)"""
    inodes = set()
    for pid in (stack.envoy.proc.pid, stack.server.pid):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    paths = {f[7] for line in Path("/proc/net/unix").read_text().splitlines()[1:]
             if len(f := line.split()) >= 8 and f[6] in inodes and f[7].startswith("/")}
    return sorted(ports), sorted(paths)


def probe(stack: Stack, *, isolated: bool) -> dict:
    ports, sockets = pod_listeners(stack)
    cmd = [sys.executable, str(PROBE), DRAFT_KEY, ",".join(map(str, ports)), ",".join(sockets), str(stack.key_file)]
    if isolated:
        hide = " && ".join(f"mount -t tmpfs app-does-not-mount {d}" for d in stack.private_dirs)
        cmd = ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "sh", "-c",
               f"{hide} && exec " + " ".join(cmd)]
    env = {**os.environ, "PYTHONPATH": str(PROBE.parent.parents[1])}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_app_reaches_no_key_and_no_envoy_admin(pod):
    seen = probe(pod, isolated=True)
    # It did look: the model-call listener and the sidecar's metrics port are in its reach, and
    # the pod's sockets (the ext_proc server's, the relay's, Envoy's admin) were listed to it.
    assert {pod.port, pod.admin_port} <= set(seen["tcp_ports"])
    assert len(pod_listeners(pod)[1]) >= 3
    assert seen["ext_proc_servers"] == []  # the server listens on a socket the app has not got
    assert seen["admin_reached"] == []
    assert seen["unix_connected"] == [] and seen["files_read"] == []
    assert seen["key_seen"] == []


def test_the_probe_finds_what_is_there_when_it_can_reach_it(pod):
    """The same probe with the sidecar's volumes in reach (the host's position): it connects to
    the sockets and reaches Envoy's admin, so the test above is not blind. Even then, the
    ext_proc server's replies carry no key: Envoy holds it."""
    seen = probe(pod, isolated=False)
    sockets = {str(d) for d in pod.private_dirs}
    assert any(Path(p).parent.as_posix() in sockets for p in seen["unix_connected"])
    assert any(a.startswith("unix:") for a in seen["admin_reached"])
    assert any(str(s).endswith("extproc.sock") for s in seen["ext_proc_servers"])
    assert seen["key_seen"] == [str(pod.key_file)]  # only by reading the key's own file
