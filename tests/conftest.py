"""Fixtures shared by all tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

from srgan.engines import save_model
from tests.helpers import tiny_generator

# The machines that run the tests are shared and noisy: no per-example deadline.
settings.register_profile("srgan", deadline=None, max_examples=40)
settings.load_profile("srgan")


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.safetensors"
    save_model(path, tiny_generator(), {"dataset": "none", "note": "test model"})
    return path


@pytest.fixture(autouse=True)
def private_engine_cache(tmp_path_factory, monkeypatch):
    """Keep the tests away from the user's engine cache: `--backend auto` would use what is there."""
    monkeypatch.setenv("SRGAN_ENGINES_DIR", str(tmp_path_factory.mktemp("engine-cache")))
