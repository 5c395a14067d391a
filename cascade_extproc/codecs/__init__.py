"""Pure codecs between client/provider wire formats and the neutral types.

base.py (CodecError, the request-check helpers, compact JSON), registry.py (one codec per API:
for_api, parse_request), anthropic.py and openai.py (the two APIs), sse.py (the incremental SSE
parser), stream.py (events ⇄ responses), splice.py (byte-exact body edits), provenance.py
(mixed-provider histories), translate.py (answers read, metered and rewritten on their way)."""
from cascade_extproc.codecs.base import CONTENT_TYPE_JSON, CodecError, dumps, positive_int, require
from cascade_extproc.codecs.registry import Codec, for_api, parse_request

__all__ = ["CONTENT_TYPE_JSON", "Codec", "CodecError", "dumps", "for_api", "parse_request", "positive_int", "require"]
