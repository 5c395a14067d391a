"""A guarded skip's record: the metric says it was guarded, what the draft did and why it
escalated; so do the log line and the dashboard's data."""
from __future__ import annotations

from cascade_extproc.actions import Action
from cascade_extproc.metering.ledger import Ledger, RequestRecord
from cascade_extproc.metering.metrics import Metrics
from cascade_extproc.types import Path


def rec(path: Path, action: Action | None, escalation: str = "", guarded: bool = True) -> RequestRecord:
    return RequestRecord("r", "anthropic", path, "guard-rule", "claude-sonnet-5", guarded=guarded,
                         guard_action=action, escalation=escalation)


def test_guarded_records_are_counted_by_path_action_and_escalation():
    ledger = Ledger(Metrics())
    ledger.record(rec(Path.SKIPPED, Action("read_only", "Read", "a.py")))
    ledger.record(rec(Path.SKIPPED, Action("shell", "Bash", "pytest")))
    ledger.record(rec(Path.ACCEPTED, Action("file_edit", "Edit", "a.py"), "file_edit"))
    ledger.record(rec(Path.ENHANCED, Action("shell", "Bash", "git", True), "destructive_shell"))
    ledger.record(rec(Path.FALLBACK, None, "draft-failed"))
    ledger.record(rec(Path.SKIPPED, None, guarded=False))  # a plain skip: not counted
    reg = ledger.metrics.registry

    def n(path, action, escalation):
        return reg.get_sample_value("cascade_guarded_requests_total",
                                    {"path": path, "action": action, "escalation": escalation})
    assert n("skipped", "read_only", "none") == 1 and n("skipped", "shell", "none") == 1
    assert n("accepted", "file_edit", "file_edit") == 1 and n("enhanced", "shell", "destructive_shell") == 1
    assert n("fallback", "none", "draft-failed") == 1
    data = ledger.dashboard()["guarded"]
    assert data == {"requests": 5, "served": 2,
                    "escalated": {"file_edit": {"accepted": 1}, "destructive_shell": {"enhanced": 1},
                                  "draft-failed": {"fallback": 1}},
                    "actions": {"read_only": 1, "shell": 2, "file_edit": 1, "none": 1}}
    recent = ledger.dashboard()["recent"]
    assert [r["guard"] for r in recent] == ["", "draft-failed", "destructive_shell", "file_edit", "served", "served"]


def test_the_log_line_says_what_the_draft_did():
    r = rec(Path.ACCEPTED, Action("file_edit", "Edit", "/r/a.py"), "file_edit")
    assert r.log_fields()["guard"] == {"action": "file_edit", "tool": "Edit", "target": "/r/a.py",
                                       "escalation": "file_edit"}
    assert "guard" not in rec(Path.SKIPPED, None, guarded=False).log_fields()
    assert rec(Path.FALLBACK, None, "draft-failed").log_fields()["guard"]["action"] == ""
