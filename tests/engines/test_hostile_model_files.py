"""Model files made to hurt: each gives a loaded model or a one-line ModelFileError, quickly and in little memory."""

from __future__ import annotations

import io
import json
import os
import pickle
import resource
import signal
import struct
import tarfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from srgan.engines import GeneratorConfig, LoadedModel, ModelFileError, load_generator, load_model, save_model
from tests.helpers import tiny_generator


def state() -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in tiny_generator().state_dict().items()}


def refused(path: Path, match: str) -> str:
    with pytest.raises(ModelFileError, match=match) as error:
        load_model(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


# Item 1: nothing a file nests may make the loader loop.


def test_a_dict_that_contains_itself_is_refused(tmp_path):
    looping: dict = {}
    looping["model"] = looping
    path = tmp_path / "loop.pth"
    torch.save(looping, path)
    refused(path, "no state dict of tensors")


def test_wrappers_deeper_than_any_checkpoint_are_refused(tmp_path):
    nested: dict = state()
    for _ in range(50):
        nested = {"state_dict": nested}
    path = tmp_path / "deep.pth"
    torch.save(nested, path)
    refused(path, "no state dict of tensors")


def test_a_list_that_contains_itself_is_refused(tmp_path):
    looping: list = []
    looping.append(looping)
    path = tmp_path / "loop.pth"
    torch.save({"model": looping}, path)
    refused(path, "no state dict of tensors")


# Item 2: the network's size comes from the tensors present, within bounds, before allocation.


def test_a_far_block_index_is_refused_without_building_the_network(tmp_path):
    tensors = {
        "head.0.weight": torch.zeros(8, 3, 9, 9),
        "body.999999.conv1.weight": torch.zeros(1),
        "upsample.1.0.weight": torch.zeros(1),
    }
    path = tmp_path / "far.safetensors"
    save_file(tensors, path, metadata={"format": "srgan-generator"})
    refused(path, "layer body.999999 is out of range; srgan loads body layers numbered 0 to 63")


@pytest.mark.parametrize(
    "rename",
    [
        {"body.0.conv1.weight": "body.1.conv1.weight"},  # blocks 1, 1: no block 0
        {"upsample.0.0.weight": "upsample.2.0.weight"},  # stages 1, 2: no stage 0
    ],
)
def test_layer_numbers_with_gaps_are_refused(tmp_path, rename):
    tensors = state()
    for old, new in rename.items():
        tensors[new] = tensors.pop(old)
    path = tmp_path / "gap.pth"
    torch.save(tensors, path)
    refused(path, "without gaps")


def test_too_many_blocks_are_refused(tmp_path):
    tensors = {"head.0.weight": torch.zeros(4, 3, 9, 9), "upsample.0.0.weight": torch.zeros(1)}
    tensors.update({f"body.{index}.conv1.weight": torch.zeros(1) for index in range(65)})
    path = tmp_path / "deep.safetensors"
    save_file(tensors, path)
    refused(path, "layer body.64 is out of range")


def test_a_huge_head_described_over_a_few_bytes_is_refused(tmp_path):
    # A stride-0 view: 20000×3×9×9 elements that a .pth stores in 4 bytes.
    head = torch.zeros(1).as_strided((20000, 3, 9, 9), (0, 0, 0, 0))
    path = tmp_path / "wide.pth"
    torch.save(
        {"head.0.weight": head, "body.0.conv1.weight": torch.zeros(1), "upsample.0.0.weight": torch.zeros(1)}, path
    )
    assert path.stat().st_size < 4096
    refused(path, "20000 channels; srgan loads generators of 1 to 256")


def test_a_right_sized_tensor_over_a_tiny_storage_is_copied_not_trusted(tmp_path):
    # A stride-0 tensor of the expected shape is legal (every weight equal); it loads like a full one.
    tensors = state()
    tensors["tail.weight"] = torch.full((1,), 0.01).as_strided(tensors["tail.weight"].shape, (0, 0, 0, 0))
    path = tmp_path / "shared.pth"
    torch.save(tensors, path)
    generator, _ = load_generator(path)
    assert torch.equal(generator.tail.weight, torch.full_like(generator.tail.weight, 0.01))


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_non_float_weights_are_refused(tmp_path, dtype):
    tensors = state()
    tensors["tail.bias"] = torch.zeros(3, dtype=dtype)
    path = tmp_path / "ints.pth"
    torch.save(tensors, path)
    refused(path, "tail.bias.*expected floating point")


def test_sparse_weights_are_refused(tmp_path):
    tensors = state()
    tensors["tail.bias"] = torch.zeros(3).to_sparse()
    path = tmp_path / "sparse.pth"
    torch.save(tensors, path)
    refused(path, "not a plain dense tensor")


def test_non_string_names_and_clashing_prefixes_are_refused(tmp_path):
    numbered = tmp_path / "numbered.pth"
    torch.save({**state(), 7: torch.zeros(1)}, numbered)
    refused(numbered, "a tensor is named '7'")
    clashing = tmp_path / "clash.pth"
    torch.save({**state(), "module.tail.bias": torch.zeros(3)}, clashing)
    refused(clashing, "two tensors named 'tail.bias'")


# Item 3: weights and ranges that can only give NaN or black images are refused on load.


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_non_finite_weights_are_named(tmp_path, value, suffix):
    tensors = state()
    tensors["body.0.conv2.weight"][0, 0, 1, 1] = value
    path = tmp_path / f"diverged{suffix}"
    if suffix == ".pth":
        torch.save(tensors, path)
    else:
        save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, path)
    refused(path, "tensor 'body.0.conv2.weight' holds NaN or infinite values")


