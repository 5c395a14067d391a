"""A hostile app in the pod: everything it can reach, tried. Prints one JSON report.

Run inside the app's position (tests/e2e/test_e2e_pod_isolation.py): the pod's network (all its
loopback ports), but its own mounts and processes, as a container has. It tries every listening
TCP port as an ext_proc gRPC server (a skippable request, to see what comes back) and as Envoy's
admin interface; every Unix socket the kernel lists; every process's environment; and the files
it is given. Usage: app_probe.py SECRET PORTS SOCKETS FILE... (PORTS and SOCKETS: the pod's
listening TCP ports and Unix socket paths, comma-separated, found by the test from the pod's
processes; other processes on the machine are not the pod).
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import sys
from pathlib import Path

import grpc

from cascade_extproc._proto import external_processor_pb2 as ep
from cascade_extproc._proto import external_processor_pb2_grpc as ep_grpc

# What only Envoy's admin interface answers.
ADMIN_SIGNS = ("command_line_options", "active loggers", "envoy.admin.v3")
ADMIN_PATHS = (("GET", "/server_info"), ("GET", "/config_dump"), ("POST", "/logging"))


def listening_ports() -> list[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


def unix_socket_paths() -> list[str]:
    paths = []
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7].startswith("/"):
            paths.append(fields[7])
    return sorted(set(paths))


def skippable_request() -> ep.ProcessingRequest:
    body = json.dumps({"model": "claude-sonnet-5", "max_tokens": 10,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    msg = ep.ProcessingRequest(request_body=ep.HttpBody(body=body, end_of_stream=True))
    msg.attributes["envoy.filters.http.ext_proc"].update({
        "request.path": "/v1/messages", "request.method": "POST",
        "request.headers['content-type']": "application/json", "request.headers['x-api-key']": "app-key"})
    return msg


def try_ext_proc(target: str) -> bytes | None:
    """The ext_proc server's replies to a skippable request, or None when nothing answered."""
    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=1)
        stub = ep_grpc.ExternalProcessorStub(channel)
        replies = stub.Process(iter([skippable_request()]), timeout=5)
        return b"".join(r.SerializeToString() for r in replies)
    except (grpc.FutureTimeoutError, grpc.RpcError):
        return None
    finally:
        channel.close()


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=3)
        self.path_ = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(3)
        self.sock.connect(self.path_)


def try_http(conn: http.client.HTTPConnection) -> list[str]:
    """The bodies of the admin paths, as far as anything answers them."""
    bodies = []
    for method, path in ADMIN_PATHS:
        try:
            conn.request(method, path)
            bodies.append(conn.getresponse().read().decode("utf-8", "replace"))
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
    return bodies


def main(secret: str, ports: str, sockets: str, files: list[str]) -> dict:
    listening = listening_ports()
    pod = [p for p in map(int, filter(None, ports.split(","))) if p in listening]
    pod_sockets = set(filter(None, sockets.split(",")))
    report: dict = {"tcp_ports": pod, "ext_proc_servers": [], "admin_reached": [],
                    "key_seen": [], "unix_connected": [], "files_read": []}

    def look(where: str, text: str | bytes) -> None:
        if (secret.encode() if isinstance(text, bytes) else secret) in text:
            report["key_seen"].append(where)

    for port in report["tcp_ports"]:
        replies = try_ext_proc(f"127.0.0.1:{port}")
        if replies is not None:
            report["ext_proc_servers"].append(port)
            look(f"ext_proc reply on port {port}", replies)
        for body in try_http(http.client.HTTPConnection("127.0.0.1", port, timeout=3)):
            look(f"http on port {port}", body)
            if any(s in body for s in ADMIN_SIGNS):
                report["admin_reached"].append(f"tcp:{port}")
    for path in unix_socket_paths():
        if path not in pod_sockets:
            continue
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(path)
        except OSError:
            continue
        report["unix_connected"].append(path)
        replies = try_ext_proc(f"unix:{path}")
        if replies is not None:
            report["ext_proc_servers"].append(path)
            look(f"ext_proc reply on {path}", replies)
        for body in try_http(UnixConnection(path)):
            if any(s in body for s in ADMIN_SIGNS):
                report["admin_reached"].append(f"unix:{path}")
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                look(f"/proc/{pid}/environ", Path(f"/proc/{pid}/environ").read_bytes())
            except OSError:
                pass
    for f in files:
        try:
            look(f, Path(f).read_bytes())
            report["files_read"].append(f)
        except OSError:
            pass
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])))
