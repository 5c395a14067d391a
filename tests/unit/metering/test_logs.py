"""cascade_extproc/metering/logs.py: no secret reaches stderr, whatever part of a record carries it: the
message and its arguments, an exception's traceback (its message and its chained causes), or a
stack_info dump; on both handlers (plain text lines and the JSON request lines)."""
from __future__ import annotations

import logging

import pytest

from cascade_extproc.metering import logs

# A configured draft key (any shape: it is redacted because it is configured), and keys of the
# shapes redacted whatever the configuration.
DRAFT_KEY = "dk-configured-0123456789abcdef"
SK_KEY = "sk-ant-abcdefgh12345678"
BEARER = "Bearer abcdefgh.ijklmnop-1234"
BEARER_TOKEN = BEARER.split()[1]
LEAKS = (DRAFT_KEY, SK_KEY, BEARER_TOKEN)


@pytest.fixture(autouse=True)
def _restore_logging():
    """logs.setup() replaces the root logger's handlers: put back what was there."""
    root, requests = logging.getLogger(), logging.getLogger("cascade_extproc.requests")
    saved = (root.handlers[:], root.level, requests.handlers[:], requests.propagate)
    yield
    root.handlers[:], requests.handlers[:] = saved[0], saved[2]
    root.setLevel(saved[1])
    requests.propagate = saved[3]


@pytest.fixture
def start_logging(capsys):
    """What the sidecar's logging writes to stderr. logs.setup() binds the sys.stderr of the
    moment, and capsys's stream is in place only once the test runs: call this first in a test,
    and call what it returns for the text written so far."""
    def setup():
        logs.setup("info", secrets=[DRAFT_KEY, "", "short"])
        return lambda: capsys.readouterr().err
    return setup


def _raise_chained() -> None:
    try:
        raise ConnectionError(f"upstream said: {BEARER} rejected; draft key {DRAFT_KEY}")
    except ConnectionError as cause:
        raise ValueError(f"bad key {SK_KEY} (configured: {DRAFT_KEY})") from cause


def assert_clean(out: str) -> None:
    for leak in LEAKS:
        assert leak not in out, f"{leak!r} leaked:\n{out}"
    assert "[redacted]" in out, out


@pytest.mark.parametrize("logger", ["cascade_extproc.test", "cascade_extproc.requests"])
def test_exception_tracebacks_are_redacted(start_logging, logger):
    written = start_logging()
    log = logging.getLogger(logger)
    try:
        _raise_chained()
    except ValueError:
        log.exception("call failed")
    out = written()
    # The traceback was written, with both exceptions of the chain, and redacted.
    assert "call failed" in out and "Traceback (most recent call last)" in out, out
    assert "ValueError: bad key [redacted] (configured: [redacted])" in out, out
    assert "direct cause of the following exception" in out and "ConnectionError: upstream said:" in out, out
    assert_clean(out)


def test_exc_info_given_as_an_exception_is_redacted(start_logging):
    written = start_logging()
    try:
        _raise_chained()
    except ValueError as exc:
        err = exc
    logging.getLogger("cascade_extproc.test").warning("retrying", exc_info=err)
    out = written()
    assert "ValueError: bad key" in out, out
    assert_clean(out)


@pytest.mark.parametrize("logger", ["cascade_extproc.test", "cascade_extproc.requests"])
def test_stack_info_is_redacted(start_logging, logger):
    written = start_logging()
    # The stack dump shows each frame's source line: this one, key and all.
    logging.getLogger(logger).warning("here", stack_info=True)  # key: sk-ant-abcdefgh12345678 DRAFT dk-configured-0123456789abcdef
    out = written()
    assert "Stack (most recent call last)" in out and "test_stack_info_is_redacted" in out, out
    assert_clean(out)


def test_messages_and_arguments_are_redacted(start_logging):
    written = start_logging()
    log = logging.getLogger("cascade_extproc.test")
    log.info("key %s and %s", DRAFT_KEY, BEARER)
    log.info(f"inline {SK_KEY}")
    logging.getLogger("cascade_extproc.requests").info('{"event": "request", "auth": "%s"}', SK_KEY)
    out = written()
    assert_clean(out)
    assert out.count("[redacted]") == 4, out
    # The request line stays a bare JSON line; the text lines keep their prefix.
    assert '\n{"event": "request", "auth": "[redacted]"}\n' in "\n" + out, out
    assert " INFO cascade_extproc.test: key [redacted] and [redacted]" in out, out


def test_secrets_too_short_to_be_keys_are_left_alone(start_logging):
    written = start_logging()
    logging.getLogger("cascade_extproc.test").info("a short word and a long one")
    assert "a short word and a long one" in written()
