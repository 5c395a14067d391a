"""`cascade-extproc eval` end to end against the simulated providers: the baseline arm on the strong
provider itself, the cascade arm through a real stack (Envoy, the server), costs from the stack's
ledger; the sweep of router settings on a running stack, which reloads each one."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import yaml

from cascade_extproc import cli
from cascade_extproc.offline.eval import SUITES
from stack import stack_fixture

PATHS = {"skipped", "accepted", "enhanced", "direct", "fallback"}
# A stack of its own that reloads its config quickly: the sweep rewrites it.
sweep_stack = stack_fixture("eval-sweep", extra_config={"reload_interval_s": 0.1})


def _rows(out_dir):
    return [json.loads(line) for line in (out_dir / "rows.jsonl").read_text().splitlines()]


def test_paper20_paired_against_the_simulated_providers(stack, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["eval", "--suite", "paper20", "--baseline", stack.sims["strong_anthropic"].url,
                     "--target", stack.anthropic_url, "--target-admin", f"http://127.0.0.1:{stack.admin_port}",
                     "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# Eval: paper20") and "## Paired with `baseline`" in printed
    assert printed == (out / "report.md").read_text()
    rows = _rows(out)
    assert len(rows) == 40 and {r["arm"] for r in rows} == {"baseline", "cascade"}
    base = {r["task"]: r for r in rows if r["arm"] == "baseline"}
    casc = {r["task"]: r for r in rows if r["arm"] == "cascade"}
    assert list(base) == list(casc) == [t.id for t in SUITES["paper20"]]  # paired: same tasks, same order
    for r in base.values():  # the provider itself: no path header, priced from its usage
        assert r["paths"] == ["strong"] and r["cost_source"] == "usage" and r["cost_usd"] > 0
        assert r["errors"] == [] and r["steps"] == 1
    for r in casc.values():  # the stack: its path, its ledger's cost (draft and verify calls included)
        assert len(r["paths"]) == 1 and r["paths"][0] in PATHS, r
        assert r["cost_source"] == "ledger" and r["cost_usd"] > 0 and r["errors"] == []
    # the router sends short questions to the draft, and the longer coding prompts through a cascade
    assert {r["paths"][0] for r in casc.values()} >= {"skipped", "accepted"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arms"]["cascade"]["tasks"] == 20 and summary["paired"]["cascade"]["n"] == 20
    assert 0 < summary["arms"]["cascade"]["draft_use_rate"] <= 1
    ET.fromstring((out / "cost_quality.svg").read_text())


def test_agentic_over_the_openai_api(stack, tmp_path, capsys):
    """The agent runtime through the stack on the OpenAI API: the simulated model answers in text,
    so each task ends after one step, unsolved; the plumbing is what this shows."""
    out = tmp_path / "out"
    code = cli.main(["eval", "--suite", "agentic", "--api", "openai", "--baseline", stack.sims["strong_openai"].url,
                     "--target", stack.openai_url, "--out", str(out), "--quiet", "--limit", "2"])
    assert code == 0
    rows = _rows(out)
    assert [(r["arm"], r["stopped"], r["passed"]) for r in rows] == [
        ("baseline", "answered", False), ("baseline", "answered", False),
        ("cascade", "answered", False), ("cascade", "answered", False)]
    assert all(r["paths"][0] in PATHS for r in rows if r["arm"] == "cascade")
    assert "## Tasks" in capsys.readouterr().out


def test_a_sweep_of_router_settings_on_a_running_stack(sweep_stack, tmp_path, capsys):
    original = sweep_stack.config_path.read_text()
    data = yaml.safe_load(original)
    settings = {}
    for label, rules in {"all-skipped": [{"name": "everything", "route": "skipped"}],
                         "all-direct": [{"name": "everything", "route": "direct"}]}.items():
        path = tmp_path / f"{label}.yaml"
        path.write_text(yaml.safe_dump({**data, "router": {"rules": rules}}))
        settings[label] = path
    out = tmp_path / "out"
    code = cli.main(["eval", "--suite", "paper20", "--limit", "3", "--quiet", "--out", str(out),
                     "--baseline", sweep_stack.sims["strong_anthropic"].url, "--target", sweep_stack.anthropic_url,
                     "--target-admin", f"http://127.0.0.1:{sweep_stack.admin_port}",
                     "--stack-config", str(sweep_stack.config_path),
                     *[a for label, p in settings.items() for a in ("--setting", f"{label}={p}")]])
    assert code == 0
    rows = _rows(out)
    assert {r["arm"]: r["paths"][0] for r in rows} == {"baseline": "strong", "all-skipped": "skipped",
                                                       "all-direct": "direct"}
    assert all(r["paths"] == ["skipped"] for r in rows if r["arm"] == "all-skipped")
    assert all(r["paths"] == ["direct"] for r in rows if r["arm"] == "all-direct")
    svg = ET.fromstring((out / "cost_quality.svg").read_text())
    arms = {c.get("data-arm") for c in svg.iter("{http://www.w3.org/2000/svg}circle")}
    assert arms == {"baseline", "all-skipped", "all-direct"}
    assert sweep_stack.config_path.read_text() == original  # the stack's own config is back
    capsys.readouterr()
