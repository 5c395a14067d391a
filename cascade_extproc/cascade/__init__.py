"""The paths that use the draft model: draft → verify (run.py, the driver), the verification
protocol itself (verify.py, pure), the request body for each provider (bodies.py, pure), and the
skipped path, the draft's answer streamed to the client (skipped.py, served by the relay)."""
