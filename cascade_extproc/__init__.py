"""cascade-extproc: an Envoy ext_proc sidecar for response-level speculative decoding."""
