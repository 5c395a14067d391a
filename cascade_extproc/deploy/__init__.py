"""What runs Envoy beside the server: the bootstrap built from a Config (envoy_config.py, with
Envoy's Lua filters in lua/), the Envoy child process (envoy_proc.py), the pod-local CA for
transparent capture (certs.py), and the local stack of `cascade-extproc up` (stack.py)."""
