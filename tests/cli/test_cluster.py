"""`srgan upscale --cluster` on a real two-node Ray cluster on this machine.

Ray's CPU counts are logical: each node declares 4 so that the two 1-CPU workers (and a worker
restarted on the surviving node) always find room, however few cores the machine has.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from srgan.cli.app import app
from srgan.engines import Picture, save_model, write_image
from tests.helpers import random_image, tiny_generator

pytestmark = pytest.mark.cluster
runner = CliRunner()


@pytest.fixture(scope="module")
def two_nodes():
    """A head node and a second node; yields (cluster, the second node)."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "include_dashboard": False})
    second = cluster.add_node(num_cpus=4)
    cluster.wait_for_nodes()
    yield cluster, second
    cluster.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """40 small images, a model, and one file that is not an image."""
    root = tmp_path_factory.mktemp("cluster")
    save_model(root / "tiny.safetensors", tiny_generator(), {"dataset": "none"})
    for index in range(40):
        write_image(Picture(random_image(24 + index % 5, 28, 3, seed=index)), root / "in" / f"image{index:02d}.png")
    (root / "in" / "broken.png").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def local_outputs(folder) -> dict[str, bytes]:
    """What a local run writes for the same folder and options."""
    assert upscale(folder, "local").exit_code == 1  # broken.png
    return outputs(folder / "local")


# Small tiles make each file slow enough that a node killed after the first results had work in hand.
TILES = ["--tile", "16", "--overlap", "2"]


def upscale(folder: Path, out: str, *extra: str, env: dict[str, str] | None = None):
    arguments = ["upscale", str(folder / "in"), "-o", str(folder / out), "-m", str(folder / "tiny.safetensors")]
    return runner.invoke(app, [*arguments, "--json", *TILES, *extra], env=env)


def results(stdout: str) -> list[dict]:
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [event for event in events if event["event"] == "result"]


def outputs(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def test_two_nodes_write_what_a_local_run_writes_and_one_bad_file_fails_alone(two_nodes, folder, local_outputs):
    cluster, _ = two_nodes
    ran = upscale(folder, "ray", "--cluster", "auto", "--workers", "2", env={"RAY_ADDRESS": cluster.address})
    assert ran.exit_code == 1, ran.output
    events = results(ran.stdout)
    statuses = Counter(event["status"] for event in events)
    assert statuses == {"done": 40, "failed": 1}
    failed = [event for event in events if event["status"] == "failed"]
    assert "broken.png" in failed[0]["detail"] and "not an image" in failed[0]["detail"]
    assert len({event["worker"] for event in events if event["status"] == "done"}) == 2  # both nodes worked
    assert outputs(folder / "ray") == local_outputs  # byte for byte
    summary = json.loads(ran.stdout.splitlines()[-1])
    assert (summary["event"], summary["done"], summary["failed"]) == ("summary", 40, 1)


def test_a_node_killed_mid_run_leaves_every_file_done_exactly_once(two_nodes, folder, local_outputs):
    cluster, second = two_nodes
    out = folder / "killed"
    command = [sys.executable, "-m", "srgan.cli", "upscale", str(folder / "in"), "-o", str(out)]
    command += ["-m", str(folder / "tiny.safetensors"), "--json", "--cluster", "auto", "--workers", "2"]
    command += TILES
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    stderr_file = folder / "killed.stderr"
    with stderr_file.open("w") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
        lines = []
        for line in process.stdout:  # to the end: every line is kept
            lines.append(line)
            if len(lines) > 1 and json.loads(line)["event"] == "result" and second is not None:
                cluster.remove_node(second, allow_graceful=False)
                second = None
        process.wait(timeout=240)
    stderr = stderr_file.read_text()
    events = results("".join(lines))
    assert second is None, f"the run ended before the node was killed: {stderr[-2000:]}"
    assert process.returncode == 1, stderr  # broken.png only
    by_input = Counter(Path(event["input"]).name for event in events)
    assert set(by_input.values()) == {1} and len(by_input) == 41, (sorted(by_input), stderr[-3000:])
    failures = [event["detail"] for event in events if event["status"] == "failed"]
    assert len(failures) == 1 and "broken.png" in failures[0], failures
    workers = {event["worker"] for event in events if event["status"] == "done"}
    assert len(workers) == 3, workers  # two, then the killed node's worker restarted on the head node
    assert outputs(out) == local_outputs
    assert not [path for path in out.rglob("*") if path.name.endswith(".partial")]


def test_ctrl_c_stops_the_workers_and_keeps_only_whole_files(two_nodes, folder, local_outputs):
    cluster, _ = two_nodes
    out = folder / "interrupted"
    command = [sys.executable, "-m", "srgan.cli", "upscale", str(folder / "in"), "-o", str(out)]
    command += ["-m", str(folder / "tiny.safetensors"), "--json", "--cluster", "auto", "--workers", "2", *TILES]
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in process.stdout:
        if json.loads(line)["event"] == "result":
            process.send_signal(signal.SIGINT)
            break
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted" in stderr
    written = outputs(out)
    assert 0 < len(written) < 40
    assert all(local_outputs[name] == data for name, data in written.items())  # whole files only


def test_without_ray_the_cluster_option_is_one_line_saying_what_to_install(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    result = upscale(folder, "never", "--cluster", "local")
    assert result.exit_code == 1
    assert "pip install 'srgan[cluster]'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (folder / "never").exists()
