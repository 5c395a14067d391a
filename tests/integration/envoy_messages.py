"""ProcessingRequests as Envoy sends them under the bootstrap envoy_config builds: the request
filter's one message is the body, with the request headers the server reads as attributes."""
import json

from cascade_extproc._proto import external_processor_pb2 as ep
from cascade_extproc.deploy.envoy_config import EXT_PROC
from cascade_extproc.headers import REQUEST_ATTRIBUTES


def request_msg(path, body, method="POST", request_id="req-1", **headers):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    known = {":path": path, ":method": method, "x-request-id": request_id, **headers}
    msg = ep.ProcessingRequest(request_body=ep.HttpBody(body=raw, end_of_stream=True))
    # Envoy leaves out an attribute whose header is absent.
    msg.attributes[EXT_PROC].update({expr: known[name] for expr, name in REQUEST_ATTRIBUTES.items()
                                     if name in known})
    return msg
