"""Uploads are untrusted: size limits before parsing, no bombs, headers checked before allocation."""

from __future__ import annotations

import io as _io
import json
import re
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save as st_save

import geninv
from geninv import io, limits, masks
from geninv.errors import BudgetError, GeninvError, InvalidMaskError, ModelFormatError

Image.preinit()  # PIL's format plugins are imported once, outside the measured calls


def _peak(fn, *args) -> tuple[Exception | None, int]:
    """The exception ``fn(*args)`` raised (or None) and the peak memory traced while it ran."""
    tracemalloc.start()
    try:
        fn(*args)
        error = None
    except Exception as exc:
        error = exc
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return error, peak


def _png(width: int, height: int, data: bytes = b"") -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (its pixel data may be short or empty)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")


def _npy(header: dict, body: bytes = b"") -> bytes:
    buffer = _io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return b"".join([buffer.getvalue(), body])


# ----------------------------------------------------------------------------- masks
@pytest.mark.parametrize("side", [20_000, 12_000, 5_000])  # 400 and 144 megapixels (PIL's bomb checks), 25
def test_decompression_bomb_png_is_refused_from_its_header(side):
    bomb = _png(side, side, b"\x00" * 1000)  # a file of a few hundred bytes
    error, peak = _peak(masks.from_png, bomb)
    assert isinstance(error, InvalidMaskError) and "at most 4000000 pixels" in str(error)
    assert peak < 1_000_000


def test_a_real_image_with_too_many_pixels_is_refused():
    real = _io.BytesIO()
    Image.new("L", (2100, 2100)).save(real, format="PNG")  # a real 4.4-megapixel image, 20 kB compressed
    with pytest.raises(InvalidMaskError, match="at most 4000000 pixels"):
        masks.from_png(real.getvalue())


def test_png_mask_from_a_folder_or_a_big_file_names_the_problem(tmp_path):
    with pytest.raises(InvalidMaskError, match="not a file"):
        masks.from_png(tmp_path)
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\x00" * (masks.MAX_MASK_PNG_BYTES + 1))
    with pytest.raises(InvalidMaskError, match="at most 5000000 bytes"):
        masks.from_png(big)
    with pytest.raises(InvalidMaskError, match="not a PNG"):
        masks.from_png(b"GIF89a" + b"\x00" * 30)


def test_npy_header_claiming_a_huge_array_is_refused_before_allocation():
    claim = _npy({"descr": "|b1", "fortran_order": False, "shape": (10**12,)}, b"\x01" * 16)
    error, peak = _peak(masks.from_npy, claim)
    assert isinstance(error, InvalidMaskError) and "(1000000000000,)" in str(error)
    assert peak < 1_000_000


@pytest.mark.parametrize(
    "header, body, match",
    [
        ({"descr": "|O", "fortran_order": False, "shape": (4,)}, b"", "dtype object"),
        ({"descr": "<c16", "fortran_order": False, "shape": (4,)}, b"\x00" * 64, "complex128"),
        ({"descr": "|b1", "fortran_order": False, "shape": (784,)}, b"\x01" * 10, "complete .npy"),
        ({"descr": "|b1", "fortran_order": False, "shape": (10,)}, b"\x01" * 10, "mask of 784 entries"),
    ],
)
def test_npy_masks_of_the_wrong_kind_are_refused(header, body, match):
    with pytest.raises(InvalidMaskError, match=match):
        masks.from_npy(_npy(header, body), 784)


def test_npy_and_png_masks_still_load():
    mask = np.arange(784) % 3 > 0
    np.testing.assert_array_equal(masks.from_npy(masks.to_npy(mask), 784), mask)
    np.testing.assert_array_equal(masks.from_png(masks.to_png(mask, (28, 28)), (28, 28)), mask)
    fortran = np.asfortranarray(mask.reshape(28, 28))
    buffer = _io.BytesIO()
    np.save(buffer, fortran)
    np.testing.assert_array_equal(masks.from_npy(buffer.getvalue(), 784), fortran.reshape(-1))


@given(st.binary(max_size=400))
@settings(max_examples=200, deadline=None)
def test_any_bytes_as_a_mask_give_a_mask_or_a_geninv_error(blob):
    for parse in (masks.from_png, masks.from_npy):
        try:
            parse(blob)
        except GeninvError:
            pass


@given(
    st.lists(st.integers(0, 2**40), max_size=3).map(tuple),
    st.sampled_from(["|b1", "<f8", "<i4", "|u1", "<f2", "|O", "<U3", "<c8", "|V4"]),
    st.booleans(),
    st.binary(max_size=64),
)
@settings(max_examples=200, deadline=None)
@example(shape=(0, 210734255, 5470973405), descr="<f8", fortran=False, body=b"")  # numpy could not reshape
def test_any_npy_header_gives_a_mask_or_a_geninv_error(shape, descr, fortran, body):
    try:
        masks.from_npy(_npy({"descr": descr, "fortran_order": fortran, "shape": shape}, body))
    except GeninvError:
        pass


