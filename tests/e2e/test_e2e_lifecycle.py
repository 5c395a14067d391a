"""SIGTERM: the server reports NOT_SERVING, refuses new streams (Envoy sends those requests
straight to the strong provider), lets the cascades in flight finish, then exits cleanly."""
import signal
import threading
import time
import urllib.error
import urllib.request

import anthropic
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stack import CLIENT_KEY, Stack

COMPLEX = ("Lay out a plan to split the monolith's user module into a service, with the data "
           "migration, the dual-write period and how to roll back at each step.")


def readyz(stack):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{stack.admin_port}/readyz", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def grpc_health(stack):
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as ch:
        try:
            return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
        except grpc.RpcError as e:
            return e.code()


def cascade_in_background(stack, draft_delay_s):
    """Start a cascade whose draft takes `draft_delay_s`; returns the thread and its result."""
    client = anthropic.Anthropic(base_url=stack.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
    stack.sims["draft_anthropic"].latency.ttft_s = draft_delay_s
    result = {}

    def in_flight():
        raw = client.messages.with_raw_response.create(
            model="claude-sonnet-5", max_tokens=100, messages=[{"role": "user", "content": COMPLEX}])
        result["path"], result["text"] = raw.headers["x-cascade-path"], raw.parse().content[0].text

    t = threading.Thread(target=in_flight)
    t.start()
    return t, result


def test_sigterm_drains_in_flight_cascades(tmp_path):
    s = Stack(tmp_path)
    try:
        assert grpc_health(s) == health_pb2.HealthCheckResponse.SERVING
        t, result = cascade_in_background(s, 2.5)  # mid-flight when SIGTERM comes
        time.sleep(0.8)
        s.server.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while readyz(s) == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert readyz(s) in (503, None)
        assert grpc_health(s) in (health_pb2.HealthCheckResponse.NOT_SERVING, grpc.StatusCode.UNAVAILABLE)
        # A new request while draining is not lost: Envoy passes it to the strong provider.
        client = anthropic.Anthropic(base_url=s.anthropic_url, api_key=CLIENT_KEY, max_retries=0)
        raw = client.messages.with_raw_response.create(
            model="claude-sonnet-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-cascade-path"] == "fallback" and raw.parse().content[0].text
        t.join(15)
        assert result["path"] == "accepted"  # the cascade in flight finished
        assert result["text"].startswith("Simulated reply from sim-draft-claude")
        assert s.server.wait(15) == 0
    finally:
        s.close()


def test_server_killed_mid_cascade_loses_nothing(tmp_path):
    s = Stack(tmp_path)
    try:
        t, result = cascade_in_background(s, 2.0)
        time.sleep(0.8)
        s.kill_server()  # SIGKILL while the cascade waits on the draft
        t.join(15)
        # Envoy's failure_mode_allow sent the request on to the strong model.
        assert result["text"].startswith("Simulated reply from claude-sonnet-5")
        assert result["path"] == "fallback"
    finally:
        s.close()
