"""Result files get the mode the user's umask gives any file (mkstemp's 0600 made a shared study unreadable to
the rest of a group)."""

import os
import stat

from cnnarena.files import atomic_write_text, current_umask


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o002)  # a group-shared setup
    try:
        assert current_umask() == 0o002
        atomic_write_text(tmp_path / "report.html", "<p>shared</p>")
        assert _mode(tmp_path / "report.html") == 0o664
    finally:
        os.umask(old)
    atomic_write_text(tmp_path / "metrics.json", "{}")
    assert _mode(tmp_path / "metrics.json") == 0o666 & ~old


def test_a_trained_run_is_readable_by_others_under_the_usual_umask(digits_run):
    allowed = 0o666 & ~current_umask()
    for name in ("metrics.json", "config.yaml", "model.safetensors", "model.json", "predictions.csv"):
        assert _mode(digits_run / name) == allowed, name
