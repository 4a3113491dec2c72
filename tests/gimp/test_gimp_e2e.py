"""End to end in real GIMP 3: a Debian trixie root (scripts/gimp_root.sh) with this project
bind-mounted at its own path, the plug-in installed by `srgan gimp install`, and a batch script
that calls it through the PDB. Skipped where that root has not been built or we are not root.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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
        # Every srgan call the plug-in makes is logged, to count them.
        wrapper = host_work / "srgan-logged.sh"
        wrapper.write_text(f'#!/bin/sh\necho "$*" >> {work}/srgan-calls.log\nexec {sys.executable} -m srgan.cli "$@"\n')
        record = plugins / "srgan_upscale" / "srgan.json"
        installed = json.loads(record.read_text())
        record.write_text(json.dumps({**installed, "command": ["/bin/sh", f"{work}/srgan-logged.sh"]}))
        (host_work / "tmp").mkdir(exist_ok=True)

        def start(cases: list[dict]) -> subprocess.Popen:
            (host_work / "cases.json").write_text(json.dumps(cases))
            (host_work / "results.json").unlink(missing_ok=True)
            (host_work / "srgan-calls.log").unlink(missing_ok=True)
            command = [
                "chroot",
                str(GIMP_ROOT),
                "env",
                "-i",
                f"HOME={work}/home",
                "PATH=/usr/bin:/bin",
                "LANG=C.UTF-8",
                f"TMPDIR={work}/tmp",
                f"SRGAN_E2E={work}",
                "gimp-console-3.0",
                "-i",
                "--quit",
                "--batch-interpreter",
                "python-fu-eval",
                "-b",
                f"exec(open('{REPO}/tests/gimp/gimp_batch.py').read())",
            ]
            return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def finish(process: subprocess.Popen) -> list[dict]:
            stdout, stderr = process.communicate(timeout=600)
            results = host_work / "results.json"
            assert results.exists(), stdout[-2000:] + stderr[-2000:]
            return json.loads(results.read_text())

        def calls() -> list[str]:
            log = host_work / "srgan-calls.log"
            return log.read_text().splitlines() if log.exists() else []

        yield SimpleNamespace(
            host=host_work,
            inside=work,
            run=lambda cases: finish(start(cases)),
            start=start,
            finish=finish,
            calls=calls,
            gimp_dir=host_work / "home" / ".config" / "GIMP" / "3.0",
            plugin=plugins / "srgan_upscale",
        )


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
            "model_file": f"{inside}/tiny.safetensors",
            "output": f"{inside}/rgba_out.png",
        },
        {
            "name": "gray16",
            "input": f"{inside}/gray16.png",
            "model_file": f"{inside}/tiny.safetensors",
            "output": f"{inside}/gray16_out.png",
        },
        {"name": "bad-model", "input": f"{inside}/rgba.png", "model_file": f"{inside}/broken.safetensors"},
        {
            "name": "scaled",
            "input": f"{inside}/rgba.png",
            "model_file": f"{inside}/tiny.safetensors",
            "scale": 2.5,
            "output": f"{inside}/rgba_scaled.png",
        },
        {"name": "below-one", "input": f"{inside}/rgba.png", "model_file": f"{inside}/tiny.safetensors", "scale": 0.5},
        # A third-party architecture (Real-ESRGAN Compact, 2×) as a wrapped .pth, through the same CLI.
        {
            "name": "community",
            "input": f"{inside}/rgba.png",
            "model_file": f"{inside}/compact_x2.pth",
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

    assert all(not record.get("scratch_left") for record in records)


def test_two_layers_go_through_one_srgan_process_and_bad_models_give_the_cli_reason(gimp):
    host, inside = gimp.host, gimp.inside
    save_model(host / "tiny.safetensors", tiny_generator())
    Image.fromarray(random_image(20, 24, 4, seed=6)).save(host / "two.png")
    (host / "bad.pth").write_text("this is not a model\n")
    records = gimp.run(
        [
            {
                "name": "two",
                "input": f"{inside}/two.png",
                "model_file": f"{inside}/tiny.safetensors",
                "extra_layers": 1,
                "tile": 48,
            },
            {"name": "bad-pth", "input": f"{inside}/two.png", "model_file": f"{inside}/bad.pth"},
            {"name": "no-file", "input": f"{inside}/two.png", "model": "file"},
            {"name": "probe"},
        ]
    )
    two, bad, no_file, probe = records
    assert two["success"] and two["layers"] == [[96, 80], [96, 80]] and two["after"] == [96, 80]
    upscales = [call for call in gimp.calls() if call.startswith("upscale")]
    assert len(upscales) == 2 and upscales[0].count(".pam") == 2  # two layers in one process; then bad.pth
    assert not bad["success"] and bad["after"] == bad["before"] == [24, 20]
    assert "\n" not in bad["message"] and "Traceback" not in bad["message"]
    assert "pop from empty list" not in bad["message"] and "Error:" not in bad["message"]
    assert bad["message"].startswith(f"{inside}/bad.pth: is not a PyTorch model file")  # the CLI's own line
    assert not no_file["success"] and "Choose one in Model file" in no_file["message"]
    assert all(not record.get("scratch_left") for record in records)

    assert "Tile size" in probe["help"] and "model folders" in probe["help"] and "Memory" in probe["help"]
    help_map = (gimp.plugin / "help" / "en" / "gimp-help.xml").read_text()
    domain, _, help_id = probe["help_id"].rpartition("?")  # GIMP prefixes the plug-in's registered help domain
    assert domain == "srgan-upscale" and f'id="{help_id}"' in help_map
    assert (gimp.plugin / "help" / "en" / "index.html").is_file()
    choices = probe["choices"]
    assert choices["device"]["kept"] == "cpu" and "cuda-1" in choices["device"]["nicks"]
    assert choices["backend"] == {"kept": "eager", "nicks": ["auto", "eager", "compiled", "tensorrt"]}
    assert choices["precision"] == {"kept": "bf16", "nicks": ["auto", "fp32", "fp16", "bf16"]}
    assert choices["model"]["kept"] == "file" and choices["model"]["nicks"][0] == "default"


def test_values_of_a_failed_run_come_back(gimp):
    """GIMP keeps the last values only after a success; the plug-in keeps the user's own."""
    host, inside = gimp.host, gimp.inside
    (host / "bad.safetensors").write_bytes(b"\0" * 64)
    Image.fromarray(random_image(10, 12, 3, seed=7)).save(host / "small.png")
    last = {"model": "file", "model_file": f"{inside}/bad.safetensors", "device": "cpu", "auto_tile": False, "tile": 64}
    (gimp.gimp_dir / "srgan-upscale-last.json").write_text(json.dumps(last))
    [record] = gimp.run([{"name": "repeat", "input": f"{inside}/small.png", "run_mode": "WITH_LAST_VALS"}])
    assert not record["success"] and "bad.safetensors" in record["message"]
    assert "--tile 64" in [call for call in gimp.calls() if call.startswith("upscale")][0]


