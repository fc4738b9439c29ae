"""The package's imports flow one way (docs/architecture.md):

    entry points -> training, evaluation, inference, convert -> config -> data, models
                 -> errors, atomic, compat, packaged_configs, download, torch_io, hubs

Read from the source with `ast`, so that an import inside a function (a lazy import) counts
as much as one at the top of a module. Imports under `if TYPE_CHECKING:` do not count: they
never run, and give type hints only (models/factory.py and data/splits.py name the config
that way, as config.py imports data/ and models/).

An entry point is a module that no other module imports: the commands (the cli/ package,
whose modules the launcher pspnet_tf_launch runs for pyproject.toml's [project.scripts])
and pspnet_tf/__init__.py, the public API. Being imported by nothing, an entry point cannot close an import cycle wherever its
file sits. Only cli/ and config.py (its flag generation) import absl.flags, and no package
has an import cycle among its own modules either.
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
    "errors": 0, "atomic": 0, "compat": 0, "packaged_configs": 0, "download": 0,
    "torch_io": 0, "hubs": 0,
}
# Imports within one layer (importer, imported); acyclic, so the whole graph is.
PEER_IMPORTS = {
    ("training", "evaluation"),  # validation during training
    ("training", "inference"),  # the validation predictor, final_model.keras
    ("training", "convert"),  # --pretrained
    ("evaluation", "inference"),  # the report's overlays of the worst images
    ("models", "data"),  # the preprocessor shares the data pipeline's resize and normalisation
    ("atomic", "errors"),  # a failed write's EnvironmentFault
    ("download", "errors"), ("torch_io", "errors"), ("hubs", "errors"),  # one-line errors
}
# The entry point besides cli/: the public API.
PUBLIC_API = f"{PACKAGE}"
LAUNCHER = "pspnet_tf_launch"  # beside the package: it runs before `import pspnet_tf`
# The modules that may import absl.flags: the command line and the config's flag generation.
FLAG_MODULES = (f"{PACKAGE}.cli", f"{PACKAGE}.config")


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


def is_cli(module: str) -> bool:
    return module == f"{PACKAGE}.cli" or module.startswith(f"{PACKAGE}.cli.")


def console_scripts() -> set[str]:
    """"module:function" of every console script."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return set(pyproject["project"]["scripts"].values())


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
                    if name == PUBLIC_API or is_cli(name)}
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


def flag_importers(root: Path) -> list[str]:
    """Modules outside cli/ and config.py that import absl.flags."""
    found = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        if name.startswith(FLAG_MODULES):
            continue
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [f"{node.module}.{alias.name}" for alias in node.names])
            if any(name == "absl.flags" or name.startswith("absl.flags.") for name in names):
                found.append(name)
                break
    return found


def module_cycles(root: Path) -> list[list[str]]:
    """Cycles among the modules of one part (a package's modules importing each other)."""
    graph, entry_points = import_graph(root)
    edges = {importer: {target for target in imported
                        if part_of(target, entry_points) == part_of(importer, entry_points)}
             for importer, imported in graph.items()}
    return cycles(edges)


def misplaced_entry_points(root: Path) -> list[str]:
    """Console scripts that are not the launcher's, launcher functions without their command
    in cli/, and __main__ modules (a command runs through the launcher alone)."""
    graph, _ = import_graph(root)
    problems = [f"the console script {target} is not {LAUNCHER}'s"
                for target in sorted(console_scripts()) if target.partition(":")[0] != LAUNCHER]
    problems += [f"{LAUNCHER}:{name} has no command {PACKAGE}.cli.{name}"
                 for name in sorted(target.partition(":")[2] for target in console_scripts())
                 if f"{PACKAGE}.cli.{name}" not in graph]
    problems += [f"{name} runs a command outside the launcher"
                 for name in sorted(graph) if name.endswith(".__main__")]
    return problems


def launcher_imports() -> list[str]:
    """What the launcher's modules import of pspnet_tf at import time (nothing may: it must
    run before TensorFlow loads)."""
    found = []
    for path in sorted((REPO / LAUNCHER).glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:  # module level only: commands are imported when they run
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == PACKAGE:
                found.append(f"{path.name}: {node.module}")
            elif isinstance(node, ast.Import):
                found += [f"{path.name}: {alias.name}" for alias in node.names
                          if alias.name.split(".")[0] in (PACKAGE, "tensorflow", "keras")]
    return found


ROOT = REPO / PACKAGE


def test_every_import_goes_down_the_layers():
    assert layering_violations(ROOT) == []


def test_no_cycles_between_the_packages():
    assert package_cycles(ROOT) == []


def test_no_cycles_within_a_package():
    assert module_cycles(ROOT) == []


def test_only_cli_and_config_import_absl_flags():
    assert flag_importers(ROOT) == []


def test_commands_live_in_cli_and_run_through_the_launcher():
    assert misplaced_entry_points(ROOT) == []
    assert launcher_imports() == []


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
    assert f"{PACKAGE}.cli.evaluate" in entry_points and f"{PACKAGE}.cli.verify" in entry_points
    assert f"{PACKAGE}.data.verification" not in entry_points


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


def test_the_new_checks_see_a_cycle_a_flag_import_and_a_command_outside_cli(tmp_path):
    """The old tree had all three: deploy <-> export_litert, flags in inference/, and the
    commands of data/verify.py and convert/__main__.py."""
    root = tmp_path / PACKAGE
    for package in (root, root / "inference", root / "convert", root / "cli"):
        package.mkdir()
        (package / "__init__.py").write_text("")
    (root / "inference" / "deploy.py").write_text(
        "def export():\n    from pspnet_tf.inference import export_litert\n")
    (root / "inference" / "export_litert.py").write_text(
        "from pspnet_tf.inference.deploy import export\n")
    (root / "inference" / "modes.py").write_text("from absl import flags\n")
    (root / "cli" / "convert.py").write_text("from absl import flags\n")
    (root / "convert" / "__main__.py").write_text("from pspnet_tf.cli import convert\n")
    assert module_cycles(root) == [[f"{PACKAGE}.inference.deploy",
                                    f"{PACKAGE}.inference.export_litert",
                                    f"{PACKAGE}.inference.deploy"]]
    assert flag_importers(root) == [f"{PACKAGE}.inference.modes"]
    problems = misplaced_entry_points(root)
    assert f"{PACKAGE}.convert.__main__ runs a command outside the launcher" in problems
