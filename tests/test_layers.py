"""tools/check_layers.py: the repository passes it, and it catches an upward import and an import cycle."""

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools import check_layers  # noqa: E402


def test_the_package_has_no_upward_import_and_no_cycle():
    assert check_layers.check() == []


def test_an_upward_import_and_a_cycle_are_reported(tmp_path):
    root = tmp_path / "cnnarena"
    shutil.copytree(check_layers.ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data" / "probe.py").write_text("def f():\n    from ..run import train_run\n")
    (root / "models" / "cycle_a.py").write_text("from . import cycle_b\n")
    (root / "models" / "cycle_b.py").write_text("from cnnarena.models import cycle_a\n")
    problems = check_layers.check(root)
    assert any("data/probe.py:2: data imports cnnarena.run, a room above it" in p for p in problems), problems
    assert "import cycle: cnnarena.models.cycle_a -> cnnarena.models.cycle_b -> cnnarena.models.cycle_a" in problems
    assert len(problems) == 2, problems


def test_the_structure_limits_hold():
    """cli.py is thin, no function is over 60 lines, no module over 450, and only rundir.py names a run's files."""
    from tools.structure import measure, problems

    measured = measure()
    assert problems(measured) == [], problems(measured)
    assert measured["cli_lines"] <= 350 and measured["modules_naming_run_files"] == []
