"""Shadow mode compares actions: the draft's answer against the strong model's (same kind, same
tool, same target; which is risky by the guard policy), counted per rule in the metrics and the
dashboard's data."""
from __future__ import annotations

from cascade_extproc.actions import Action, Policy
from cascade_extproc.extproc.paths.shadow import compare_actions
from cascade_extproc.metering.ledger import ActionComparison, Ledger
from cascade_extproc.metering.metrics import Metrics
from cascade_extproc.types import Block, Response, StopReason


def answer(*blocks: Block) -> Response:
    return Response(id="id", model="m", blocks=list(blocks), stop_reason=StopReason.END_TURN)


def use(name: str, **inp) -> Block:
    return Block("tool_use", id="t", name=name, input=inp)


def test_compare_actions_reads_both_answers_with_the_policy():
    policy = Policy()
    c = compare_actions(answer(use("Edit", file_path="a.py")), answer(use("Edit", file_path="a.py")), policy)
    assert (c.match, c.draft_risky, c.strong_risky) == ("same_target", True, True)
    c = compare_actions(answer(use("Read", file_path="a.py")), answer(use("Edit", file_path="a.py")), policy)
    assert (c.match, c.draft, c.strong) == ("different", Action("read_only", "Read", "a.py"),
                                            Action("file_edit", "Edit", "a.py"))
    assert (c.draft_risky, c.strong_risky) == (False, True)
    c = compare_actions(answer(use("Bash", command="pytest -q")), answer(use("Bash", command="ruff check")), policy)
    assert c.match == "same_tool"
    c = compare_actions(answer(Block("text", text="Done.")), answer(Block("text", text="All done here.")), policy)
    assert c.match == "same_target" and not c.strong_risky


def test_record_actions_counts_per_rule_in_metrics_and_dashboard():
    ledger = Ledger(Metrics())
    edit, read = Action("file_edit", "Edit", "a.py"), Action("read_only", "Read", "a.py")
    ledger.record_actions("after-read", ActionComparison("same_target", edit, edit, True, True))
    ledger.record_actions("after-read", ActionComparison("different", read, edit, False, True))  # a missed risk
    ledger.record_actions("after-bash", ActionComparison("same_kind", Action("shell", "Bash", "ls"),
                                                         Action("shell", "sh", "ls"), False, False))
    data = ledger.dashboard()["shadow"]["actions"]
    assert data["after-read"] == {"total": 2, "same_target": 1, "same_tool": 0, "same_kind": 0, "different": 1,
                                  "strong_risky": 2, "draft_risky": 1, "missed_risk": 1}
    assert data["after-bash"]["same_kind"] == 1 and data["after-bash"]["missed_risk"] == 0
    reg = ledger.metrics.registry
    assert reg.get_sample_value("cascade_shadow_actions_total", {"rule": "after-read", "match": "different"}) == 1
    assert reg.get_sample_value("cascade_shadow_risky_actions_total", {"rule": "after-read", "kind": "missed_risk"}) == 1
    assert reg.get_sample_value("cascade_shadow_risky_actions_total", {"rule": "after-read", "kind": "strong_risky"}) == 2
