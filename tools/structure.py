"""The structure measures of issue 31, printed as JSON: `python -m tools.structure [--check]`.

- cli.py's lines and the cnnarena modules it imports;
- the longest function in src/ and the largest module;
- the modules that name a run-directory file ("metrics.json", "config.yaml", ...) as a string literal.

--check exits 1 when a limit is broken: cli.py over 350 lines or importing more than the API, the schema and the
errors module; a function over 60 lines; a module over 450 lines; a run file named outside rundir.py.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

from tools.check_layers import ROOT, imports_of, module_name

RUN_FILES = {"metrics.json", "config.yaml", "history.jsonl", "history.csv", "split.json", "predictions.csv",
             "model.safetensors", "model.json", "study.yaml", "comparison.json", "evaluation.json"}
CLI_MAY_IMPORT = {"cnnarena", "cnnarena.api", "cnnarena.schema", "cnnarena.errors"}
LIMITS = {"cli_lines": 350, "function_lines": 60, "module_lines": 450}


def _names_a_run_file(node: ast.AST) -> bool:
    """A run file's name used as a path: joined (`run_dir / "metrics.json"`) or passed to a call (open, rglob);
    the same text as data (a hub's file names) is not the run directory's."""
    def is_name(n: ast.AST) -> bool:
        return isinstance(n, ast.Constant) and n.value in RUN_FILES
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return is_name(node.right)
    if isinstance(node, ast.Call):
        return any(is_name(a) for a in node.args)
    return False


def measure(root: Path = ROOT) -> dict:
    functions, modules, naming = [], [], []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        rel = str(path.relative_to(root.parent))
        modules.append((len(text.splitlines()), rel))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.name}"))
        if any(_names_a_run_file(n) for n in ast.walk(tree)):
            naming.append(rel)
    cli = root / "cli.py"
    cli_imports = sorted({m for _, m in imports_of(cli, module_name(cli, root), root)})
    return {
        "cli_lines": len(cli.read_text().splitlines()),
        "cli_imports": cli_imports,
        "longest_functions": sorted(functions, reverse=True)[:5],
        "largest_modules": sorted(modules, reverse=True)[:5],
        "modules_naming_run_files": naming,
    }


def problems(m: dict) -> list[str]:
    found = []
    if m["cli_lines"] > LIMITS["cli_lines"]:
        found.append(f"cli.py has {m['cli_lines']} lines (limit {LIMITS['cli_lines']})")
    extra = set(m["cli_imports"]) - CLI_MAY_IMPORT
    if extra:
        found.append(f"cli.py imports {', '.join(sorted(extra))}")
    found += [f"{name}: {n} lines" for n, name in m["longest_functions"] if n > LIMITS["function_lines"]]
    found += [f"{name}: {n} lines" for n, name in m["largest_modules"] if n > LIMITS["module_lines"]]
    found += [f"{name} names a run file: use rundir" for name in m["modules_naming_run_files"]
              if not name.endswith("rundir.py")]
    return found


if __name__ == "__main__":
    result = measure()
    print(json.dumps({**result, "cli_imports": len(result["cli_imports"]),
                      "modules_naming_run_files": len(result["modules_naming_run_files"])}, indent=1))
    if "--check" in sys.argv[1:]:
        broken = problems(result)
        print("\n".join(broken) or "all structure limits hold")
        sys.exit(1 if broken else 0)
