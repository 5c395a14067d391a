"""Every way a provider call fails, in one place. The HTTP client (http.py) maps what aiohttp and
the codecs raise onto these, at the edge; nothing past it sees a foreign exception.

    ProviderError            a provider call failed: `reason` (words, for metrics and logs),
    │                        `status` (the provider's HTTP status, when it sent one), `message`
    │                        (the provider's own error message, when it sent one)
    ├── ProviderTimeout      no answer (or no response headers) within the time allowed
    ├── ProviderStalled      an answer that started, then went quiet longer than allowed
    ├── ProviderDeadline     the caller's time for the whole answer ran out (open(..., deadline))
    ├── ProviderTransport    the connection failed (refused, reset, TLS)
    ├── ProviderStatus       an error status, or an error event inside a stream
    └── ProviderMalformed    an answer that is not one (not JSON, not the API's shape)
"""
from __future__ import annotations


class ProviderError(Exception):
    """A provider call failed: transport, timeout, error status or unreadable answer."""

    def __init__(self, reason: str, status: int = 0, message: str = ""):
        super().__init__(f"{reason} (status {status})" if status else reason)
        self.reason = reason
        self.status = status
        self.message = message  # the provider's own error message, when it sent one


class ProviderTimeout(ProviderError):
    def __init__(self) -> None:
        super().__init__("timeout")


class ProviderStalled(ProviderError):
    def __init__(self) -> None:
        super().__init__("stalled")


class ProviderDeadline(ProviderError):
    """Not the provider's fault as such: the time the caller gave the whole answer is up."""

    def __init__(self) -> None:
        super().__init__("deadline")


class ProviderTransport(ProviderError):
    def __init__(self, cause: BaseException):
        super().__init__(f"transport: {type(cause).__name__}")


class ProviderStatus(ProviderError):
    def __init__(self, status: int, message: str = "", reason: str = "http error"):
        super().__init__(reason, status, message)


class ProviderMalformed(ProviderError):
    def __init__(self, what: str = "response"):
        super().__init__(f"malformed {what}", 200)
