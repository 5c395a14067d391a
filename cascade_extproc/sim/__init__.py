"""Simulated LLM providers (a SIMULATION: no model runs here).

Loopback aiohttp servers speaking the Anthropic Messages API and the OpenAI Chat
Completions API, JSON and SSE. `cascade-extproc up` uses them when no real keys are
configured; the tests use them as fake upstreams. Same request -> same answer.

Requests are validated like the real APIs do (validate.py), including thinking signatures
(only this provider's are accepted) and tool call/result pairing, so a test catches the sidecar
sending something a real provider would refuse.

The package imports nothing else from cascade_extproc, on purpose: it is written against the
public wire formats, so it independently checks our codecs.

server.py (SimProvider, the faults it injects), answers.py (what the model says, and the frames it
streams), validate.py (the real APIs' request checks), standalone.py (`cascade-extproc sim`).
"""
from cascade_extproc.sim.server import FAULTS, Latency, Recorded, SimProvider
from cascade_extproc.sim.standalone import add_arguments, main, serve_forever

__all__ = ["FAULTS", "Latency", "Recorded", "SimProvider", "add_arguments", "main", "serve_forever"]
