"""The plug-in's pure part: talking to the `srgan` command and moving pixels through files.

It runs inside GIMP's own Python, which has neither torch nor numpy, so it uses the standard
library only and imports nothing from GIMP. Pixels travel as Netpbm PAM files: uncompressed
8- or 16-bit samples behind a short text header, written and read here without any image
library and understood by `srgan upscale`.

Every layer of one run goes through one `srgan upscale` process (one torch import, one model
load). That process is started by a guard (this file run as a script, `python3 bridge.py
--guard DIR`) which outlives the plug-in: GIMP ends a cancelled plug-in with SIGKILL, which
nothing inside the plug-in can catch, so the guard notices the plug-in's end by its pipe
closing, stops srgan and removes the scratch folder with the layers' pixels.
"""

from __future__ import annotations

import array
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

CONFIG_NAME = "srgan.json"
TUPLE_TYPES = {1: "GRAYSCALE", 2: "GRAYSCALE_ALPHA", 3: "RGB", 4: "RGB_ALPHA"}
SCRATCH_PREFIX = "srgan-gimp-"
MIN_TILE = 40
"""The smallest tile the core takes with its default 16-pixel overlap (2 × 16 + 8)."""
MAX_TILE = 4096

DEVICES = {"auto": "auto", "cpu": "cpu", "cuda": "cuda", "cuda-1": "cuda:1", "cuda-2": "cuda:2", "cuda-3": "cuda:3"}
"""Device choices of the dialog (nick: the CLI's value; nicks are kept to letters, digits and dashes)."""
DEVICE_LABELS = {
    "auto": "auto (a GPU when there is one)",
    "cpu": "cpu",
    "cuda": "cuda (the first NVIDIA GPU)",
    "cuda-1": "cuda:1",
    "cuda-2": "cuda:2",
    "cuda-3": "cuda:3",
}
BACKEND_LABELS = {
    "auto": "auto (a built engine, else eager)",
    "eager": "eager (PyTorch)",
    "compiled": "compiled (AOTInductor)",
    "tensorrt": "tensorrt (NVIDIA)",
}
"""Backend choices (nick, the CLI's value too: label)."""
PRECISION_LABELS = {"auto": "auto (fp16 on GPU, fp32 on CPU)", "fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}
BACKENDS = tuple(BACKEND_LABELS)
PRECISIONS = tuple(PRECISION_LABELS)
DEFAULT_MODEL = "default"
OTHER_MODEL = "file"


class BridgeError(Exception):
    """Why an upscale failed, in the CLI's own one-line words when it gave any.

    setting/suggestion: what the CLI said governs the problem (its core names, e.g. "device")
    and a value that would work; `str()` is the reason with advice in the dialog's words.
    """

    def __init__(self, reason: str, setting: str | None = None, suggestion: str | None = None) -> None:
        self.reason = reason
        self.setting = setting
        self.suggestion = suggestion
        hint = advice(setting, suggestion)
        super().__init__(f"{reason}. {hint}" if hint else reason)


def advice(setting: str | None, suggestion: str | None) -> str:
    """What to change in the dialog, from the setting and value an error points at; '' if nothing there helps."""
    if setting == "model":
        return "Choose another model in the Model field"
    if setting == "device":
        nick = {value: nick for nick, value in DEVICES.items()}.get(suggestion or "")
        return f"Set Device to {nick}" if nick else "Choose another Device"
    if setting == "precision":
        return f"Set Precision to {suggestion}" if suggestion in PRECISIONS else "Choose another Precision"
    if setting == "backend":
        return f"Set Backend to {suggestion}" if suggestion in BACKENDS else "Choose another Backend"
    if setting == "tile_size":
        if suggestion and suggestion.isdigit() and MIN_TILE <= int(suggestion) <= MAX_TILE:
            return f"Set Tile size to {suggestion}"
        return "Choose a smaller Tile size"
    return ""  # engines_dir, output paths and formats are the plug-in's own business, not the user's


@dataclass(frozen=True)
class Pixels:
    """Interleaved samples, native byte order: what a GEGL buffer gives and takes."""

    width: int
    height: int
    channels: int
    deep: bool  # 16 bits per sample rather than 8
    data: bytes


@dataclass(frozen=True)
class Request:
    """What the dialog asks of srgan, in the CLI's values.

    model: a model file's path, '' for the bundled model. tile: input pixels, 0 automatic.
    scale: output size as a multiple of the input, 0 the model's factor.
    """

    model: str = ""
    tile: int = 0
    device: str = "auto"
    backend: str = "auto"
    precision: str = "auto"
    scale: float = 0.0


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


def build_arguments(command: list[str], sources: Sequence[Path], out_dir: Path, request: Request) -> list[str]:
    """The one `srgan upscale` call for every layer: each `DIR/NAME.pam` becomes `out_dir/NAME.pam`.

    The pixel limit is off: a layer is already in GIMP's memory, so the decompression-bomb guard
    has nothing to guard.
    """
    arguments = [*command, "upscale", *map(str, sources), "-o", str(out_dir), "--name", "{stem}", "-f", "pam"]
    arguments += ["--json", "--overwrite", "--max-pixels", "0"]
    arguments += ["--device", request.device, "--backend", request.backend, "--precision", request.precision]
    if request.model:
        arguments += ["--model", request.model]
    if request.tile:
        arguments += ["--tile", str(request.tile)]
    if request.scale:
        arguments += ["--scale", f"{request.scale:g}"]
    return arguments


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(width, height) enlarged by `scale` and rounded as `srgan upscale --scale` rounds them."""
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass(frozen=True)
class Event:
    """One line of `srgan upscale --json`; kind is progress, failed (a failed result), error, exit or other."""

    kind: str
    source: str = ""
    fraction: float = 0.0
    message: str = ""
    setting: str | None = None
    suggestion: str | None = None
    code: int = 0


def parse_event(line: str) -> Event:
    """One line of `srgan upscale --json` output (or the guard's exit line); anything else is 'other'."""
    try:
        event = json.loads(line)
    except ValueError:
        return Event("other")
    if not isinstance(event, dict):
        return Event("other")
    kind, source = event.get("event"), str(event.get("input") or "")
    hints = {"setting": event.get("setting") or None, "suggestion": event.get("suggestion") or None}
    if kind == "progress":
        return Event("progress", source, fraction=float(event.get("fraction", 0.0)))
    if kind == "result" and event.get("status") == "failed":
        reason = event.get("problem") or _without_flags(str(event.get("detail") or ""), hints["setting"])
        return Event("failed", source, message=str(reason), **hints)
    if kind == "error":
        reason = event.get("problem") or _without_flags(str(event.get("message") or ""), hints["setting"])
        return Event("error", message=str(reason), **hints)
    if kind == "srgan-gimp-exit":
        return Event("exit", code=int(event.get("code", 1)))
    return Event("other")


def _without_flags(message: str, setting: object) -> str:
    """The CLI's line without the advice it words as a flag ("...; use --device cpu"): the
    dialog words that advice itself from `setting`. The `problem` key, where the CLI gives it,
    is the line without advice already."""
    head, separator, tail = message.rpartition("; ")
    return head if setting and separator and "--" in tail else message


_BOX = re.compile(r"^[\s│╭╮╰╯─┃━┏┓┗┛|]+|[\s│╭╮╰╯─┃━┏┓┗┛|]+$")


def unexplained_failure(stderr: str, code: int) -> str:
    """The reason to show when srgan ended without a JSON error: a generic line, plus srgan's own
    last line when it is a message (a usage error) rather than part of a traceback."""
    if "Traceback" in stderr:
        return f"srgan stopped with an internal error (exit code {code}); this is a bug in srgan, please report it"
    lines = [_BOX.sub("", line).strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and not line.startswith(("Usage:", "Try '"))]
    if not lines:
        return f"srgan stopped without saying why (exit code {code})"
    return f"srgan stopped (exit code {code}): {lines[-1].removeprefix('error: ')}"


def _die_with_parent() -> None:
    """In srgan (run by the guard): the default signal handling back, and SIGTERM when the guard dies."""
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)  # the guard ignores them, and that would be inherited
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


class Scratch:
    """A private temporary folder that disappears on every way the plug-in can end.

    Normal ends and exceptions remove it in `close()`; when GIMP kills the plug-in, the guard
    (started here, in its own session so that it outlives the plug-in) removes it once the
    pipe from the plug-in closes.
    """

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
        self._guard: subprocess.Popen | None = None

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, arguments: list[str]) -> subprocess.Popen:
        """Start srgan with `arguments` under the guard; its stdout (JSON lines) comes back on the pipe."""
        try:
            self._guard = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--guard", str(self.path), "--", *arguments],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
        except OSError as error:
            raise BridgeError(f"{sys.executable}: cannot start the srgan guard ({error.strerror})") from None
        return self._guard

    def stderr(self) -> str:
        """What srgan wrote on stderr (the guard keeps it in the scratch folder)."""
        try:
            return (self.path / "srgan.log").read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Stop srgan if it still runs and remove the folder; waits for both."""
        if self._guard is not None:
            if self._guard.stdin:
                self._guard.stdin.close()  # the guard's signal to stop srgan and clean up
            self._guard.wait()
            self._guard = None
        shutil.rmtree(self.path, ignore_errors=True)


def run_upscale(
    command: list[str],
    sources: Sequence[Path],
    scratch: Scratch,
    request: Request,
    progress: Callable[[float], None],
) -> list[Path]:
    """Upscale every source in one srgan process; returns each one's output, in order.

    progress: receives the fraction done over all sources. Raises BridgeError with the CLI's
    reason (and the setting it names) when any source fails; srgan is stopped at the first.
    One call per Scratch: the guard empties the scratch folder when the run is over.
    """
    out_dir = scratch.path / "out"
    out_dir.mkdir()
    order = {str(source): index for index, source in enumerate(sources)}
    guard = scratch.start(build_arguments(command, sources, out_dir, request))
    assert guard.stdout is not None  # a pipe
    failure: Event | None = None
    code = 1
    for line in guard.stdout:
        event = parse_event(line)
        if event.kind == "progress" and event.source in order:
            progress((order[event.source] + event.fraction) / len(sources))
        elif event.kind in ("failed", "error") and failure is None:
            failure = event
            _stop(guard)
        elif event.kind == "exit":
            code = event.code
    if failure is not None:
        raise BridgeError(failure.message or f"srgan failed (exit code {code})", failure.setting, failure.suggestion)
    if code != 0:
        raise BridgeError(unexplained_failure(scratch.stderr(), code))
    return [out_dir / f"{source.stem}.pam" for source in sources]


def _stop(guard: subprocess.Popen) -> None:
    """Ask the guard to stop srgan (the other layers would be thrown away anyway)."""
    if guard.stdin and not guard.stdin.closed:
        guard.stdin.close()


def guard_main(scratch: Path, arguments: list[str]) -> int:
    """Run srgan, report its exit code, and remove `scratch` once the plug-in's pipe (stdin) closes.

    srgan's stdout is this process's stdout (the plug-in reads it directly); its stderr goes to
    scratch/srgan.log. When stdin closes before srgan has finished (the plug-in died or gave
    up), srgan is stopped with SIGTERM, which it handles like Ctrl-C.
    """
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)  # only the pipe ends the guard's work
    log = open(scratch / "srgan.log", "w")
    closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
    try:
        process = subprocess.Popen(
            arguments, stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=log, preexec_fn=_die_with_parent
        )
    except OSError as error:
        reason = f"{arguments[0]}: cannot start srgan ({error.strerror}); run 'srgan gimp install' again"
        _tell({"event": "error", "message": reason})
    else:
        while process.poll() is None:
            if closed.wait(0.2):
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        _tell({"event": "srgan-gimp-exit", "code": process.returncode})
    try:
        sys.stdout.flush()
    except OSError:
        pass  # the plug-in is gone
    os.close(sys.stdout.fileno())  # the plug-in's read loop ends here (sys.stdout.close() keeps the descriptor)
    closed.wait()
    log.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _tell(event: dict) -> None:
    """One JSON line to the plug-in, if it is still there to read it."""
    try:
        print(json.dumps(event), flush=True)
    except OSError:
        pass


@dataclass(frozen=True)
class ModelEntry:
    """A model the dialog offers by name."""

    nick: str
    label: str
    path: str


def parse_models(output: str) -> list[ModelEntry]:
    """The models `srgan models --json` lists, minus files it could not load and the bundled
    model (the dialog names that one itself); nicks are unique, lower-case and dash-separated."""
    entries: list[ModelEntry] = []
    taken = {DEFAULT_MODEL, OTHER_MODEL}
    for line in output.splitlines():
        try:
            model = json.loads(line)
        except ValueError:
            continue
        if not isinstance(model, dict) or "error" in model or not model.get("path"):
            continue
        path = Path(str(model["path"]))
        if path.parent.name == "weights" and path.name == "srgan_x4.safetensors":
            continue  # the bundled model: "default"
        base = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-") or "model"
        nick, number = base, 2
        while nick in taken:
            nick, number = f"{base}-{number}", number + 1
        taken.add(nick)
        scale = f", {model['scale']}×" if model.get("scale") else ""
        entries.append(ModelEntry(nick, f"{path.stem} ({model.get('arch', 'model')}{scale})", str(path)))
    return entries


def model_folders(plugin_dir: Path) -> list[Path]:
    """The model folders `srgan gimp install` recorded; [] for an older record."""
    try:
        folders = json.loads((plugin_dir / CONFIG_NAME).read_text()).get("model_dirs", [])
        return [Path(folder) for folder in folders if isinstance(folder, str)]
    except (OSError, ValueError, AttributeError):
        return []


def folders_key(folders: Sequence[Path]) -> list[list[object]]:
    """What the model folders hold (names, sizes, modification times): a new key means ask srgan again."""
    key: list[list[object]] = []
    for folder in folders:
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:
            continue
        key += [
            [str(folder), entry.name, entry.stat().st_size, entry.stat().st_mtime_ns]
            for entry in entries
            if entry.is_file() and not entry.name.startswith(".")
        ]
    return key


def list_models(command: list[str], folders: Sequence[Path], cache: Path, timeout: float = 120.0) -> list[ModelEntry]:
    """The models in srgan's model folders, by `srgan models --json`; [] when srgan cannot say
    (the dialog still offers the bundled model and "another file").

    srgan's answer is kept in `cache` with what the folders held, since asking costs a torch
    import (seconds) and GIMP builds the procedure every time the plug-in starts.
    """
    key = folders_key(folders) if folders else None
    try:
        cached = json.loads(cache.read_text())
        if key is not None and cached["key"] == key:
            return parse_models(cached["output"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        done = subprocess.run(
            [*command, "models", "--json"], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    if key is not None:
        try:
            cache.write_text(json.dumps({"key": key, "output": done.stdout}))
        except OSError:
            pass  # next time asks srgan again
    return parse_models(done.stdout)


@dataclass(frozen=True)
class Choices:
    """The dialog's values as GIMP's config holds them (choice nicks, not CLI values)."""

    model: str = DEFAULT_MODEL
    model_file: str = ""
    auto_tile: bool = True
    tile: int = 512
    device: str = "auto"
    backend: str = "auto"
    precision: str = "auto"
    scale: float = 0.0


def save_choices(path: Path, choices: Choices) -> None:
    """Remember the dialog's values (GIMP keeps them only after a successful run)."""
    temporary = path.with_name(f".{path.name}.partial")
    try:
        temporary.write_text(json.dumps(asdict(choices)))
        temporary.replace(path)
    except OSError:
        pass  # remembering is a convenience; the run itself must not fail for it


def load_choices(path: Path) -> Choices | None:
    """The values saved by `save_choices`, or None when there are none or they are unreadable."""
    try:
        saved = json.loads(path.read_text())
        known = {field.name: field.type for field in fields(Choices)}
        return Choices(**{key: value for key, value in saved.items() if key in known})
    except (OSError, ValueError, TypeError, AttributeError):
        return None


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
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BridgeError(f"{path}: srgan reported success but wrote no result ({error.strerror})") from None
    end = data.find(b"ENDHDR\n")
    if not data.startswith(b"P7\n") or end < 0:
        raise BridgeError(f"{path}: not a PAM file")
    fields_ = dict(line.split(" ", 1) for line in data[3:end].decode("ascii").splitlines() if " " in line)
    width, height, channels = int(fields_["WIDTH"]), int(fields_["HEIGHT"]), int(fields_["DEPTH"])
    deep = int(fields_["MAXVAL"]) > 255
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


if __name__ == "__main__" and len(sys.argv) > 3 and sys.argv[1] == "--guard" and sys.argv[3] == "--":
    sys.exit(guard_main(Path(sys.argv[2]), sys.argv[4:]))