def test_a_plugin_ended_by_gimp_leaves_no_temporary_files(gimp):
    """Cancel in GIMP's progress bar ends the plug-in with SIGKILL; nothing it started may stay."""
    host, inside = gimp.host, gimp.inside
    save_model(host / "tiny.safetensors", tiny_generator())
    Image.fromarray(random_image(900, 900, 3, seed=8)).save(host / "large.png")
    process = gimp.start(
        [{"name": "killed", "input": f"{inside}/large.png", "model_file": f"{inside}/tiny.safetensors", "tile": 48}]
    )
    deadline = time.monotonic() + 300
    plugin = None
    while plugin is None and time.monotonic() < deadline:
        plugin = _plugin_running_srgan()
        time.sleep(0.2)
    assert plugin is not None, "srgan never started"
    assert _scratch(host)
    os.kill(plugin, signal.SIGKILL)  # what GIMP does 10 ms after asking the plug-in to quit
    records = gimp.finish(process)
    assert not records[0]["success"] and records[0]["after"] == [900, 900]
    deadline = time.monotonic() + 60
    while (_scratch(host) or _srgan_upscales()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _scratch(host) and not _srgan_upscales()


def _scratch(host: Path) -> list[Path]:
    """The plug-in's scratch folders in the temporary folder GIMP gives it (GIMP keeps its own there too)."""
    return list((host / "tmp").glob("srgan-gimp-*"))


def _processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        found.append((int(entry.name), parent, command))
    return found


def _srgan_upscales() -> list[int]:
    return [pid for pid, _, command in _processes() if "srgan.cli upscale" in command and "layer0.pam" in command]


def _plugin_running_srgan() -> int | None:
    """The plug-in's pid once its guard has started srgan; None before."""
    processes = _processes()
    if not _srgan_upscales():
        return None
    for _, parent, command in processes:
        if "bridge.py --guard" in command:
            for candidate, _, plugin_command in processes:
                if candidate == parent and "srgan_upscale.py" in plugin_command:
                    return candidate
    return None
