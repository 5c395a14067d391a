"""Names shared by the Envoy bootstrap and the servicer: the contract between the two."""

from cascade_extproc.types import Api

# Client-facing model-call paths (without query) -> the API they speak. OpenAI clients use base
# URL http://envoy/openai/v1 so the two APIs never share a path. Only these reach the server.
CLIENT_PATHS = {"/v1/messages": Api.ANTHROPIC, "/openai/v1/chat/completions": Api.OPENAI}
# Transparently captured traffic keeps the provider's own paths; Envoy names the API by host.
PROVIDER_PATHS = {Api.ANTHROPIC: "/v1/messages", Api.OPENAI: "/v1/chat/completions"}
# Path appended to a provider's base URL, per API. SDK conventions: the Anthropic base URL
# has no /v1, the OpenAI one ends in /v1.
API_PATH = {Api.ANTHROPIC: "/v1/messages", Api.OPENAI: "/chat/completions"}

PATH_HEADER = "x-cascade-path"  # response header: the path a request took
ROUTE_HEADER = "x-cascade-route"  # once the draft-route selector; still never taken from a client
METADATA_NAMESPACE = "cascade"  # dynamic metadata namespace Envoy accepts from the servicer
API_HEADER = "x-cascade-api"  # set by Envoy on transparently captured traffic: the host's API
# A skipped request's ticket at the relay (extproc/relay.py): set by the relay route from the server's
# metadata; never taken from a client.
TICKET_HEADER = "x-cascade-ticket"
RELAY_PATH = "/relay"
INTERNAL_HEADERS = (ROUTE_HEADER, API_HEADER, TICKET_HEADER)  # stripped from clients before anything routes

# The client's identity at the strong provider: never sent to the draft provider.
CLIENT_CREDENTIALS = ("x-api-key", "authorization", "openai-organization", "openai-project")
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"

# Dynamic metadata the server sets on a skipped request: ROUTE_KEY = RELAY_ROUTE selects the relay
# route (a client cannot set metadata, so cannot pick it), TICKET_KEY is the ticket it carries.
ROUTE_KEY = "route"
RELAY_ROUTE = "relay"
TICKET_KEY = "ticket"
# Set ("1") when the server asked an OpenAI stream's provider for the usage chunk the client did
# not ask for (to meter it): Envoy's usage filter (deploy/lua/usage_chunk.lua) drops that chunk on the
# way to the client, even when the server has died mid-stream.
USAGE_INJECTED_KEY = "usage_injected"
# Metering off the critical path: the server sets METER_KEY (a token of its own) instead of reading
# the answer; Envoy's usage filter keeps what the usage needs under ANSWER_SSE_KEY (the SSE events
# that carry it) or ANSWER_JSON_KEY (a JSON answer's model and usage), and Envoy's gRPC access log
# (ACCESS_LOG_NAME, only for requests with METER_KEY) brings it to the server when the answer ends.
METER_KEY = "meter"
ANSWER_SSE_KEY = "answer_sse"
ANSWER_JSON_KEY = "answer_json"
ACCESS_LOG_NAME = "cascade-meter"

# Envoy sends the server no request-headers message (a round trip fewer on every call): the
# request headers the server reads arrive as request_attributes with the body.
# traceparent / tracestate: the client's trace, continued by the request's span (metering/tracing.py).
FORWARDED_HEADERS = ("content-type", "content-encoding", "user-agent", API_HEADER,
                     "x-api-key", "authorization", "anthropic-version", "anthropic-beta",
                     "openai-organization", "openai-project", "traceparent", "tracestate")
# CEL expression Envoy evaluates -> the header name the server files it under.
REQUEST_ATTRIBUTES = {"request.path": ":path", "request.method": ":method", "request.id": "x-request-id",
                      **{f"request.headers['{h}']": h for h in FORWARDED_HEADERS}}
