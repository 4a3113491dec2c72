"""The package's shape: one namespace, dependencies pointing inward, a core that names no flag."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("engines", "srgan_cli", "train", "gimp_plugin", "tests", "benchmarks", "scripts")
UNNAMESPACED = {"engines", "srgan_cli", "train", "gimp_plugin"}
FRONT_END_PACKAGES = {"srgan.cli", "srgan.train", "srgan.gimp"}
# A command-line flag such as --max-pixels, not an em dash or a '--' separator.
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(-[a-z0-9]+)*")


def python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def imports(path: Path) -> list[str]:
    """Absolute module names imported by the file (`from x import y` gives x)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def string_constants(path: Path) -> list[tuple[int, str]]:
    """Every string literal in the file except docstrings, with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def short(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", python_files(*FOLDERS), ids=short)
def test_imports_use_the_srgan_namespace(path):
    """`import engines` would find whatever a user's folder or another distribution calls engines."""
    assert not [name for name in imports(path) if name.split(".")[0] in UNNAMESPACED]


@pytest.mark.parametrize("path", python_files("engines"), ids=short)
def test_the_core_imports_no_front_end(path):
    assert not [name for name in imports(path) if any(name.startswith(front) for front in FRONT_END_PACKAGES)]


@pytest.mark.parametrize("path", python_files("srgan_cli", "train", "gimp_plugin"), ids=short)
def test_front_ends_use_only_the_cores_public_api(path):
    assert not [name for name in imports(path) if name.startswith("srgan.engines.")]


@pytest.mark.parametrize("path", python_files("gimp_plugin"), ids=short)
def test_the_gimp_plugin_talks_to_the_cli_only(path):
    """GIMP's own Python has no torch: the plug-in must not import srgan at all."""
    assert not [name for name in imports(path) if name.split(".")[0] == "srgan"]


@pytest.mark.parametrize("path", python_files("engines"), ids=short)
def test_core_messages_name_no_flag(path):
    """The core says which setting governs a problem; front ends word it as a flag or a field."""
    assert not [(line, text) for line, text in string_constants(path) if FLAG.search(text)]


def test_the_flag_check_can_fail(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('"""Docstrings may say --max-pixels."""\nraise ValueError("too big; pass --max-pixels")\n')
    assert [line for line, _ in string_constants(sample) if FLAG.search(_)] == [2]
    sample.write_text("from srgan.engines.compiled import build_compiled\nimport train.run\n")
    assert imports(sample) == ["srgan.engines.compiled", "train.run"]


def test_the_public_api_is_what_it_exports():
    from srgan import engines

    assert sorted(engines.__all__) == sorted(set(engines.__all__))
    assert all(hasattr(engines, name) for name in engines.__all__)


def test_the_code_passes_ruff():
    """pyproject.toml's [tool.ruff] settings: pyflakes, pycodestyle, bugbear; 120 columns."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--quiet", str(ROOT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
