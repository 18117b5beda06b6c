"""The house's shape (issue 19, item 6): the package's import graph, read from the source with ``ast``
(imports inside functions included), has no cycle and no import from a lower room back up to a higher
one; nothing imports the entry script; files are written in one place."""

import ast
import re
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fundus2ffa"

# Rooms from the bottom up; a module may import its own room or a lower one.
LAYERS = [
    {"errors", "config", "targets", "writers", "weights", "plots", "progress", "host_allocator"},  # foundations: no model, no data
    {"nets", "priors"},  # plain nn.Modules and pure functions
    {"losses", "data", "registration"},
    {"metrics", "results_page"},
    {"checkpoint"},  # the checkpoint file (read, atomic write)
    {"callbacks"},
    {"models"},  # one LightningModule per training procedure
    {"loader", "builders"},  # checkpoint -> model + config; config -> trainer
    {"inference"},  # the one translator, streaming predict, tiles, benches
    {"run", "run_extras", "app", "export", "transfer", "register", "report", "bench", "graph_memory", "__init__"},  # doors
]
DOORS = {"fundus2ffa.run", "fundus2ffa.app", "fundus2ffa.export", "fundus2ffa.register", "fundus2ffa.report", "fundus2ffa.bench"}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module for a in node.names]
            for target in targets:
                if target.startswith("fundus2ffa"):
                    resolved = resolve(target)
                    if resolved and resolved != name:
                        graph[name].add(resolved)
    for name in mods:
        graph.setdefault(name, set())
    return graph


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer(module: str) -> int:
    for index, rooms in enumerate(LAYERS):
        if room(module) in rooms:
            return index
    raise AssertionError(f"{module}: room {room(module)!r} is in no layer of tests/test_import_graph.py; place it")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_no_lower_room_imports_a_higher_one():
    graph = import_graph()
    back = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer(a) < layer(b))
    assert back == [], "imports from a lower room up to a higher one:\n" + "\n".join(back)


def test_nothing_imports_a_door():
    graph = import_graph()
    into_doors = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if b in DOORS and room(a) != room(b))
    assert into_doors == [], into_doors


def test_files_are_renamed_into_place_in_one_module():
    """The write-then-rename (and its temporary names) exists once, in fundus2ffa/writers.py."""
    pattern = re.compile(r"os\.replace\(|\.replace\((path|target|out|cache)\)|\.part\b|\.rename\(")
    offenders = []
    for name, path in modules().items():
        if name == "fundus2ffa.writers":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code) and not code.strip().startswith(('"', "'")):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert offenders == [], "\n".join(offenders)
