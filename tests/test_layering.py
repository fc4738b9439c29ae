"""The package's imports flow one way (docs/architecture.md):

    entry points -> training, evaluation, inference, convert -> config -> data, models
                 -> errors, atomic, compat, native_logs, packaged_configs

Read from the source with `ast`, so that an import inside a function (a lazy import) counts
as much as one at the top of a module. Imports under `if TYPE_CHECKING:` do not count: they
never run, and give type hints only (models/factory.py and data/splits.py name the config
that way, as config.py imports data/ and models/).

An entry point is a module that no other module imports: the commands (the cli/ package,
cli_help.py, a package's __main__.py, the targets of pyproject.toml's [project.scripts], so
that `python -m pspnet_tf.data.verify` stays a command where its users know it) and
pspnet_tf/__init__.py, the public API. Being imported by nothing, an entry point cannot
close an import cycle wherever its file sits.
"""

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "pspnet_tf"

ENTRY_POINTS = "entry points"
# Each part of the package and its layer: a part may import parts of lower layers, and parts
# of its own layer only as PEER_IMPORTS allows.
LAYERS = {
    ENTRY_POINTS: 4,
    "training": 3, "evaluation": 3, "inference": 3, "convert": 3,
    "config": 2,
    "data": 1, "models": 1,
    "errors": 0, "atomic": 0, "compat": 0, "native_logs": 0, "packaged_configs": 0,
}
# Imports within one layer (importer, imported); acyclic, so the whole graph is.
PEER_IMPORTS = {
    ("training", "evaluation"),  # validation during training
    ("training", "inference"),  # the validation predictor, final_model.keras
    ("training", "convert"),  # --pretrained
    ("inference", "convert"),  # --model=<published name>
    ("atomic", "errors"),  # a failed write's EnvironmentFault
}
# Entry points besides cli/, __main__.py and pyproject's scripts: the public API, --help.
COMMAND_MODULES = {f"{PACKAGE}", f"{PACKAGE}.cli_help"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under `if TYPE_CHECKING:`."""
    found, pending = [], [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        children = (node.orelse if isinstance(node, ast.If) and _type_checking_only(node)
                    else ast.iter_child_nodes(node))
        pending.extend(children)
    return found


def imported_modules(path: Path, root: Path, modules: set[str]) -> set[str]:
    """The package's modules that the file at `path` imports (`from a import b` names a.b
    when that is a module, else a)."""
    name = module_name(path, root)
    package = name if is_package(path) else name.rpartition(".")[0]
    found = set()
    for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of an attribute path
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def console_scripts() -> set[str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return {target.partition(":")[0] for target in pyproject["project"]["scripts"].values()}


def part_of(module: str, entry_points: set[str]) -> str:
    """The layered part a module belongs to: a subpackage or a top-level module."""
    if module in entry_points:
        return ENTRY_POINTS
    return module.split(".")[1]


def import_graph(root: Path) -> tuple[dict[str, set[str]], set[str]]:
    """{module: the package modules it imports} and the entry points, for the package at
    `root` (a folder named pspnet_tf)."""
    files = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    modules = set(files)
    entry_points = {name for name in modules
                    if name in COMMAND_MODULES or name.startswith(f"{PACKAGE}.cli.")
                    or name == f"{PACKAGE}.cli" or name.endswith(".__main__")}
    entry_points |= console_scripts() & modules
    graph = {name: imported_modules(path, root, modules) for name, path in files.items()}
    return graph, entry_points


def layering_violations(root: Path) -> list[str]:
    """Every import that goes against LAYERS and PEER_IMPORTS, as readable lines."""
    graph, entry_points = import_graph(root)
    problems = []
    for importer, imported in sorted(graph.items()):
        source = part_of(importer, entry_points)
        for target in sorted(imported):
            destination = part_of(target, entry_points)
            if source == destination:
                continue
            if destination == ENTRY_POINTS:
                problems.append(f"{importer} imports the entry point {target}")
            elif source not in LAYERS or destination not in LAYERS:
                problems.append(f"{importer} -> {target}: add {source!r} or {destination!r} "
                                "to LAYERS")
            elif LAYERS[source] < LAYERS[destination]:
                problems.append(f"{importer} ({source}) imports the upper layer's {target}")
            elif (LAYERS[source] == LAYERS[destination]
                  and (source, destination) not in PEER_IMPORTS):
                problems.append(f"{importer} ({source}) imports {target} ({destination}), "
                                "a peer import not in PEER_IMPORTS")
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The cycles a depth-first search meets in a directed graph (none: it is acyclic)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def package_cycles(root: Path) -> list[list[str]]:
    """Cycles among the layered parts (entry points aside, which nothing imports)."""
    graph, entry_points = import_graph(root)
    edges: dict[str, set[str]] = {}
    for importer, imported in graph.items():
        source = part_of(importer, entry_points)
        edges.setdefault(source, set()).update(
            part for part in (part_of(target, entry_points) for target in imported)
            if part != source)
    return cycles(edges)


def training_importers(root: Path) -> list[str]:
    """Modules outside training/ and cli/ that import training/: training-only code
    (strategy, callbacks, checkpoints, run dir) is for train.py alone."""
    graph, _ = import_graph(root)
    training, cli = f"{PACKAGE}.training", f"{PACKAGE}.cli"
    return sorted(importer for importer, imported in graph.items()
                  if not importer.startswith((training, cli))
                  and any(target.startswith(training) for target in imported))


ROOT = REPO / PACKAGE


def test_every_import_goes_down_the_layers():
    assert layering_violations(ROOT) == []


def test_no_cycles_between_the_packages():
    assert package_cycles(ROOT) == []


def test_only_training_and_cli_import_training():
    assert training_importers(ROOT) == []


def test_the_peer_imports_allowed_are_acyclic_and_within_one_layer():
    assert all(LAYERS[a] == LAYERS[b] for a, b in PEER_IMPORTS)
    edges: dict[str, set[str]] = {}
    for importer, imported in PEER_IMPORTS:
        edges.setdefault(importer, set()).add(imported)
    assert cycles(edges) == []


def test_every_module_is_in_a_layer():
    graph, entry_points = import_graph(ROOT)
    assert {part_of(module, entry_points) for module in graph} <= set(LAYERS)
    assert f"{PACKAGE}.cli.evaluate" in entry_points and f"{PACKAGE}.data.verify" in entry_points


@pytest.mark.parametrize("source, expected", [
    ("from pspnet_tf.training.trainer import build_model\n", "pspnet_tf.training.trainer"),
    ("def f():\n    from pspnet_tf.training import trainer\n", "pspnet_tf.training.trainer"),
    ("from ..training import trainer\n", "pspnet_tf.training.trainer"),
    ("import pspnet_tf.training.trainer as t\n", "pspnet_tf.training.trainer"),
    ("import typing\nif typing.TYPE_CHECKING:\n    pass\nelse:\n"
     "    from pspnet_tf.training import trainer\n", "pspnet_tf.training.trainer"),
])
def test_the_scan_sees_every_form_of_import(tmp_path, source, expected):
    """Lazy, relative and aliased imports count; the checks above rely on it."""
    root = tmp_path / PACKAGE
    for package in (root, root / "training", root / "models"):
        package.mkdir(exist_ok=True)
        (package / "__init__.py").write_text("")
    (root / "training" / "trainer.py").write_text("")
    (root / "models" / "factory.py").write_text(source)
    graph, _ = import_graph(root)
    assert graph[f"{PACKAGE}.models.factory"] == {expected}
    assert layering_violations(root) == [
        f"{PACKAGE}.models.factory (models) imports the upper layer's {expected}"]
    assert training_importers(root) == [f"{PACKAGE}.models.factory"]


def test_type_checking_imports_do_not_count(tmp_path):
    root = tmp_path / PACKAGE
    for package in (root, root / "models"):
        package.mkdir()
        (package / "__init__.py").write_text("")
    (root / "config.py").write_text("")
    (root / "models" / "factory.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from pspnet_tf.config import ExperimentConfig\n")
    assert import_graph(root)[0][f"{PACKAGE}.models.factory"] == set()
