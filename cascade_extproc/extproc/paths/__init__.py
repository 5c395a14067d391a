"""The paths a request can take, each one module behind a small protocol (base.py): skip.py (to
the relay, which serves the draft's answer), cascade.py (draft → verify, answered here),
guarded.py (the draft's answer judged by what it does: served, or verified), shadow.py (decide and record, change nothing). Direct and fallback stay in the shell
(extproc/exchange.py): every path falls back."""
from cascade_extproc.extproc.paths.base import (AnswerSide, Facts, FallBack, PathFactory, PathHandler, Pending, Report,
                                                Runtime, Taken, ToStrong)
from cascade_extproc.extproc.paths.cascade import CascadePath
from cascade_extproc.extproc.paths.guarded import GuardedPath
from cascade_extproc.extproc.paths.shadow import ShadowPath
from cascade_extproc.extproc.paths.skip import SkipPath

__all__ = ["AnswerSide", "CascadePath", "Facts", "FallBack", "GuardedPath", "PathFactory", "PathHandler", "Pending",
           "Report", "Runtime", "ShadowPath", "SkipPath", "Taken", "ToStrong"]
