"""End to end in real GIMP 3: a Debian trixie root (scripts/gimp_root.sh) with this project
bind-mounted at its own path, the plug-in installed by `srgan gimp install`, and a batch script
that calls it through the PDB. Skipped where that root has not been built or we are not root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from srgan.engines import Picture, read_image, save_model, write_image
from tests.community_models import community_state_dict, save_community_model
from tests.helpers import random_image, tiny_generator

REPO = Path(__file__).resolve().parents[2]
GIMP_ROOT = Path(os.environ.get("SRGAN_GIMP_ROOT", "/var/cache/srgan/trixie-gimp"))
READY = (GIMP_ROOT / ".srgan-ready").is_file() and os.geteuid() == 0

pytestmark = pytest.mark.skipif(
    not READY, reason=f"no GIMP 3 root at {GIMP_ROOT} (bash scripts/gimp_root.sh) or not root"
)


def bind(stack: ExitStack, source: Path) -> None:
    target = GIMP_ROOT / source.relative_to("/")
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
    stack.callback(subprocess.run, ["umount", "-l", str(target)], check=False)


@pytest.fixture(scope="module")
def gimp():
    """Runs the batch script in GIMP with the given cases; returns its records."""
    work = Path("/tmp") / f"srgan-e2e-{os.getpid()}"
    host_work = GIMP_ROOT / work.relative_to("/")
    host_work.mkdir(parents=True, exist_ok=True)
    python_home = Path(os.path.realpath(sys.executable)).parents[1]
    with ExitStack() as stack:
        for source in {Path("/proc"), Path("/dev"), REPO, Path(sys.prefix), python_home}:
            if REPO not in source.parents:  # a venv inside the repository comes with it
                bind(stack, source)
        plugins = host_work / "home" / ".config" / "GIMP" / "3.0" / "plug-ins"
        subprocess.run(
            [sys.executable, "-m", "srgan.cli", "gimp", "install", "--plugins-dir", str(plugins)],
            check=True,
            capture_output=True,
        )

        def run(cases: list[dict]) -> list[dict]:
            (host_work / "cases.json").write_text(json.dumps(cases))
            command = [
                "chroot",
                str(GIMP_ROOT),
                "env",
                "-i",
                f"HOME={work}/home",
                "PATH=/usr/bin:/bin",
                "LANG=C.UTF-8",
                f"SRGAN_E2E={work}",
                "gimp-console-3.0",
                "-i",
                "--quit",
                "--batch-interpreter",
                "python-fu-eval",
                "-b",
                f"exec(open('{REPO}/tests/gimp/gimp_batch.py').read())",
            ]
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
            results = host_work / "results.json"
            assert results.exists(), result.stdout[-2000:] + result.stderr[-2000:]
            return json.loads(results.read_text())

        yield SimpleNamespace(host=host_work, inside=work, run=run)


def test_the_plugin_upscales_a_layer_like_the_cli_and_keeps_alpha(gimp):
    host, inside = gimp.host, gimp.inside
    model = host / "tiny.safetensors"
    save_model(model, tiny_generator())
    pixels = random_image(20, 24, 4, seed=4)
    pixels[:, :, 3] = np.linspace(0, 255, 24, dtype=np.uint8)[None, :]
    Image.fromarray(pixels).save(host / "rgba.png")
    (host / "broken.safetensors").write_bytes(b"\0" * 64)
    gray16 = random_image(12, 10, 1, dtype=np.uint16, seed=5)
    write_image(Picture(gray16), host / "gray16.png")
    cases = [
        {
            "name": "rgba",
            "input": f"{inside}/rgba.png",
            "model": f"{inside}/tiny.safetensors",
            "output": f"{inside}/rgba_out.png",
        },
        {
            "name": "gray16",
            "input": f"{inside}/gray16.png",
            "model": f"{inside}/tiny.safetensors",
            "output": f"{inside}/gray16_out.png",
        },
        {"name": "bad-model", "input": f"{inside}/rgba.png", "model": f"{inside}/broken.safetensors"},
        {
            "name": "scaled",
            "input": f"{inside}/rgba.png",
            "model": f"{inside}/tiny.safetensors",
            "scale": 2.5,
            "output": f"{inside}/rgba_scaled.png",
        },
        {"name": "below-one", "input": f"{inside}/rgba.png", "model": f"{inside}/tiny.safetensors", "scale": 0.5},
        # A third-party architecture (Real-ESRGAN Compact, 2×) as a wrapped .pth, through the same CLI.
        {
            "name": "community",
            "input": f"{inside}/rgba.png",
            "model": f"{inside}/compact_x2.pth",
            "output": f"{inside}/rgba_compact.png",
        },
    ]
    save_community_model(host / "compact_x2.pth", community_state_dict("Compact", 3, 2), wrap="params_ema")
    records = gimp.run(cases)
    by_name = {record["name"]: record for record in records}

    rgba = by_name["rgba"]
    assert rgba["success"] and rgba["after"] == [96, 80] and rgba["layer"] == [96, 80] and rgba["has_alpha"]
    cli = host / "rgba_cli.png"
    subprocess.run(
        [sys.executable, "-m", "srgan.cli", "upscale", str(host / "rgba.png"), "-o", str(cli), "-m", str(model)],
        check=True,
        capture_output=True,
    )
    from_gimp = read_image(host / "rgba_out.png").pixels
    assert from_gimp.shape == (80, 96, 4)
    assert np.abs(from_gimp.astype(int) - read_image(cli).pixels).max() <= 1

    deep = by_name["gray16"]
    assert deep["success"] and deep["after"] == [40, 48]
    exported = read_image(host / "gray16_out.png").pixels
    assert exported.shape == (48, 40, 1) and exported.dtype == np.uint16

    failed = by_name["bad-model"]
    assert not failed["success"] and failed["after"] == failed["before"] == [24, 20]
    assert "not a readable safetensors file" in failed["message"]

    scaled = by_name["scaled"]
    assert scaled["success"] and scaled["after"] == [60, 50] and scaled["layer"] == [60, 50]
    cli_scaled = host / "rgba_cli_scaled.png"
    subprocess.run(
        [sys.executable, "-m", "srgan.cli", "upscale", str(host / "rgba.png"), "-o", str(cli_scaled)]
        + ["-m", str(model), "--scale", "2.5"],
        check=True,
        capture_output=True,
    )
    from_gimp = read_image(host / "rgba_scaled.png").pixels
    assert np.abs(from_gimp.astype(int) - read_image(cli_scaled).pixels).max() <= 1
    below = by_name["below-one"]
    assert not below["success"] and below["after"] == [24, 20] and "below 1" in below["message"]
    community = by_name["community"]
    assert community["success"] and community["after"] == [48, 40], community
    assert read_image(host / "rgba_compact.png").pixels.shape == (40, 48, 4)