@given(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1), st.binary(max_size=64))
@settings(max_examples=100, deadline=None)
def test_any_png_header_gives_a_mask_or_a_geninv_error(width, height, data):
    try:
        masks.from_png(_png(width, height, data))
    except GeninvError:
        pass


# ----------------------------------------------------------------------------- generators
@pytest.fixture(scope="module")
def saved():
    G = geninv.Generator.random([3, 8, 20], seed=0, bias=True)
    spec = G.describe() | {"format": "geninv-generator", "version": 1}
    tensors = {f"weight_{i}": G.weight(i).contiguous() for i in range(2)}
    tensors |= {f"bias_{i}": G.bias(i).contiguous() for i in range(2)}
    return spec, tensors


def _load(spec, tensors, **kw):
    arch = spec if isinstance(spec, bytes) else json.dumps(spec).encode()
    return io.load_generator_bytes(arch, tensors if isinstance(tensors, bytes) else st_save(tensors), **kw)


@pytest.mark.parametrize("size", [2_000_000, 20_000_000])
def test_huge_architecture_json_is_refused_by_size_with_a_short_message(saved, size):
    spec, tensors = saved
    arch = json.dumps(spec | {"widths": [3] + [8] * (size // 3)}).encode()
    error, peak = _peak(_load, arch, tensors)
    assert isinstance(error, ModelFormatError) and f"{len(arch)} bytes" in str(error)
    assert len(str(error)) < 200
    assert peak < 2_000_000


@pytest.mark.parametrize(
    "arch, match",
    [
        (b'{"widths": [3, 8, 20], "name": ' + b"[" * 5000 + b"]" * 5000 + b"}", "not valid JSON|nests deeper"),
        (b'{"widths": [3, 8, 20], "name": [[[[[1]]]]]}', "nests deeper than 3"),
        (b'{"widths": [3, ' + b"9" * 4000 + b", 20]}", "integer of 4000 digits"),
        (b'{"widths": [3, 1e400, 20]}', "'widths' must be a list"),
        (b'{"widths": [3, 8, 20], "dtype": "float8_e4m3fn"}', "'dtype' must be one of"),
        (b'{"widths": [3, 8, 20], "dtype": ["float32"]}', "'dtype' must be one of"),
        (b'{"widths": [3, 8, 20], "pickle": "yes"}', "Unknown key"),
        (b'{"widths": [3, 8, 20], "hidden": {"name": "relu", "extra": 1}}', "may only have"),
        (b'{"widths": [3, 8, 20], "hidden": {"name": ["relu"]}}', "Unknown hidden activation"),
        (b'{"widths": [3, 8, 20], "hidden": {"name": "leaky_relu", "negative_slope": true}}', "negative_slope"),
    ],
)
def test_hostile_architecture_json_is_refused_naming_the_problem(saved, arch, match):
    _, tensors = saved
    error, peak = _peak(_load, arch, tensors)
    assert isinstance(error, ModelFormatError), error
    assert re.search(match, str(error)), str(error)
    assert len(str(error)) < 400 and peak < 2_000_000


def test_odd_weight_dtypes_are_refused_and_half_precision_loads_as_float32(saved):
    spec, tensors = saved
    odd = {k: v.to(torch.float8_e4m3fn) for k, v in tensors.items()}
    with pytest.raises(ModelFormatError, match="float8_e4m3fn; weights must be float16, bfloat16, float32"):
        _load(spec, odd)
    with pytest.raises(ModelFormatError, match="int8; weights must be floating point"):
        _load(spec, tensors | {"weight_0": tensors["weight_0"].to(torch.int8)})
    half = {k: v.to(torch.float16) for k, v in tensors.items()}
    assert _load(spec | {"dtype": "float16"}, half).dtype == torch.float32


def test_an_upload_past_the_budget_is_refused_before_its_weights_are_parsed(saved):
    spec, _ = saved
    big = spec | {"widths": [20, 31623, 31623], "bias": False}
    error, peak = _peak(lambda: _load(big, b"not even safetensors", limits=limits.Budget()))
    assert isinstance(error, BudgetError) and "max_width" in str(error)
    assert peak < 1_000_000


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**25), 10**25), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


@given(
    st.one_of(
        st.binary(max_size=300),
        _JSON.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.sampled_from(io._SPEC_KEYS), _JSON, max_size=8).map(lambda v: json.dumps(v).encode()),
    ),
    st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_any_architecture_json_gives_a_generator_or_a_geninv_error(saved, arch, good_weights):
    _, tensors = saved
    try:
        _load(arch, tensors if good_weights else b"\x00" * 16)
    except GeninvError:
        pass


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_any_weights_file_gives_a_generator_or_a_geninv_error(saved, blob):
    spec, _ = saved
    try:
        _load(spec, blob)
    except GeninvError:
        pass