def test_negative_batchnorm_variances_are_refused(tmp_path):
    tensors = state()
    tensors["body.0.bn1.running_var"][0] = -1.0
    path = tmp_path / "negative.pth"
    torch.save(tensors, path)
    refused(path, "body.0.bn1.running_var' holds negative variances")


def test_weights_that_overflow_when_batchnorm_is_folded_are_refused(tmp_path):
    tensors = state()
    tensors["body.0.bn1.running_var"].zero_()
    tensors["body.0.bn1.weight"].fill_(3e38)
    path = tmp_path / "overflow.pth"
    torch.save(tensors, path)
    refused(path, "once BatchNorm is folded in")


@pytest.mark.parametrize(
    "value",
    ["[0, Infinity]", "[NaN, 1]", "[-Infinity, 0]", "[0, 1e400]", "[1, 0]", "[0, 0]", "[0, 1e-9]", "[0, 1e9]"],
)
def test_unusable_value_ranges_are_refused(tmp_path, value):
    path = tmp_path / "range.safetensors"
    save_model(path, tiny_generator())
    tensors = {name: tensor.contiguous() for name, tensor in state().items()}
    save_file(tensors, path, metadata={"format": "srgan-generator", "input_range": value})
    refused(path, "input_range=.* is not a usable value range")


@pytest.mark.parametrize("value", ["[0]", "[0, 1, 2]", '"x"', "{}", "[[0], 1]", "[" * 100_000, "9" * 5000])
def test_malformed_value_ranges_are_refused(tmp_path, value):
    path = tmp_path / "range.safetensors"
    tensors = {name: tensor.contiguous() for name, tensor in state().items()}
    save_file(tensors, path, metadata={"format": "srgan-generator", "output_range": value})
    refused(path, "output_range=.* is not a")


def test_training_metadata_cannot_reach_the_terminal_raw(tmp_path):
    path = tmp_path / "chatty.safetensors"
    save_model(path, tiny_generator(), {"note\x1b[2J": "\x1b]0;owned\x07" + "x" * 10_000, "rtl": "\u202eevil"})
    training = load_model(path).info.training
    text = json.dumps(training, ensure_ascii=False)
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert all(len(value) <= 501 for value in training.values())
    nested = tmp_path / "nested.safetensors"
    tensors = {name: tensor.contiguous() for name, tensor in state().items()}
    save_file(tensors, nested, metadata={"format": "srgan-generator", "training": "[" * 100_000})
    assert load_model(nested).info.training == {"note": ("[" * 500) + "…"}


# Item 4: what a file that is not a model is, said in one line; no code from it ever runs.


