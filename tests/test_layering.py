"""Dependencies point inward (the core imports no front end), and the code passes the linter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRONT_ENDS = {"srgan_cli", "train", "gimp_plugin"}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "engines").rglob("*.py")), ids=lambda path: path.name)
def test_engines_import_no_front_end(path):
    assert not imported_packages(path) & FRONT_ENDS


def test_the_code_passes_ruff():
    """pyproject.toml's [tool.ruff] settings: pyflakes, pycodestyle, bugbear; 120 columns."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--quiet", str(ROOT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
