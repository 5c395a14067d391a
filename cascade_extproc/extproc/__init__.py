"""The Envoy side: the ext_proc stream loop (servicer.py), one request's shell (exchange.py) and
its paths (paths/), the ProcessingResponse builders (mutations.py), the answer on its way back
(response.py), whose credentials go where (credentials.py), and the relay Envoy sends skipped
requests to (relay.py). With app.py, the only code that imports grpc and the generated code."""
