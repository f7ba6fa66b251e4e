"""Packages import downwards only, and no modules import each other.

The packages are layered: `tfrecords_tools.base` (what the three tools share) at the
bottom, the converter (the rest of `tfrecords_tools`) on it, `serving` on the base alone,
`keras_alexnet` on all of them.  A module may import its own layer and the ones below,
never one above, `serving` none of the converter's; and the imports between modules
(function-local ones included) form no cycle.  Read from the source with `ast`, so
nothing is imported here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
LAYERS = ("tfrecords_tools.base", "tfrecords_tools", "serving", "keras_alexnet")  # lowest first
PACKAGES = ("tfrecords_tools", "serving", "keras_alexnet")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for package in PACKAGES
           for path in sorted((ROOT / package).rglob("*.py"))}


def resolve(name: str) -> str | None:
    """The module of ours that importing `name` runs last (a name inside a module, as
    in `from package import name`, means that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """Our modules that `module` imports, anywhere in it."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(target for target in map(resolve, names) if target and target != module)
    return found


GRAPH = {module: imports(module) for module in MODULES}


def layer(module: str) -> int:
    """The index in LAYERS of the longest layer name that `module` is or is inside."""
    return max((len(name), index) for index, name in enumerate(LAYERS)
               if module == name or module.startswith(f"{name}."))[1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_is_read():
    assert "keras_alexnet.checkpoints" in GRAPH["keras_alexnet.model"]
    assert "tfrecords_tools.base.cli" in GRAPH["keras_alexnet.commands"]
    assert "tfrecords_tools.base.errors" in GRAPH["serving.errors"]
    assert len(GRAPH) > 60
    assert layer("tfrecords_tools.base.cli") < layer("tfrecords_tools.convert") < layer(
        "serving.client")


def test_no_package_imports_a_package_above_it():
    upward = sorted(f"{module} imports {target}" for module, targets in GRAPH.items()
                    for target in targets if layer(target) > layer(module))
    assert not upward, f"imports upwards ({' < '.join(LAYERS)}): {upward}"


def test_serving_stands_on_the_base_alone():
    converter = sorted(f"{module} imports {target}" for module, targets in GRAPH.items()
                       for target in targets if module.startswith("serving")
                       and layer(target) == LAYERS.index("tfrecords_tools"))
    assert not converter, f"serving imports the converter: {converter}"


def test_no_modules_import_each_other():
    assert not cycles(GRAPH), f"import cycles: {cycles(GRAPH)}"


def test_a_new_upward_import_or_cycle_would_be_found():
    graph = {**GRAPH, "tfrecords_tools.base.cli": GRAPH["tfrecords_tools.base.cli"] | {
        "keras_alexnet.model"}}
    assert layer("keras_alexnet.model") > layer("tfrecords_tools.base.cli")
    assert layer("tfrecords_tools.walk") > layer("tfrecords_tools.base.storage")
    graph["keras_alexnet.checkpoints"] = graph["keras_alexnet.checkpoints"] | {
        "keras_alexnet.model"}
    assert ["keras_alexnet.checkpoints", "keras_alexnet.model"] in cycles(graph)
