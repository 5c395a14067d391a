"""Fuzzing the codecs: arbitrary bytes and JSON never raise anything but CodecError."""
import json

from hypothesis import given, settings, strategies as st

from cascade_extproc import codecs
from cascade_extproc.codecs import CodecError, anthropic, openai, splice
from cascade_extproc.codecs.sse import SseEvent, SseParser
from cascade_extproc.codecs.translate import StreamTap, read_json
from cascade_extproc.routing.features import extract
from cascade_extproc.types import Api

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                    max_leaves=30)
SHAPED = st.fixed_dictionaries({"model": JSON, "messages": st.lists(JSON, max_size=4)},
                               optional={"tools": JSON, "tool_choice": JSON, "stream": JSON, "system": JSON,
                                         "max_tokens": JSON, "thinking": JSON, "stream_options": JSON})


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_parse_request_on_any_bytes(raw):
    for api in Api:
        try:
            req = codecs.parse_request(api, raw, {})
        except CodecError:
            continue
        extract(req, len(raw))


@settings(max_examples=150, deadline=None)
@given(SHAPED)
def test_request_shaped_json_routes_and_translates_or_refuses_cleanly(body):
    raw = json.dumps(body).encode()
    for api in Api:
        try:
            req = codecs.parse_request(api, raw, {})
        except CodecError:
            continue
        extract(req, len(raw))  # features never crash on odd shapes
        for codec in (anthropic, openai):
            try:
                codec.decode_request(body)
            except (CodecError, AttributeError, TypeError, KeyError, ValueError):
                pass  # the servicer catches these and falls back; they must not be anything else
        try:
            splice.replace_value(raw, "model", "x")
        except CodecError:
            pass


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=5))
def test_stream_tap_on_any_bytes(data, cuts):
    for api in Api:
        tap = StreamTap(api)
        points = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
        for a, b in zip(points, points[1:]):
            tap.feed(data[a:b])
        tap.feed(b"", end=True)
        tap.response()  # None or a Response, never an exception
        read_json(api, data)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_stream_decoders_on_any_event_data(text):
    for dec in (anthropic.StreamDecoder(), openai.StreamDecoder()):
        try:
            dec.feed(SseEvent("message", text))
        except (CodecError, AttributeError, TypeError, KeyError, ValueError):
            pass  # StreamTap turns these into a broken tap; the stream itself goes on
    SseParser().feed(text.encode())
