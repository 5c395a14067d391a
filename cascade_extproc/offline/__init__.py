"""Work on recorded traffic, away from the request path: Claude Code transcripts rebuilt into
requests, and `replay` (the router and the price table over them)."""
