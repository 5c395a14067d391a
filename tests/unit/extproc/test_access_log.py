"""Records waiting for Envoy's access log: joined by the server's token, bounded, expiring."""
from cascade_extproc._proto import accesslog_pb2 as al
from cascade_extproc.extproc.access_log import AwaitingLog, Logged, logged_of


def test_delivered_once_by_token():
    got = []
    w = AwaitingLog()
    token = w.expect(got.append)
    assert w.deliver("someone-else", Logged(200)) is False
    assert w.deliver(token, Logged(200)) is True and w.deliver(token, Logged(200)) is False
    assert [g.status for g in got] == [200] and len(w) == 0


def test_bounded_and_expiring():
    now = [0.0]
    got = []
    w = AwaitingLog(expire_s=10, max_waiting=2, clock=lambda: now[0])
    a = w.expect(lambda x: got.append(("a", x)))
    w.expect(lambda x: got.append(("b", x)))
    w.expect(lambda x: got.append(("c", x)))  # over the bound: the oldest is recorded without usage
    assert got == [("a", None)] and not w.deliver(a, Logged(200))
    now[0] = 11
    w.expect(lambda x: got.append(("d", x)))  # b and c expired
    assert [g[0] for g in got] == ["a", "b", "c"] and len(w) == 1
    w.close()
    assert [g[0] for g in got] == ["a", "b", "c", "d"]


def test_an_entry_read():
    e = al.HTTPAccessLogEntry()
    e.response.response_code.value = 200
    e.common_properties.time_to_last_rx_byte.nanos = 1_000_000
    e.common_properties.time_to_last_downstream_tx_byte.nanos = 5_000_000
    e.common_properties.metadata.filter_metadata["cascade"].update(
        {"meter": "t-1", "answer_sse": "event: x\n\n", "path": "direct"})
    token, logged = logged_of(e)
    assert token == "t-1" and logged.status == 200 and abs(logged.latency_s - 0.004) < 1e-9
    assert logged.sse == b"event: x\n\n" and logged.json is None
    assert logged_of(al.HTTPAccessLogEntry()) is None  # not one of ours
