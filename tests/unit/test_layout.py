"""The package's layout, as docs/architecture.md draws it: the import graph (read with ast, nothing
imported) has no cycles, and every layer imports only what the map lets it. Each rule is proven
to bite: a violation seeded into a copy of the package is reported."""
from __future__ import annotations

import ast
import re
import fnmatch
import shutil
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "cascade_extproc"

# Each layer, and what of ours it may import besides itself (a layer is a top-level module or a
# folder; "metering.prices" names one module of a folder). Top to bottom: entry points, the
# composition root, the Envoy side, the paths, the providers, the pure parts, the leaves.
MAY_IMPORT: dict[str, set[str]] = {
    "__main__": {"cli"},
    "cli": {"app", "config", "types", "codecs", "routing", "metering", "offline", "deploy", "sim"},
    "app": {"admin", "reload", "extproc", "cascade", "providers", "routing", "metering", "codecs", "actions",
            "config", "headers", "types", "_proto"},
    "reload": {"deploy", "metering", "config", "types"},  # the bootstrap says what needs a restart
    "admin": {"metering"},
    "extproc": {"cascade", "providers", "routing", "metering", "codecs", "actions", "config", "headers", "types",
                "_proto"},
    "cascade": {"providers", "codecs", "actions", "config", "headers", "types"},
    "providers": {"codecs", "config", "headers", "types"},
    "routing": {"metering.prices", "metering.cache", "actions", "config", "types"},
    "metering": {"actions", "config", "types"},
    "codecs": {"types"},
    "offline": {"routing", "metering", "codecs", "actions", "config", "types"},
    "deploy": {"config", "headers", "types"},
    "sim": set(),  # written against the public wire formats, so it checks our codecs independently
    "actions": {"types"},  # what an answer does: a leaf the paths, routing, replay and metering share
    "config": {"types"},
    "headers": {"types"},
    "types": set(),
    "_proto": set(),
}
# `up` runs the whole local stack: the server (app) with simulated providers, and Envoy.
MODULE_MAY_IMPORT = {"deploy.stack": {"app", "sim"}}
# Third-party packages only some layers may import: gRPC and the generated code are the Envoy side's.
# The OpenTelemetry SDK is metering's (metering/tracing.py): the rest reaches traces through it.
FOREIGN = {"grpc": {"extproc", "app", "_proto"}, "grpc_health": {"extproc", "app"},
           "google.protobuf": {"extproc", "_proto"}, "opentelemetry": {"metering"}}