class Payload:
    """Unpickling this would run code: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_raw_pickles_with_code_are_named_as_such_and_never_run(tmp_path, protocol):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"model": Payload(marker)}, protocol=protocol))
    message = refused(path, "a pickle that needs code to load .*system.*convert it to safetensors")
    assert not marker.exists(), message


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_pytorch_files_with_code_are_named_as_such_and_never_run(tmp_path, zipped):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": state(), "hook": Payload(marker)}, path, _use_new_zipfile_serialization=zipped)
    refused(path, "needs code to load .*system")
    assert not marker.exists()


def test_a_raw_pickle_without_code_is_not_a_model_file(tmp_path):
    path = tmp_path / "data.pt"
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    refused(path, "is not a PyTorch model file")


def test_a_compressed_archive_member_is_refused_before_it_inflates(tmp_path):
    packed = tmp_path / "packed.pth"
    torch.save(state(), packed)
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(packed) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            target.writestr(item.filename, source.read(item.filename))
    refused(bomb, "compressed member .* could inflate")


def test_tar_format_files_are_refused(tmp_path):
    path = tmp_path / "old.pth"
    with tarfile.open(path, "w") as archive:
        for name in ("sys_info", "pickle", "storages", "tensors"):
            data = b"\x80\x02}q\x00."
            item = tarfile.TarInfo(name)
            item.size = len(data)
            archive.addfile(item, io.BytesIO(data))
    refused(path, "PyTorch 0.x tar file")


def test_a_folder_named_like_a_model_is_not_found(tmp_path):
    (tmp_path / "model.pth").mkdir()
    refused(tmp_path / "model.pth", "not found")


# Fuzzing: headers and metadata of safetensors files, and pickled structures of PyTorch files.

NAMES = sorted(state()) + ["body.1.conv1.weight", "body.64.conv1.weight", "upsample.3.0.weight", "x", ""]
DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I8", "BOOL", "U8", "F8_E4M3", "C64", "??"]
METADATA_KEYS = [
    "format",
    "arch",
    "scale",
    "blocks",
    "channels",
    "batchnorm",
    "input_range",
    "output_range",
    "training",
]
HOSTILE_TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        ["srgan-generator", "srgan", "4", "8", "16", "[0, 1]", "[0, Infinity]", "[NaN, NaN]", '{"a": [1, {"b": 2}]}']
    ),
    st.builds(lambda depth: "[" * depth + "]" * depth, st.integers(0, 5000)),
)


@contextmanager
def time_limit(seconds: float):
    """Fail an example that takes longer than `seconds` (an endless loop would never return)."""

    def expired(*_):
        raise TimeoutError(f"took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def loads_or_refuses(path: Path) -> None:
    with time_limit(10):
        try:
            result = load_model(path)
        except ModelFileError as error:
            assert "\n" not in str(error) and str(path) in str(error)
        else:
            assert isinstance(result, LoadedModel)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@st.composite
def safetensors_bytes(draw) -> bytes:
    header: dict[str, object] = {}
    offset = 0
    for name in draw(st.lists(st.one_of(st.sampled_from(NAMES), st.text(max_size=12)), max_size=8, unique=True)):
        shape = draw(st.lists(st.one_of(st.integers(0, 9), st.integers(-2, 2**40)), max_size=4))
        length = draw(st.one_of(st.integers(0, 64), st.just(4 * max(1, min(64, abs(int(sum(shape))))))))
        header[name] = {
            "dtype": draw(st.sampled_from(DTYPES)),
            "shape": shape,
            "data_offsets": [offset, offset + length],
        }
        offset += length if draw(st.booleans()) else draw(st.integers(0, 8))
    if draw(st.booleans()):
        keys = st.one_of(st.sampled_from(METADATA_KEYS), st.text(max_size=8))
        header["__metadata__"] = draw(
            st.dictionaries(keys, st.one_of(HOSTILE_TEXT, st.integers(), st.none()), max_size=6)
        )
    text = json.dumps(header).encode()
    stated = len(text) if draw(st.booleans()) else draw(st.integers(0, 2**64 - 1))
    return struct.pack("<Q", stated) + text + bytes(draw(st.integers(0, offset + 8)))


@st.composite
def mutated_model(draw, suffix: str) -> bytes:
    """A valid tiny model file with a few bytes changed, cut, or metadata replaced."""
    buffer = io.BytesIO()
    if suffix == ".pth":
        torch.save(state(), buffer)
    else:
        buffer.write(VALID_SAFETENSORS)
    data = bytearray(buffer.getvalue())
    for _ in range(draw(st.integers(1, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))]) if draw(st.booleans()) else bytes(data)


def _valid_safetensors() -> bytes:
    from safetensors.torch import save

    return save({name: tensor.contiguous() for name, tensor in state().items()}, {"format": "srgan-generator"})


VALID_SAFETENSORS = _valid_safetensors()
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.one_of(safetensors_bytes(), mutated_model(".safetensors")))
def test_fuzzed_safetensors_load_or_are_refused_in_one_line(tmp_path, data):
    before = peak_rss_mib()
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(data)
    loads_or_refuses(path)
    assert peak_rss_mib() - before < 1024


TENSORS = st.one_of(
    st.sampled_from(list(state().values())),
    st.builds(lambda n: torch.zeros(1).as_strided((n, 3, 9, 9), (0, 0, 0, 0)), st.integers(0, 100_000)),
    st.builds(torch.full, st.just((3,)), st.sampled_from([float("nan"), float("inf"), 0.5])),
    st.just(torch.zeros(2, dtype=torch.int8)),
)
KEYS = st.one_of(st.sampled_from(NAMES + ["state_dict", "params_ema", "model", "module.head.0.weight"]), st.integers())
STRUCTURES = st.recursive(
    st.one_of(TENSORS, st.integers(), st.text(max_size=5), st.none()),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=6)),
    max_leaves=20,
)


@FUZZ
@given(structure=STRUCTURES, loop=st.booleans(), data=mutated_model(".pth"), mutate=st.booleans())
def test_fuzzed_pytorch_files_load_or_are_refused_in_one_line(tmp_path, structure, loop, data, mutate):
    before = peak_rss_mib()
    path = tmp_path / "fuzz.pth"
    if mutate:
        path.write_bytes(data)
    else:
        if loop and isinstance(structure, dict):
            structure["state_dict"] = structure
        torch.save(structure, path)
    loads_or_refuses(path)
    assert peak_rss_mib() - before < 1024


def test_fuzzing_finds_the_valid_model_loadable(tmp_path):
    """The fuzzers start from files that do load, so refusals above are of damage, not of everything."""
    path = tmp_path / "valid.safetensors"
    path.write_bytes(VALID_SAFETENSORS)
    assert load_model(path).info.config == GeneratorConfig(scale=4, blocks=1, channels=8, batchnorm=True)
