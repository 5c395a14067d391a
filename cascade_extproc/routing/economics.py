"""Does a cascade pay for itself? The expected saving against calling the strong model (pure).

A cascade pays for the draft, then for a verify call that reads the same context as a direct
call would (from the prompt cache), plus the draft and instruction as fresh input. It saves the
strong model's output when the draft is accepted. So:

    saving = p·O·out_s − draft − (O + I)·in_s − p·V·out_s
    draft  = prefix·read_d + last·write_d + O·out_d

p accept rate, O expected output tokens, I instruction tokens, V verdict tokens; prefix = the
context before the last turn (cached at both providers in an agentic session), last = the last
turn (written to the cache). With a long cached context and a short answer the draft's context
and the verify's fresh input outweigh the output saved: the cascade must not be chosen there.
"""
from __future__ import annotations

from cascade_extproc.config import Economics
from cascade_extproc.metering.prices import PER_TOKEN, Price


def cascade_saving(context_tokens: int, last_turn_tokens: int, strong: Price, draft: Price,
                   eco: Economics) -> float:
    """Expected USD saved by cascading instead of calling the strong model (negative: a loss)."""
    last = min(last_turn_tokens, context_tokens)
    prefix = context_tokens - last
    out, p = eco.expected_output_tokens, eco.accept_rate
    draft_cost = prefix * draft.cache_read + last * draft.cache_write + out * draft.output
    verify_extra = (out + eco.instruction_tokens) * strong.input + p * eco.verdict_tokens * strong.output
    return PER_TOKEN * (p * out * strong.output - draft_cost - verify_extra)
