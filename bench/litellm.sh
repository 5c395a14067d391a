#!/bin/sh
# Installs LiteLLM's proxy, the peer column of bench/floor.py, into its own venv (never the
# project's): ~/.cache/cascade-bench/litellm. Pinned: 1.80.0 installs from the index this project
# uses (later `litellm[proxy]` releases need a `litellm-proxy` package it does not carry), and is
# older than the compromised 1.107.0 release.
set -eu
venv="${HOME}/.cache/cascade-bench/litellm"
python3 -m venv "$venv"
"$venv/bin/pip" install -q 'litellm[proxy]==1.80.0'
echo "$venv/bin/litellm"