OURS = f"{PACKAGE}."


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name → file, for every .py file of the package under `root`."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Everything `name` imports, anywhere in the file (a function's lazy import counts too): our
    modules by dotted name, others by their top-level package (or google.protobuf)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from pkg import module` imports the module
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {_foreign(m) if not (m == PACKAGE or m.startswith(OURS)) else m for m in out}


def _foreign(module: str) -> str:
    return "google.protobuf" if module.startswith("google.protobuf") else module.split(".")[0]


def graph(root: Path) -> dict[str, set[str]]:
    mods = modules(root)
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def layer(module: str) -> str:
    return module[len(OURS):].split(".")[0] if module.startswith(OURS) else "__init__"


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles among our modules (strongly connected components, Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(g.get(v, ())):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in g.get(v, ()):
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def violations(g: dict[str, set[str]]) -> list[str]:
    out = [f"import cycle: {' → '.join(c)}" for c in cycles(g)]
    for module, targets in sorted(g.items()):
        here = layer(module)
        if here == "__init__":
            continue  # the package's own __init__ holds a docstring only
        if here not in MAY_IMPORT:
            out.append(f"{module}: not in any layer of the map (tests/unit/test_layout.py, docs/architecture.md)")
            continue
        short = module[len(OURS):]
        allowed = MAY_IMPORT[here] | MODULE_MAY_IMPORT.get(short, set()) | {here}
        for target in sorted(targets):
            if target.startswith(OURS):
                name = target[len(OURS):]
                if layer(target) not in allowed and not any(name == a or name.startswith(a + ".") for a in allowed):
                    out.append(f"{module} imports {target}: {here} may import only {sorted(allowed - {here})}")
            elif target == PACKAGE:
                out.append(f"{module} imports {PACKAGE} itself")
            elif target in FOREIGN and here not in FOREIGN[target]:
                out.append(f"{module} imports {target}: only {sorted(FOREIGN[target])} may")
    return out


def test_the_package_has_no_cycles_and_imports_only_downward():
    assert violations(graph(ROOT)) == []


def test_every_module_is_in_the_map():
    layers = {layer(m) for m in graph(ROOT)} - {"__init__"}
    assert layers == set(MAY_IMPORT), layers ^ set(MAY_IMPORT)


SEEDS = [  # (file, line added, what the report must say)
    ("codecs/sse.py", "from cascade_extproc.extproc import mutations", "cascade_extproc.codecs.sse imports "
     "cascade_extproc.extproc.mutations"),
    ("codecs/sse.py", "from ..extproc import mutations", "cascade_extproc.codecs.sse imports "
     "cascade_extproc.extproc.mutations"),
    ("config.py", "def _check_rules():\n    from cascade_extproc.routing.rules import RuleSet",
     "cascade_extproc.config imports cascade_extproc.routing.rules"),
    ("metering/prices.py", "from cascade_extproc.routing import features",
     "cascade_extproc.metering.prices imports cascade_extproc.routing.features"),
    ("routing/router.py", "from cascade_extproc.offline import replay", "routing.router imports cascade_extproc.offline"),
    ("extproc/servicer.py", "from cascade_extproc.deploy.envoy_config import build", "extproc.servicer imports "
     "cascade_extproc.deploy.envoy_config"),
    ("cascade/run.py", "from cascade_extproc.extproc import mutations", "cascade.run imports cascade_extproc.extproc"),
    ("cascade/run.py", "import grpc", "cascade_extproc.cascade.run imports grpc: only"),
    ("providers/http.py", "from cascade_extproc._proto import external_processor_pb2",
     "providers.http imports cascade_extproc._proto"),
    ("sim/server.py", "from cascade_extproc.types import Api", "cascade_extproc.sim.server imports cascade_extproc.types"),
    ("types.py", "from cascade_extproc.headers import API_PATH", "cascade_extproc.types imports cascade_extproc.headers"),
    ("metering/metrics.py", "from cascade_extproc.metering import ledger",
     "import cycle: cascade_extproc.metering.ledger → cascade_extproc.metering.metrics"),
    ("newpart.py", "", "cascade_extproc.newpart: not in any layer of the map"),
    ("actions.py", "from cascade_extproc.config import Config", "cascade_extproc.actions imports cascade_extproc.config"),
    ("cascade/run.py", "from opentelemetry import trace", "cascade_extproc.cascade.run imports opentelemetry: only"),
    ("actions.py", "from cascade_extproc.config import Config", "cascade_extproc.actions imports cascade_extproc.config"),
]


@pytest.mark.parametrize("file, line, report", SEEDS, ids=[f"{f}:{line.splitlines()[-1] if line else 'new'}"
                                                           for f, line, _ in SEEDS])
def test_a_seeded_violation_is_reported(tmp_path, file, line, report):
    shutil.copytree(ROOT / PACKAGE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    seeded = tmp_path / PACKAGE / file
    seeded.write_text((seeded.read_text() if seeded.exists() else "") + "\n" + line + "\n")
    found = violations(graph(tmp_path))
    assert any(report in v for v in found), found


def test_init_files_only_re_export():
    """An __init__.py holds a docstring, imports and __all__: the code lives in the modules."""
    for path in (ROOT / PACKAGE).rglob("__init__.py"):
        if path.parent.name == "_proto":
            continue
        for node in ast.parse(path.read_text()).body:
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            all_ = isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] == ["__all__"]
            assert docstring or all_ or isinstance(node, (ast.Import, ast.ImportFrom)), \
                f"{path.relative_to(ROOT)}:{node.lineno}: not a re-export"


def test_every_data_file_ships_in_the_package():
    """Files the package reads at run time (defaults, the dashboard, Envoy's Lua filters) must be
    named in pyproject's package-data, or an installed package would not have them."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][PACKAGE]
    for path in (ROOT / PACKAGE).rglob("*"):
        rel = path.relative_to(ROOT / PACKAGE).as_posix()
        if path.is_file() and path.suffix not in (".py", ".pyi", ".pyc") and "__pycache__" not in rel:
            assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not in package-data {globs}"


def test_every_module_ships_in_the_package():
    """Every folder of modules is a regular package that setuptools finds (a folder without an
    __init__.py would import from a checkout, and be missing from the wheel)."""
    import setuptools

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    found = {p.replace(".", "/") for p in setuptools.find_packages(str(ROOT), include=include)}
    for path in (ROOT / PACKAGE).rglob("*.py"):
        assert path.parent.relative_to(ROOT).as_posix() in found, f"{path.relative_to(ROOT)} would not ship"


ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _named(cell: str) -> set[str]:
    """`metering/prices.py` → metering.prices, `extproc/` → extproc, `app` → app."""
    return {re.sub(r"/$|\.py$", "", name).replace("/", ".") for name in re.findall(r"`([^`]+)`", cell)}


def test_the_docs_table_is_the_map_this_test_enforces():
    """docs/architecture.md's table of folders says what each may import: the same as MAY_IMPORT."""
    rows = [line.split("|")[1:-1] for line in ARCHITECTURE.read_text().splitlines() if line.startswith("| `")]
    documented = {}
    for name, _owns, may in rows:
        (layer_name,) = _named(name)
        documented[layer_name] = _named(may.split(";")[0])
    assert documented == MAY_IMPORT


def test_the_docs_tree_names_every_module():
    """docs/architecture.md's tree of modules (under ## Modules) is the package's, module for module."""
    text = ARCHITECTURE.read_text()
    block = text[text.index("## Modules"):].split("```")[1]
    documented, stack = set(), []
    for line in block.splitlines():
        m = re.match(r"( *)(\S+)", line)
        if not m or not m.group(2).endswith(("/", ".py")):
            continue  # a description's continuation
        indent, name = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "".join(d for _, d in stack) + name
        if name.endswith("/"):
            stack.append((indent, name))
        else:
            documented.add(path)
    actual = {p.relative_to(ROOT).as_posix() for p in (ROOT / PACKAGE).rglob("*.py")
              if p.name != "__init__.py" and "_proto" not in p.parts}
    assert documented == actual
