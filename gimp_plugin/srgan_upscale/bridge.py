"""The plug-in's pure part: talking to the `srgan` command and moving pixels through files.

It runs inside GIMP's own Python, which has neither torch nor numpy, so it uses the standard
library only and imports nothing from GIMP. Pixels travel as Netpbm PAM files: uncompressed
8- or 16-bit samples behind a short text header, written and read here without any image
library and understood by `srgan upscale`.
"""

from __future__ import annotations

import array
import ctypes
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CONFIG_NAME = "srgan.json"
TUPLE_TYPES = {1: "GRAYSCALE", 2: "GRAYSCALE_ALPHA", 3: "RGB", 4: "RGB_ALPHA"}


class BridgeError(Exception):
    """Why an upscale failed, in the CLI's own one-line words when it gave any."""


@dataclass(frozen=True)
class Pixels:
    """Interleaved samples, native byte order: what a GEGL buffer gives and takes."""

    width: int
    height: int
    channels: int
    deep: bool  # 16 bits per sample rather than 8
    data: bytes


def srgan_command(plugin_dir: Path) -> list[str]:
    """The command `srgan gimp install` recorded, e.g. [python, "-m", "srgan.cli"].

    Raises BridgeError saying how to fix a missing or broken record.
    """
    path = plugin_dir / CONFIG_NAME
    try:
        command = json.loads(path.read_text())["command"]
    except (OSError, ValueError, KeyError, TypeError):
        raise BridgeError(f"{path}: missing or unreadable; run 'srgan gimp install' again") from None
    if not isinstance(command, list) or not all(isinstance(part, str) for part in command) or not command:
        raise BridgeError(f"{path}: 'command' must be a list of strings; run 'srgan gimp install' again")
    return command


def build_arguments(
    command: list[str],
    source: Path,
    target: Path,
    model: str,
    tile: int,
    device: str,
    backend: str = "auto",
    scale: float = 0.0,
) -> list[str]:
    """The full `srgan upscale` call for one layer. model '' means the bundled default; tile 0
    auto; scale 0 the model's factor."""
    arguments = [*command, "upscale", str(source), "-o", str(target), "--json", "--overwrite"]
    arguments += ["--device", device or "auto", "--backend", backend or "auto"]
    if model:
        arguments += ["--model", model]
    if tile:
        arguments += ["--tile", str(tile)]
    if scale:
        arguments += ["--scale", f"{scale:g}"]
    return arguments


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(width, height) enlarged by `scale` and rounded as `srgan upscale --scale` rounds them."""
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass(frozen=True)
class Event:
    kind: str  # progress, result, error, other
    fraction: float = 0.0
    message: str = ""


def parse_event(line: str) -> Event:
    """One line of `srgan upscale --json` output; anything else is 'other'."""
    try:
        event = json.loads(line)
    except ValueError:
        return Event("other")
    if not isinstance(event, dict):
        return Event("other")
    kind = event.get("event")
    if kind == "progress":
        return Event("progress", fraction=float(event.get("fraction", 0.0)))
    if kind == "result":
        return Event("result", message=str(event.get("detail", "")) if event.get("status") == "failed" else "")
    if kind == "error":
        return Event("error", message=str(event.get("message", "")))
    return Event("other")


def _die_with_parent() -> None:
    """In the child: receive SIGTERM when the plug-in dies (GIMP cancelled or closed it)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def run_upscale(arguments: list[str], progress: Callable[[float], None]) -> None:
    """Run one `srgan upscale` call, reporting its progress; raise BridgeError if it failed."""
    try:
        process = subprocess.Popen(
            arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent
        )
    except OSError as error:
        raise BridgeError(
            f"{arguments[0]}: cannot start srgan ({error.strerror}); run 'srgan gimp install' again"
        ) from None
    reasons: list[str] = []
    assert process.stdout is not None and process.stderr is not None  # both are pipes
    for line in process.stdout:
        event = parse_event(line)
        if event.kind == "progress":
            progress(event.fraction)
        elif event.message:
            reasons.append(event.message)
    stderr = process.stderr.read()
    if process.wait() != 0:
        lines = [line.removeprefix("error: ").strip() for line in stderr.splitlines() if line.strip()]
        raise BridgeError(
            reasons[-1] if reasons else lines[-1] if lines else f"srgan exited with code {process.returncode}"
        )


def write_pam(path: Path, pixels: Pixels) -> None:
    """Write samples as PAM (big-endian, as the format requires)."""
    samples = pixels.data
    if pixels.deep and sys.byteorder == "little":
        swapped = array.array("H")
        swapped.frombytes(samples)
        swapped.byteswap()
        samples = swapped.tobytes()
    header = (
        f"P7\nWIDTH {pixels.width}\nHEIGHT {pixels.height}\nDEPTH {pixels.channels}\n"
        f"MAXVAL {65535 if pixels.deep else 255}\nTUPLTYPE {TUPLE_TYPES[pixels.channels]}\nENDHDR\n"
    )
    path.write_bytes(header.encode("ascii") + samples)


def read_pam(path: Path) -> Pixels:
    """Read a PAM written by `srgan upscale`, samples in native byte order."""
    data = path.read_bytes()
    end = data.find(b"ENDHDR\n")
    if not data.startswith(b"P7\n") or end < 0:
        raise BridgeError(f"{path}: not a PAM file")
    fields = dict(line.split(" ", 1) for line in data[3:end].decode("ascii").splitlines() if " " in line)
    width, height, channels = int(fields["WIDTH"]), int(fields["HEIGHT"]), int(fields["DEPTH"])
    deep = int(fields["MAXVAL"]) > 255
    samples = data[end + 7 :]
    expected = width * height * channels * (2 if deep else 1)
    if len(samples) != expected:
        raise BridgeError(f"{path}: PAM has {len(samples)} bytes of samples, expected {expected}")
    if deep and sys.byteorder == "little":
        swapped = array.array("H")
        swapped.frombytes(samples)
        swapped.byteswap()
        samples = swapped.tobytes()
    return Pixels(width, height, channels, deep, samples)
