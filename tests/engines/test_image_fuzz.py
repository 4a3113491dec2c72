"""Fuzzing image headers: any file gives an image or a one-line ImageReadError, in bounded time and memory.

Files come from valid images of every input format with bytes changed, cut or inserted (biased
toward the header), and from structured builders that keep checksums right so the hostile
values reach the decoders: PNG chunks, TIFF tags, PAM header fields. Each file is read in a
child process (tests/engines/read_worker.py) under an address-space limit; a missing answer
within the time bound is a hang.
"""

from __future__ import annotations

import io
import json
import os
import resource
import select
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.engines.forge import LONG, RATIONAL, SHORT, pam_bytes, png_bytes, png_chunk, tiff_bytes
from tests.helpers import random_image

REPO = Path(__file__).resolve().parents[2]
ANSWER_SECONDS = 30.0
"""Time bound per file; generous because the test machines are shared, far below a hang."""
ADDRESS_SPACE = 4 << 30
"""The child's address-space limit; importing torch takes about 0.7 GiB of it."""
PEAK_MIB = 1500
"""Peak resident memory allowed; reading a tiny file must not approach it."""
MAX_PIXELS = 4_000_000
FUZZ = settings(
    max_examples=int(os.environ.get("SRGAN_FUZZ_EXAMPLES", "40")),  # raise it to fuzz for longer
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


class Reader:
    """Talks to one read_worker child; restarts it after a crash or a hang."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.engines.read_worker"],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                preexec_fn=_limit_memory,
            )
        return self._process

    def read(self, path: Path, max_pixels: int = MAX_PIXELS) -> dict:
        process = self._start()
        process.stdin.write(json.dumps({"path": str(path), "max_pixels": max_pixels}) + "\n")
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], ANSWER_SECONDS + 60)  # + start-up on a first call
        line = process.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise AssertionError(f"no answer for {path} ({len(path.read_bytes())} bytes): hang or crash")
        return json.loads(line)

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


@pytest.fixture(scope="module")
def reader():
    worker = Reader()
    yield worker
    worker.stop()


def assert_image_or_one_line_error(reader: Reader, folder: Path, data: bytes, name: str = "fuzzed.bin") -> dict:
    path = folder / name
    path.write_bytes(data)
    answer = reader.read(path)
    if answer["ok"]:
        height, width, channels = answer["shape"]
        assert height > 0 and width > 0 and 1 <= channels <= 4 and answer["dtype"] in ("uint8", "uint16"), answer
    else:
        assert answer["type"] == "ImageReadError", answer
        message = answer["message"]
        assert "\n" not in message and message.startswith(str(path)), answer
        assert "memory" not in message, answer  # a small file must never need the memory bound
    assert answer["peak_mib"] < PEAK_MIB, answer
    return answer


def _encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _frames() -> list[Image.Image]:
    return [Image.fromarray(random_image(6, 5, 3, seed=seed)) for seed in range(3)]


def _bases() -> dict[str, bytes]:
    import imagecodecs

    rgb, rgba = Image.fromarray(random_image(6, 5, 3)), Image.fromarray(random_image(6, 5, 4))
    frames = _frames()
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "png": _encoded(rgba, "PNG"),
        "png16": imagecodecs.png_encode(random_image(6, 5, 3, dtype=np.uint16)),
        "apng": _encoded(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50),
        "gif": _encoded(rgb.convert("P"), "GIF"),
        "gif-animated": _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
        "webp": _encoded(rgba, "WEBP", lossless=True),
        "webp-lossy": _encoded(rgb, "WEBP", quality=50),
        "webp-animated": _encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50),
        "jpeg": _encoded(rgb, "JPEG", exif=exif.tobytes(), dpi=(300, 300)),
        "bmp": _encoded(rgb, "BMP"),
        "tiff": tiff_bytes([(random_image(6, 5, 3), {282: (RATIONAL, [(300, 1)]), 296: (SHORT, [2])})]),
        "tiff16": tiff_bytes([(random_image(6, 5, 4, dtype=np.uint16), {338: (SHORT, [2])})]),
        "tiff-pillow": _encoded(rgb, "TIFF", compression="tiff_lzw"),
        "pam": pam_bytes({"WIDTH": 5, "HEIGHT": 6, "DEPTH": 3, "MAXVAL": 255}, random_image(6, 5, 3).tobytes()),
    }


BASES = _bases()


@st.composite
def mutated_files(draw, names=tuple(sorted(BASES)), header_only: bool = False) -> bytes:
    data = bytearray(BASES[draw(st.sampled_from(names))])
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        header = st.integers(0, min(47, len(data) - 1))
        position = draw(header if header_only else st.one_of(header, st.integers(0, len(data) - 1)))
        action = draw(st.sampled_from(["set", "truncate", "insert", "delete", "extreme"]))
        if action == "set":
            data[position] = draw(st.integers(0, 255))
        elif action == "extreme":  # a field pushed to its largest or smallest value
            width = draw(st.sampled_from([2, 4]))
            data[position : position + width] = draw(st.sampled_from([b"\xff", b"\x00", b"\x7f"])) * width
        elif action == "truncate":
            del data[position:]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[position : position + draw(st.integers(1, 16))]
    return bytes(data)


@FUZZ
@given(data=mutated_files())
def test_mutated_files_of_every_format(reader, tmp_path, data):
    assert_image_or_one_line_error(reader, tmp_path, data)


@FUZZ
@given(
    data=mutated_files(names=("gif", "gif-animated", "webp", "webp-lossy", "webp-animated", "bmp"), header_only=True)
)
def test_mutated_gif_webp_and_bmp_headers(reader, tmp_path, data):
    assert_image_or_one_line_error(reader, tmp_path, data)


_PNG_CHUNK_KINDS = [b"tEXt", b"zTXt", b"iTXt", b"iCCP", b"eXIf", b"pHYs", b"acTL", b"fcTL", b"tRNS", b"PLTE", b"sBIT"]
_chunk_data = st.one_of(
    st.binary(max_size=48),
    st.binary(max_size=48).map(lambda payload: b"key\0\0" + zlib.compress(payload)),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 3)).map(
        lambda fields: struct.pack(">IIB", *fields)
    ),
    st.integers(0, 2**32 - 1).map(lambda frames: struct.pack(">II", frames, 0)),
)


@st.composite
def png_files(draw) -> bytes:
    width = draw(st.one_of(st.integers(0, 24), st.sampled_from([2**31 - 1, 2**32 - 1, 70_000])))
    height = draw(st.one_of(st.integers(0, 24), st.sampled_from([2**31 - 1, 1_000_000])))
    bit_depth = draw(st.sampled_from([8, 16, 1, 2, 4, 0, 3, 32]))
    color_type = draw(st.sampled_from([2, 6, 0, 4, 3, 1, 5, 7]))
    chunks = draw(st.lists(st.tuples(st.sampled_from(_PNG_CHUNK_KINDS), _chunk_data), max_size=4))
    rows = None if max(width, height) <= 24 and bit_depth <= 16 else draw(st.binary(max_size=64))
    data = png_bytes(width, height, chunks, bit_depth=bit_depth, color_type=color_type, rows=rows)
    if draw(st.booleans()):  # a stray chunk after the image, where some readers stop looking
        data = data[:-12] + png_chunk(draw(st.sampled_from(_PNG_CHUNK_KINDS)), draw(_chunk_data)) + data[-12:]
    return data


@FUZZ
@given(data=png_files())
def test_png_chunks_with_valid_checksums(reader, tmp_path, data):
    assert_image_or_one_line_error(reader, tmp_path, data)


_TIFF_TAGS = [254, 256, 257, 258, 259, 262, 273, 274, 277, 278, 279, 282, 283, 284, 296, 317, 338, 339, 34675]


@st.composite
def tiff_files(draw) -> bytes:
    pages = []
    for _ in range(draw(st.integers(1, 2))):
        shape = (draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 5)))
        pixels = random_image(*shape, dtype=draw(st.sampled_from([np.uint8, np.uint16])))
        tags = {}
        for tag in draw(st.lists(st.sampled_from(_TIFF_TAGS), max_size=4, unique=True)):
            kind = draw(st.sampled_from([SHORT, LONG, RATIONAL]))
            count = draw(st.integers(1, 5))
            if kind == RATIONAL:
                values = [(draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 3))) for _ in range(count)]
            else:
                top = 2**16 - 1 if kind == SHORT else 2**32 - 1
                values = [draw(st.one_of(st.integers(0, 9), st.just(top))) for _ in range(count)]
            tags[tag] = (kind, values)
        pages.append((pixels, tags))
    return tiff_bytes(pages)


@FUZZ
@given(data=tiff_files())
def test_tiff_tags(reader, tmp_path, data):
    assert_image_or_one_line_error(reader, tmp_path, data, "fuzzed.tif")


_pam_values = st.one_of(
    st.integers(-5, 70_000).map(str),
    st.sampled_from(["", "1_0", "+3", "0x10", "9" * 30, "9" * 5000, "RGB", "RGB_ALPHA", "GRAYSCALE", "CMYK", "é"]),
)


@st.composite
def pam_files(draw) -> bytes:
    keys = draw(st.lists(st.sampled_from(["WIDTH", "HEIGHT", "DEPTH", "MAXVAL", "TUPLTYPE", "FOO"]), max_size=6))
    header = {key: draw(_pam_values) for key in keys}
    body = draw(st.one_of(st.binary(max_size=256), st.integers(0, 400).map(lambda size: bytes(size))))
    return pam_bytes(header, body)


@FUZZ
@given(data=pam_files())
def test_pam_headers(reader, tmp_path, data):
    assert_image_or_one_line_error(reader, tmp_path, data, "fuzzed.pam")


@pytest.mark.parametrize("name", sorted(BASES))
def test_every_base_file_reads_or_is_refused_for_its_frames(reader, tmp_path, name):
    """The fuzzing starts from files that read (or, for animations, are refused as such)."""
    answer = assert_image_or_one_line_error(reader, tmp_path, BASES[name], f"base-{name}")
    assert answer["ok"] == ("animated" not in name and name != "apng"), answer
    if not answer["ok"]:
        assert "3 frames" in answer["message"]


def test_a_named_pipe_is_refused_without_blocking(reader, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    answer = reader.read(fifo)  # opening a pipe with no writer would block forever
    assert answer["type"] == "ImageReadError" and "named pipe" in answer["message"]
