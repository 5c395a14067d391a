"""The suites shipped with the harness, each a module with TASKS: paper20 and agentic."""
from cascade_extproc.offline.eval.suites import agentic, paper20

__all__ = ["agentic", "paper20"]
