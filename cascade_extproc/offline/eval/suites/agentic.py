"""agentic: small multi-step coding tasks. The harness is the agent runtime (agent.py): the model
gets read_file, write_file, edit_file and bash in a temporary directory, and the final files are
checked by the task's test, written into the directory once the model is done."""
from __future__ import annotations

from cascade_extproc.offline.eval.tasks import AgenticTask

TASKS: list[AgenticTask] = [
    AgenticTask(
        "agent-fix-bug",
        "The function add in calc.py is wrong: `python test_calc.py` fails. Fix calc.py so the test passes.",
        files={"calc.py": "def add(a, b):\n    return a - b\n",
               "test_calc.py": "from calc import add\n\nassert add(2, 3) == 5\nprint('ok')\n"},
        test="from calc import add\nassert add(2, 3) == 5\nassert add(-4, 4) == 0\n",
        good={"calc.py": "def add(a, b):\n    return a + b\n"}),
    AgenticTask(
        "agent-new-module",
        "Create a file greet.py with a function greet(name) that returns 'Hello, <name>!', "
        "for example greet('Ada') returns 'Hello, Ada!'.",
        files={"README.md": "A tiny project.\n"},
        test="from greet import greet\nassert greet('Ada') == 'Hello, Ada!'\nassert greet('x') == 'Hello, x!'\n",
        good={"greet.py": "def greet(name):\n    return f'Hello, {name}!'\n"},
        bad={"greet.py": "def greet(name):\n    return 'Hello ' + name\n"}),
    AgenticTask(
        "agent-config-port",
        "Change the port in config.json to 9090. Keep every other setting as it is and the file valid JSON.",
        files={"config.json": '{\n  "host": "127.0.0.1",\n  "port": 8000,\n  "debug": false\n}\n'},
        test="import json\nc = json.load(open('config.json'))\n"
             "assert c == {'host': '127.0.0.1', 'port': 9090, 'debug': False}, c\n",
        good={"config.json": '{\n  "host": "127.0.0.1",\n  "port": 9090,\n  "debug": false\n}\n'},
        bad={"config.json": '{\n  "port": 9090\n}\n'}),
    AgenticTask(
        "agent-add-median",
        "stats.py has mean(xs). Add a function median(xs) to stats.py that returns the median of a "
        "non-empty list of numbers (the mean of the two middle values for an even length). Keep mean working.",
        files={"stats.py": "def mean(xs):\n    return sum(xs) / len(xs)\n"},
        test="from stats import mean, median\nassert mean([1, 2, 3]) == 2\nassert median([3, 1, 2]) == 2\n"
             "assert median([4, 1, 3, 2]) == 2.5\nassert median([7]) == 7\n",
        good={"stats.py": "def mean(xs):\n    return sum(xs) / len(xs)\n\n\ndef median(xs):\n"
                          "    s = sorted(xs)\n    n = len(s)\n    mid = n // 2\n"
                          "    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2\n"},
        bad={"stats.py": "def mean(xs):\n    return sum(xs) / len(xs)\n\n\ndef median(xs):\n"
                         "    return sorted(xs)[len(xs) // 2]\n"}),
]
