"""actions.py: what an answer does, and which actions the guard policy calls risky."""
from __future__ import annotations

import pytest

from cascade_extproc import actions
from cascade_extproc.actions import Action, Policy, classify, classify_json, classify_tool_call, is_risky, program
from cascade_extproc.config import ACTION_KINDS, ConfigError, GuardConfig, parse
from cascade_extproc.types import Block


@pytest.mark.parametrize("name, inp, kind, target", [
    ("Edit", {"file_path": "/r/a.py", "old_string": "x", "new_string": "y"}, "file_edit", "/r/a.py"),
    ("Write", {"file_path": "/r/b.md", "content": ""}, "file_edit", "/r/b.md"),
    ("MultiEdit", {"file_path": "/r/c.py", "edits": []}, "file_edit", "/r/c.py"),
    ("NotebookEdit", {"notebook_path": "/r/n.ipynb"}, "file_edit", "/r/n.ipynb"),
    ("edit_file", {"path": "src/x.ts"}, "file_edit", "src/x.ts"),  # OpenAI-style names
    ("apply_patch", {"input": "*** Begin Patch"}, "file_edit", ""),
    ("write-file", {"filename": "y"}, "file_edit", "y"),
    ("Read", {"file_path": "/r/a.py"}, "read_only", "/r/a.py"),
    ("Grep", {"pattern": "x"}, "read_only", ""),
    ("Glob", {"pattern": "**"}, "read_only", ""),
    ("LS", {"path": "/r"}, "read_only", "/r"),
    ("WebFetch", {"url": "u"}, "read_only", ""),
    ("TodoWrite", {"todos": []}, "read_only", ""),
    ("read_file", {"path": "a"}, "read_only", "a"),
    ("Task", {"subagent_type": "general-purpose", "prompt": "p"}, "subagent", "general-purpose"),
    ("Agent", {}, "subagent", ""),
    ("mcp__github__create_issue", {}, "other", ""),
    ("ExitPlanMode", {"plan": "p"}, "other", ""),
])
def test_each_tool_has_its_kind_and_target(name, inp, kind, target):
    a = classify_tool_call(name, inp)
    assert (a.kind, a.tool, a.target, a.destructive) == (kind, name, target, False)


@pytest.mark.parametrize("command", [
    "rm -rf build", "rm -fr /", "rm -r dist", "rm --recursive x", "cd /r && rm -rf node_modules",
    "git push --force origin main", "git push -f", "git push origin +main", "git push --force-with-lease",
    "git reset --hard HEAD~1", "git clean -fdx", "git checkout -- .", "git restore .", "git branch -D topic",
    "git stash drop", "npm publish", "pnpm publish --access public", "yarn publish", "twine upload dist/*",
    "cargo publish", "uv publish", "psql -c 'DROP TABLE users'", "sqlite3 db 'drop database x'",
    "mkfs.ext4 /dev/sdb1", "dd if=/dev/zero of=/dev/sda", "find . -name '*.pyc' -delete", "kubectl delete ns prod",
    "terraform destroy",
])
def test_destructive_commands(command):
    a = classify_tool_call("Bash", {"command": command})
    assert a.kind == "shell" and a.destructive, command


@pytest.mark.parametrize("command, prog", [
    ("pytest -q tests", "pytest"), ("cd /r && npm test", "npm"), ("FOO=1 BAR=2 make all", "make"),
    ("sudo /usr/bin/apt-get install x", "apt-get"), ("git status", "git"), ("git push origin main", "git"),
    ("ls -la | head", "ls"), ("git log --format=%H -n 3", "git"), ("rm_old_logs.sh", "rm_old_logs.sh"),
    ("grep -rf patterns.txt .", "grep"), ("git reset HEAD file", "git"), ("git checkout main", "git"),
])
def test_safe_commands_and_their_program(command, prog):
    a = classify_tool_call("Bash", {"command": command})
    assert (a.kind, a.target, a.destructive) == ("shell", prog, False), command


