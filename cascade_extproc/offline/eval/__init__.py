"""The quality harness: suites of tasks with executable checks, run paired against the strong
model alone and through the cascade stack (`cascade-extproc eval`, docs/quality.md)."""
from cascade_extproc.offline.eval.harness import SUITES, add_arguments, main
from cascade_extproc.offline.eval.runner import Row, Runner, Target

__all__ = ["SUITES", "Row", "Runner", "Target", "add_arguments", "main"]
