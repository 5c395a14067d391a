"""Every suite's checks against known answers: each task's good answer passes, its bad one fails
(single-turn tasks through their check; agentic tasks through the test run on the final files)."""
from __future__ import annotations

import pytest

from cascade_extproc.offline.eval import SUITES, agent
from cascade_extproc.offline.eval.suites import agentic, paper20
from cascade_extproc.offline.eval.tasks import AgenticTask, Task

SINGLE = [t for tasks in SUITES.values() for t in tasks if isinstance(t, Task)]
AGENTIC = [t for tasks in SUITES.values() for t in tasks if isinstance(t, AgenticTask)]


def test_paper20_is_twenty_tasks_of_the_three_kinds():
    kinds = [t.kind for t in paper20.TASKS]
    assert len(paper20.TASKS) == 20
    assert {k: kinds.count(k) for k in set(kinds)} == {"code": 7, "math": 7, "instruct": 6}
    assert len({t.id for t in paper20.TASKS}) == 20


def test_task_ids_are_unique_across_suites():
    ids = [t.id for tasks in SUITES.values() for t in tasks]
    assert len(ids) == len(set(ids))
    assert len(agentic.TASKS) >= 4


@pytest.mark.parametrize("task", SINGLE, ids=[t.id for t in SINGLE])
def test_the_good_answer_passes(task):
    verdict = task.check(task.good)
    assert verdict.passed, verdict.detail


@pytest.mark.parametrize("task", SINGLE, ids=[t.id for t in SINGLE])
def test_the_bad_answer_fails_and_says_why(task):
    verdict = task.check(task.bad)
    assert not verdict.passed
    assert verdict.detail


@pytest.mark.parametrize("task", SINGLE, ids=[t.id for t in SINGLE])
def test_an_empty_or_off_topic_answer_fails(task):
    assert not task.check("").passed
    assert not task.check("I am not sure what you mean.").passed


def _final(task: AgenticTask, tmp_path, over: dict[str, str]) -> agent.Workspace:
    ws = agent.Workspace(tmp_path)
    ws.write_files(task.files)
    ws.write_files(over)
    return ws


@pytest.mark.parametrize("task", AGENTIC, ids=[t.id for t in AGENTIC])
def test_agentic_good_files_pass(task, tmp_path):
    verdict = agent.check(task, _final(task, tmp_path, task.good))
    assert verdict.passed, verdict.detail


@pytest.mark.parametrize("task", AGENTIC, ids=[t.id for t in AGENTIC])
def test_agentic_bad_or_untouched_files_fail(task, tmp_path):
    assert not agent.check(task, _final(task, tmp_path / "bad", task.bad)).passed
    assert not agent.check(task, _final(task, tmp_path / "untouched", {})).passed


def test_agentic_check_ignores_a_test_file_the_model_rewrote(tmp_path):
    """The check is the harness's copy, written after the model is done."""
    task = agentic.TASKS[0]
    ws = _final(task, tmp_path, {"_eval_check.py": "print('rigged')\n", "test_calc.py": "print('ok')\n"})
    assert not agent.check(task, ws).passed