def test_program_of_an_empty_or_odd_command():
    assert program("") == "" and program("cd /x") == "" and program("X=1") == ""
    assert classify_tool_call("Bash", {"command": None}) == Action("shell", "Bash", "", False)
    assert classify_tool_call("local_shell", {"command": ["rm", "-rf", "/tmp/x"]}).destructive


def test_an_answer_is_its_riskiest_call_or_text():
    read = Block("tool_use", id="1", name="Read", input={"file_path": "a"})
    edit = Block("tool_use", id="2", name="Edit", input={"file_path": "b"})
    bash = Block("tool_use", id="3", name="Bash", input={"command": "ls"})
    nuke = Block("tool_use", id="4", name="Bash", input={"command": "rm -rf ."})
    task = Block("tool_use", id="5", name="Task", input={})
    text = Block("text", text="done")
    assert classify([text]) == Action("text")
    assert classify([]) == Action("text")
    assert classify([text, read]).kind == "read_only"
    assert classify([read, bash]).kind == "shell"
    assert classify([bash, edit, read]).target == "b"
    assert classify([edit, task]).kind == "subagent"
    assert classify([task, nuke, edit]).destructive
    assert classify_json([{"type": "text", "text": "x"}, {"type": "tool_use", "name": "Write",
                                                         "input": {"file_path": "f"}}]) == Action("file_edit", "Write", "f")
    assert classify_json("just text") == Action("text")


def test_is_risky_by_kind_and_destructiveness():
    edit, task = Action("file_edit", "Edit", "a"), Action("subagent", "Task")
    ls, rm = Action("shell", "Bash", "ls"), Action("shell", "Bash", "rm", True)
    read, text = Action("read_only", "Read"), Action("text")
    assert [is_risky(a) for a in (edit, task, ls, rm, read, text)] == [True, True, False, True, False, False]
    assert not is_risky(rm, destructive_shell=False)
    assert is_risky(text, frozenset({"text"})) and is_risky(ls, frozenset({"shell"}))


def test_the_policy_follows_the_config():
    default = Policy.from_config(parse({}).guard)
    assert default.risky_kinds == {"file_edit", "subagent"} and default.destructive_shell
    assert default.patterns == actions.DESTRUCTIVE
    cfg = parse({"guard": {"risky_actions": ["file_edit"], "text_is_risky": True,
                           "destructive_patterns": [r"\bmake\s+deploy\b"], "extra_destructive_patterns": ["kaboom"]}}).guard
    p = Policy.from_config(cfg)
    assert p.risky_kinds == {"file_edit", "text"}
    assert p.is_risky(p.classify_tool_call("Bash", {"command": "make deploy"}))
    assert p.is_risky(p.classify_tool_call("Bash", {"command": "./kaboom"}))
    assert not p.is_risky(p.classify_tool_call("Bash", {"command": "rm -rf x"}))  # the built-ins replaced
    assert not p.is_risky(p.classify([Block("tool_use", name="Task")]))
    assert p.is_risky(p.classify([Block("text", text="hi")]))


@pytest.mark.parametrize("guard, key", [
    ({"risky_actions": ["file_edits"]}, "guard.risky_actions[0]"),
    ({"on_risky": "serve"}, "guard.on_risky"),
    ({"destructive_patterns": ["("]}, "guard.destructive_patterns[0]"),
    ({"extra_destructive_patterns": ["ok", "[x"]}, "guard.extra_destructive_patterns[1]"),
    ({"risky": []}, "guard.risky"),
])
def test_a_bad_guard_config_names_its_key(guard, key):
    with pytest.raises(ConfigError) as exc:
        parse({"guard": guard})
    assert exc.value.key == key


def test_the_config_knows_the_same_kinds():
    assert ACTION_KINDS == actions.KINDS
    assert set(GuardConfig().risky_actions) == actions.RISKY_KINDS
