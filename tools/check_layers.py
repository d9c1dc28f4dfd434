"""The import rules of src/cnnarena (../shared/DESIGN.md): arrows point down the list of rooms, never up, and no
module takes part in an import cycle. `python -m tools.check_layers` prints every violation and exits 1 on any.

Every import counts, also those inside functions (a deferred import is still an arrow); only imports under
`if TYPE_CHECKING:` are left out, since they never run.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "cnnarena"
ROOT = Path(__file__).resolve().parents[1] / "src" / PACKAGE

# Lowest first: a room may import from rooms listed before it (and from itself), never from one after it.
ROOMS = [
    # helpers below everything
    ("errors", "files", "documents", "writer_lock", "machine", "runtime", "memory", "__init__", "callable_package",
     "option", "schema", "schema_commands", "rundir", "display", "masking", "figure_text"),
    ("data",),
    ("models",),
    ("train",),
    ("config",),  # typed run configs: data, model recipes and train configs together
    ("evaluate",),
    ("explain",),
    ("report",),
    ("tracking",),  # experiment trackers fed from run directories (MLflow)
    ("export",),
    ("serve",),
    ("run",),
    ("study",),
    ("run_actions",),  # what one does with a finished run: predict, evaluate, explain, export, serve
    ("results",),  # Run, Study, DataReport: the objects the API hands back
    ("commands",),  # the commands besides the public five, and what the CLI prints with
    ("api",),  # the application layer: one call per command or notebook cell
    ("cli", "__main__"),
]
RANK = {room: rank for rank, rooms in enumerate(ROOMS) for room in rooms}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, module: str, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, imported cnnarena module) for every import that runs."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name) for a in child.names if a.name.split(".")[0] == PACKAGE)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] != PACKAGE:
                    continue
                for a in child.names:  # `from . import x`, `from cnnarena.study import runner`: modules by name
                    candidate = f"{target}.{a.name}"
                    found.append((child.lineno, candidate if _exists(candidate, root) else target))
            visit(child)

    visit(tree)
    return found


def _exists(module: str, root: Path = ROOT) -> bool:
    rel = Path(*module.split(".")[1:])
    return (root / rel).with_suffix(".py").exists() or (root / rel / "__init__.py").exists()


def check(root: Path = ROOT) -> list[str]:
    graph: dict[str, set[str]] = {}
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        graph.setdefault(module, set())
        room = room_of(module)
        if room not in RANK:
            problems.append(f"{path.relative_to(root.parent)}: room '{room}' is not in tools/check_layers.py ROOMS")
            continue
        for line, target in imports_of(path, module, root):
            if target == module:
                continue
            graph[module].add(target)
            other = room_of(target)
            if other != room and RANK.get(other, -1) > RANK[room]:
                problems.append(f"{path.relative_to(root.parent)}:{line}: {room} imports {target}, "
                                f"a room above it ({other})")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                strongconnect(w)
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
                found.append(sorted(component) + [sorted(component)[0]])

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def main() -> int:
    problems = check()
    for problem in problems:
        print(problem)
    modules = sum(1 for _ in ROOT.rglob("*.py"))
    print(f"{'FAILED' if problems else 'ok'}: {len(problems)} problem(s) in {modules} modules of {PACKAGE}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
