"""Pure builders of ext_proc ProcessingResponse messages."""
from __future__ import annotations

from google.protobuf.duration_pb2 import Duration

from cascade_extproc._proto import core_pb2, external_processor_pb2 as ep, http_status_pb2
from cascade_extproc._proto import processing_mode_pb2
from cascade_extproc.headers import (METADATA_NAMESPACE, METER_KEY, PATH_HEADER, RELAY_ROUTE, ROUTE_KEY,
                                     TICKET_KEY, USAGE_INJECTED_KEY)
from cascade_extproc.types import Path

Mode = processing_mode_pb2.ProcessingMode
_OVERWRITE = core_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _header(key: str, value: str) -> core_pb2.HeaderValueOption:
    # Envoy reads raw_value; `value` is legacy and must stay empty.
    return core_pb2.HeaderValueOption(
        header=core_pb2.HeaderValue(key=key, raw_value=value.encode()), append_action=_OVERWRITE)


def _with_path(resp: ep.ProcessingResponse, path: Path | None, usage_injected: bool = False) -> ep.ProcessingResponse:
    if path is not None:
        resp.dynamic_metadata.update({METADATA_NAMESPACE: {"path": str(path)}})
    if usage_injected:  # Envoy drops the usage chunk the client did not ask for
        resp.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.update({USAGE_INJECTED_KEY: "1"})
    return resp


def _header_edits(set_headers: dict[str, str] | None, remove_headers: list[str] | None) -> ep.CommonResponse:
    return ep.CommonResponse(header_mutation=ep.HeaderMutation(
        set_headers=[_header(k, v) for k, v in (set_headers or {}).items()], remove_headers=remove_headers or []))


def continue_body(path: Path, body: bytes | None = None, usage_injected: bool = False,
                  meter: str = "") -> ep.ProcessingResponse:
    """Send the request on to the route it has; with `body`, a corrected body first.
    `usage_injected`: the body asks for a usage chunk the client did not (USAGE_INJECTED_KEY).
    `meter`: Envoy meters the answer and its access log brings the usage back under this token
    (METER_KEY), the server reads nothing more of this request."""
    common = ep.CommonResponse()
    if body is not None:
        common.body_mutation.body = body  # Envoy recomputes content-length (the fail-open filter)
    resp = _with_path(ep.ProcessingResponse(request_body=ep.BodyResponse(response=common)), path, usage_injected)
    if meter:
        resp.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.update({METER_KEY: meter})
    return resp


def to_relay(ticket: str, usage_injected: bool = False) -> ep.ProcessingResponse:
    """Send a skipped request to the sidecar's relay, which holds the request under `ticket`:
    an empty body, and Envoy picks the route again (the relay route, selected by this metadata).
    Envoy applies no header edits of ours here (it sent no headers message): the route sets the
    ticket header."""
    common = ep.CommonResponse(clear_route_cache=True)
    common.body_mutation.body = b""
    # Present, empty: Envoy clears the route cache only for a response that has header edits.
    common.header_mutation.SetInParent()
    resp = _with_path(ep.ProcessingResponse(request_body=ep.BodyResponse(response=common)), Path.SKIPPED,
                      usage_injected)
    resp.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.update({ROUTE_KEY: RELAY_ROUTE, TICKET_KEY: ticket})
    return resp


def immediate(status: int, body: bytes, content_type: str, path: Path) -> ep.ProcessingResponse:
    """Answer the client ourselves; Envoy does not contact any upstream."""
    headers = ep.HeaderMutation(set_headers=[
        _header("content-type", content_type), _header(PATH_HEADER, str(path))])
    resp = ep.ProcessingResponse(immediate_response=ep.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=status), headers=headers, body=body))
    return _with_path(resp, path)


def extend_timeout(seconds: float) -> ep.ProcessingResponse:
    """Ask Envoy to wait longer for our answer to the message it is waiting on."""
    resp = ep.ProcessingResponse()
    resp.override_message_timeout.CopyFrom(Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9)))
    return resp


def response_headers(body_mode: int, set_headers: dict[str, str] | None = None,
                     remove_headers: list[str] | None = None) -> ep.ProcessingResponse:
    """Answer the response headers and choose how Envoy sends us the response body."""
    resp = ep.ProcessingResponse(response_headers=ep.HeadersResponse(
        response=_header_edits(set_headers, remove_headers)))
    resp.mode_override.response_body_mode = body_mode
    return resp


def response_body(body: bytes) -> ep.ProcessingResponse:
    """Replace the response body, or the chunk of it Envoy sent (content-length is gone by now)."""
    common = ep.CommonResponse(body_mutation=ep.BodyMutation(body=body))
    return ep.ProcessingResponse(response_body=ep.BodyResponse(response=common))


def passthrough(kind: str) -> ep.ProcessingResponse:
    """An empty CONTINUE for any other phase Envoy sends us."""
    if kind in ("request_headers", "response_headers"):
        return ep.ProcessingResponse(**{kind: ep.HeadersResponse()})
    if kind in ("request_body", "response_body"):
        return ep.ProcessingResponse(**{kind: ep.BodyResponse()})
    return ep.ProcessingResponse(**{kind: ep.TrailersResponse()})
