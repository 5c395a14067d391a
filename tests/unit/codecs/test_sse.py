"""SseParser: line endings, fields, and bytes split anywhere give the same events as whole bytes."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cascade_extproc.codecs import dumps
from cascade_extproc.codecs.sse import SseEvent, SseParser, frame

SETTINGS = settings(max_examples=200, deadline=None)


def parse(raw: bytes, cuts: list[int] | None = None) -> list[SseEvent]:
    """Feed `raw` cut at `cuts` (byte offsets), then close."""
    p, out, last = SseParser(), [], 0
    for c in sorted(set(cuts or [])) + [len(raw)]:
        out += p.feed(raw[last:c])
        last = c
    return out + p.close()


def one_byte_at_a_time(raw: bytes) -> list[SseEvent]:
    return parse(raw, list(range(len(raw))))


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_line_endings(eol):
    raw = eol.join([b"event: start", b"data: {\"a\":1}", b"", b"data: two", b"", b""])
    expected = [SseEvent("start", '{"a":1}'), SseEvent("message", "two")]
    assert parse(raw) == expected
    assert one_byte_at_a_time(raw) == expected


def test_mixed_line_endings():
    raw = b"data: a\r\n\rdata: b\n\r\ndata: c\r\r"
    assert parse(raw) == [SseEvent("message", "a"), SseEvent("message", "b"), SseEvent("message", "c")]
    assert one_byte_at_a_time(raw) == parse(raw)


def test_multi_line_data_is_joined_with_newlines():
    raw = b"data: first\ndata:second\ndata:  third\ndata\ndata: \n\n"
    # One space after the colon is dropped, no more; a bare field name is an empty value.
    assert parse(raw) == [SseEvent("message", "first\nsecond\n third\n\n")]


def test_comments_and_unknown_fields_are_ignored():
    raw = b": keep-alive\n\n:ping\nid: 7\nretry: 100\nfoo: bar\ndata: x\n: inside\n\n"
    assert parse(raw) == [SseEvent("message", "x")]


def test_event_names_apply_to_one_event_only():
    raw = b"event: a\ndata: 1\n\ndata: 2\n\nevent: b\nevent: c\ndata: 3\n\nevent: lonely\n\ndata: 4\n\n"
    assert parse(raw) == [SseEvent("a", "1"), SseEvent("message", "2"), SseEvent("c", "3"),
                          SseEvent("message", "4")]


def test_event_without_data_is_not_dispatched():
    assert parse(b"event: x\n\n\n\n") == []


def test_close_flushes_a_last_event_without_blank_line():
    p = SseParser()
    assert p.feed(b"data: a\n\nevent: e\ndata: b") == [SseEvent("message", "a")]
    assert p.close() == [SseEvent("e", "b")]
    for tail in (b"data: b\n", b"data: b\r\n", b"data: b\r"):
        p = SseParser()
        assert p.feed(b"event: e\n" + tail) == []
        assert p.close() == [SseEvent("e", "b")]


def test_close_with_nothing_pending():
    p = SseParser()
    assert p.feed(b"data: a\n\n") == [SseEvent("message", "a")]
    assert p.close() == []
    assert SseParser().close() == []


def test_cr_at_chunk_end_waits_for_a_possible_lf():
    p = SseParser()
    assert p.feed(b"data: a\r") == []
    assert p.feed(b"\n") == []  # CRLF: one line end, not two
    assert p.feed(b"\r\n") == [SseEvent("message", "a")]


def test_multibyte_utf8_split_across_chunks():
    raw = "data: é😀中\n\n".encode()
    assert one_byte_at_a_time(raw) == [SseEvent("message", "é😀中")]


def test_one_large_chunk():
    """A whole buffered stream in one chunk (its speed is measured in bench/, not here)."""
    one = frame({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x" * 20}},
                "content_block_delta")
    data = one * 40000
    events = SseParser().feed(data)
    assert len(events) == 40000
    assert events[-1] == SseEvent("content_block_delta", one.split(b"data: ")[1].strip().decode())


def test_frame_encoding():
    assert frame({"a": "é"}, "ev") == 'event: ev\ndata: {"a":"é"}\n\n'.encode()
    assert frame(b"[DONE]") == b"data: [DONE]\n\n"


# ---- property: any events, any cut points --------------------------------------------------------

_LINE_SAFE = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n")
event_name = st.one_of(st.none(), st.text(_LINE_SAFE, min_size=1, max_size=10))
json_data = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)
raw_data = st.text(_LINE_SAFE, max_size=20).map(str.encode)  # frame() sends bytes as they are
events = st.lists(st.tuples(st.one_of(json_data, raw_data), event_name), max_size=8)


def expected(evs) -> list[SseEvent]:
    out = []
    for data, name in evs:
        payload = data if isinstance(data, bytes) else dumps(data)
        # frame() writes "data: " + payload (and "event: " + name); the parser drops exactly one
        # space after the colon, so leading spaces in a payload or name survive.
        out.append(SseEvent(name or "message", payload.decode()))
        if not isinstance(data, bytes):
            assert json.loads(out[-1].data) == data
    return out


@st.composite
def framed_with_cuts(draw):
    evs = draw(events)
    eol = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    raw = b"".join(frame(d, n) for d, n in evs).replace(b"\n", eol)
    if draw(st.booleans()) and raw:
        raw = raw[:-len(eol)]  # no final blank line: close() must flush the last event
    cuts = draw(st.lists(st.integers(0, len(raw)), max_size=12))
    return evs, raw, cuts


@SETTINGS
@given(framed_with_cuts())
def test_split_anywhere_equals_whole(case):
    evs, raw, cuts = case
    whole = parse(raw)
    assert parse(raw, cuts) == whole
    assert whole == expected(evs)


@SETTINGS
@given(events, st.data())
def test_split_inside_crlf_and_multibyte_characters(evs, data):
    raw = b"".join(frame(d, n) for d, n in evs).replace(b"\n", b"\r\n")
    # Cut between CR and LF, and inside every multi-byte UTF-8 sequence.
    crlf = [i + 1 for i in range(len(raw) - 1) if raw[i:i + 2] == b"\r\n"]
    inside = [i for i in range(1, len(raw)) if raw[i] & 0xC0 == 0x80]
    cuts = data.draw(st.lists(st.sampled_from(crlf + inside), max_size=20)) if crlf + inside else []
    whole = parse(raw)
    assert parse(raw, cuts) == whole
    assert parse(raw, crlf + inside) == whole
    assert whole == expected(evs)


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_whole_frames_pass_a_stream_through_cut_at_frame_ends(eol):
    """What the relay passes through ends with a whole frame, so an event it adds (an early end)
    lands between two frames; split anywhere, the bytes come out the same."""
    from cascade_extproc.codecs.sse import WholeFrames
    raw = "".join(f"event: e{eol}data: {{\"n\": {i}}}{eol}{eol}" for i in range(20)).encode()
    for step in (1, 3, 7, 50, len(raw)):
        w = WholeFrames()
        out = []
        for i in range(0, len(raw), step):
            got = w.feed(raw[i:i + step])
            assert got == b"" or got.endswith((eol * 2).encode())
            out.append(got)
        out.append(w.rest())
        assert b"".join(out) == raw
    w = WholeFrames()
    assert w.feed(b"data: 1\n\ndata: 2") == b"data: 1\n\n" and w.rest() == b"data: 2"
