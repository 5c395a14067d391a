"""Pure builders of ext_proc ProcessingResponse messages."""
from __future__ import annotations

from cascade_extproc._proto import core_pb2, external_processor_pb2 as ep, http_status_pb2
from cascade_extproc._proto import processing_mode_pb2
from cascade_extproc.headers import METADATA_NAMESPACE, PATH_HEADER
from cascade_extproc.types import Path


_OVERWRITE = core_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _header(key: str, value: str) -> core_pb2.HeaderValueOption:
    # Envoy reads raw_value; `value` is legacy and must stay empty.
    return core_pb2.HeaderValueOption(
        header=core_pb2.HeaderValue(key=key, raw_value=value.encode()), append_action=_OVERWRITE)


def _with_path(resp: ep.ProcessingResponse, path: Path) -> ep.ProcessingResponse:
    resp.dynamic_metadata.update({METADATA_NAMESPACE: {"path": str(path)}})
    return resp


def continue_headers(path: Path | None = None, skip_body: bool = False) -> ep.ProcessingResponse:
    """Let the request headers through; with `skip_body`, don't send us the body either."""
    resp = ep.ProcessingResponse(request_headers=ep.HeadersResponse())
    if skip_body:
        resp.mode_override.request_body_mode = processing_mode_pb2.ProcessingMode.NONE
    return _with_path(resp, path) if path else resp


def continue_body(path: Path) -> ep.ProcessingResponse:
    return _with_path(ep.ProcessingResponse(request_body=ep.BodyResponse()), path)


def reroute_body(body: bytes, set_headers: dict[str, str], remove_headers: list[str]) -> ep.ProcessingResponse:
    """Replace the body and headers, and make Envoy pick the route again (the skipped path)."""
    headers = {**set_headers, "content-length": str(len(body))}
    common = ep.CommonResponse(
        status=ep.CommonResponse.CONTINUE,
        header_mutation=ep.HeaderMutation(
            set_headers=[_header(k, v) for k, v in headers.items()], remove_headers=remove_headers),
        body_mutation=ep.BodyMutation(body=body),
        clear_route_cache=True,
    )
    return _with_path(ep.ProcessingResponse(request_body=ep.BodyResponse(response=common)), Path.SKIPPED)


def immediate(status: int, body: bytes, content_type: str, path: Path) -> ep.ProcessingResponse:
    """Answer the client ourselves; Envoy does not contact any upstream."""
    headers = ep.HeaderMutation(set_headers=[
        _header("content-type", content_type), _header(PATH_HEADER, str(path))])
    resp = ep.ProcessingResponse(immediate_response=ep.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=status), headers=headers, body=body))
    return _with_path(resp, path)


def passthrough(kind: str) -> ep.ProcessingResponse:
    """An empty CONTINUE for any other phase Envoy sends us."""
    if kind in ("request_headers", "response_headers"):
        return ep.ProcessingResponse(**{kind: ep.HeadersResponse()})
    if kind in ("request_body", "response_body"):
        return ep.ProcessingResponse(**{kind: ep.BodyResponse()})
    return ep.ProcessingResponse(**{kind: ep.TrailersResponse()})
