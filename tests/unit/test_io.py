"""Saving and loading generators: exact round trips, converters, and every malformed input refused."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save as st_save
from torch import nn

import geninv
from geninv import io
from geninv.errors import ModelFormatError

EXACT = {"rtol": 0.0, "atol": 0.0}
# nn.Linear fuses the bias add (addmm) where Generator adds it after the product: one rounding apart.
F64_ULPS = {"rtol": 1e-13, "atol": 1e-15}


def _pair(G: geninv.Generator) -> tuple[bytes, dict[str, torch.Tensor]]:
    """Architecture JSON bytes and the tensors dict, as save_generator would write them."""
    spec = G.describe() | {"format": "geninv-generator", "version": 1}
    tensors = {f"weight_{i}": G.weight(i).contiguous() for i in range(G.n_layers)}
    tensors |= {f"bias_{i}": G.bias(i).contiguous() for i in range(G.n_layers) if G.bias(i) is not None}
    return json.dumps(spec).encode(), tensors


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("output", ["identity", "tanh", "sigmoid", "relu"])
@pytest.mark.parametrize(("bias", "hidden"), [(False, "relu"), (True, "relu"), (True, "leaky_relu")])
def test_round_trip_reproduces_outputs_exactly(tmp_path, output, bias, hidden):
    G = geninv.Generator.random([3, 9, 27, 40], seed=4, bias=bias, hidden=hidden, output=output, negative_slope=0.3)
    json_path, weights_path = io.save_generator(G, tmp_path / "gen")
    assert json_path.name == "gen.json" and weights_path.name == "gen.safetensors"
    H = io.load_generator(tmp_path / "gen")
    z = G.sample_latent(5, seed=1)
    torch.testing.assert_close(H(z), G(z), **EXACT)
    assert H.describe() == G.describe()
    assert H.dtype == torch.float64


def test_every_source_form_loads_the_same_generator(tmp_path):
    G = geninv.Generator.random([2, 6, 10], seed=0, bias=True, name="toy")
    G.save(tmp_path / "toy")  # the Generator.save shortcut
    z = G.sample_latent(3, seed=2)
    sources = [
        tmp_path / "toy.json",  # a suffix is ignored
        str(tmp_path / "toy.safetensors"),
        (tmp_path / "toy.json", tmp_path / "toy.safetensors"),
        ((tmp_path / "toy.json").read_bytes(), (tmp_path / "toy.safetensors").read_bytes()),
    ]
    for source in sources:
        H = io.load_generator(source)
        assert H.name == "toy"
        torch.testing.assert_close(H(z), G(z), **EXACT)
    H = io.load_generator_bytes(*sources[-1], dtype=torch.float32)
    assert H.dtype == torch.float32
    H = io.load_generator(tmp_path / "toy", device="cpu", dtype=torch.float32)
    assert H.weight(0).dtype == torch.float32


# ----------------------------------------------------------------------------- converters
@pytest.mark.parametrize(
    "build",
    [
        lambda: nn.Sequential(
            nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 40), nn.ReLU(), nn.Linear(40, 50), nn.Sigmoid()
        ),
        lambda: nn.Sequential(nn.Linear(4, 16, bias=False), nn.LeakyReLU(0.1), nn.Linear(16, 50), nn.Tanh()),
        lambda: nn.Sequential(nn.Sequential(nn.Linear(4, 16), nn.ReLU()), nn.Identity(), nn.Linear(16, 50, bias=False)),
        lambda: nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 50), nn.ReLU()),
    ],
    ids=["relu-sigmoid", "leaky-tanh-nobias", "nested-identity", "relu-out"],
)
def test_from_sequential_matches_the_module_forward(build):
    module = build().double()
    G = io.from_sequential(module)
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(G(z), module(z), **F64_ULPS)


@pytest.mark.parametrize(
    ("module", "match"),
    [
        (nn.Sequential(nn.Linear(4, 8), nn.Dropout(), nn.Linear(8, 9)), r"'1' \(Dropout\)"),
        (nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.Conv1d(1, 1, 1))), r"'1\.0' \(Conv1d\)"),
        (nn.Sequential(nn.ReLU(), nn.Linear(4, 8)), "must directly follow a Linear"),
        (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.ReLU(), nn.Linear(8, 9)), "must directly follow a Linear"),
        (nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 9)), "must all be relu or all leaky-relu"),
        (nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 9)), "must all be relu or all leaky-relu"),
        (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 9), nn.LeakyReLU()), "output activation"),
        (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(9, 9)), "to follow a layer with 8 outputs"),
        (nn.Sequential(), "no Linear layer"),
        (nn.Linear(4, 8), "expects an nn.Sequential"),
    ],
)
def test_from_sequential_rejects_what_it_cannot_convert(module, match):
    with pytest.raises(ModelFormatError, match=match):
        io.from_sequential(module)


def test_state_dict_decoder_with_bias_free_layers_loads_from_a_key_list(tmp_path):
    rng = torch.Generator().manual_seed(0)
    sd = {
        "enc.weight": torch.randn(8, 50, generator=rng),  # not part of the decoder
        "fc3.weight": torch.randn(16, 4, generator=rng),  # bias-free
        "fc4.weight": torch.randn(50, 16, generator=rng),
        "fc4.bias": torch.randn(50, generator=rng),
    }
    G = io.from_state_dict(sd, ["fc3.weight", "fc4.weight"], output="sigmoid", name="dec")
    assert G.widths == (4, 16, 50) and G.bias(0) is None and G.bias(1) is not None
    z = torch.randn(3, 4, generator=rng)
    expected = torch.sigmoid(torch.relu(z @ sd["fc3.weight"].T) @ sd["fc4.weight"].T + sd["fc4.bias"])
    torch.testing.assert_close(G(z), expected, **EXACT)
    # the same from files: a torch checkpoint (weights_only) and a safetensors file
    torch.save(sd, tmp_path / "sd.pt")
    (tmp_path / "sd.safetensors").write_bytes(st_save(sd))
    for path in (tmp_path / "sd.pt", tmp_path / "sd.safetensors"):
        H = io.from_state_dict(path, ["fc3.weight", "fc4.weight"], output="sigmoid")
        torch.testing.assert_close(H(z), expected, **EXACT)


class _Exploit:
    """Unpickling this would call ``_mark_unpickled``: a test fails if anything unpickles it."""

    touched = False

    def __reduce__(self):
        return (_mark_unpickled, ())


def _mark_unpickled():
    _Exploit.touched = True
    return {}


def test_state_dict_errors(tmp_path):
    sd = {"a.weight": torch.ones(3, 2), "b.weight": torch.ones(4, 5), "c.weight": torch.ones(4, 3, dtype=torch.int64)}
    with pytest.raises(ModelFormatError, match=r"Key 'x\.weight' is not in the state dict \(it has: a\.weight"):
        io.from_state_dict(sd, ["x.weight"])
    with pytest.raises(ModelFormatError, match="to follow a layer with 3 outputs"):
        io.from_state_dict(sd, ["a.weight", "b.weight"])
    with pytest.raises(ModelFormatError, match=r"'c.weight' must be a floating-point tensor"):
        io.from_state_dict(sd, ["a.weight", "c.weight"])
    with pytest.raises(ModelFormatError, match="non-empty list of weight names"):
        io.from_state_dict(sd, "a.weight")
    with pytest.raises(ModelFormatError, match=r"'a.weight' contains NaN"):
        io.from_state_dict({"a.weight": torch.full((3, 2), float("nan"))}, ["a.weight"])
    with pytest.raises(ModelFormatError, match="No such state-dict file"):
        io.from_state_dict(tmp_path / "missing.pt", ["a.weight"])
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"a.weight": _Exploit()}, protocol=2))
    with pytest.raises(ModelFormatError, match="weights-only torch file"):
        io.from_state_dict(tmp_path / "evil.pt", ["a.weight"])
    assert not _Exploit.touched


# ----------------------------------------------------------------------------- malformed files
@pytest.fixture
def saved(tmp_path):
    G = geninv.Generator.random([3, 8, 20], seed=0, bias=True, output="sigmoid")
    io.save_generator(G, tmp_path / "g")
    return tmp_path / "g.json", tmp_path / "g.safetensors", G


def _load(arch: dict | bytes, tensors: dict | bytes):
    arch = arch if isinstance(arch, bytes) else json.dumps(arch).encode()
    tensors = tensors if isinstance(tensors, bytes) else st_save(tensors)
    return io.load_generator_bytes(arch, tensors)


def test_truncated_safetensors_is_rejected(saved):
    json_path, weights_path, _ = saved
    blob = weights_path.read_bytes()
    for cut in (4, 40, len(blob) - 7):
        weights_path.write_bytes(blob[:cut])
        with pytest.raises(ModelFormatError, match="not a valid safetensors file"):
            io.load_generator((json_path, weights_path))


def test_pickle_offered_as_weights_is_never_unpickled(saved):
    json_path, weights_path, _ = saved
    weights_path.write_bytes(pickle.dumps({"weight_0": _Exploit()}))
    with pytest.raises(ModelFormatError, match=r"looks like a pickle.*never unpickles"):
        io.load_generator((json_path, weights_path))
    torch.save({"weight_0": torch.ones(2)}, weights_path)  # zip-based torch.save archive
    with pytest.raises(ModelFormatError, match="looks like a pickle"):
        io.load_generator((json_path, weights_path))
    assert not _Exploit.touched


def test_oversized_files_are_refused_before_reading(saved, monkeypatch):
    json_path, weights_path, _ = saved
    monkeypatch.setattr(io, "MAX_FILE_BYTES", 1000)  # the JSON fits, the weights do not
    with pytest.raises(ModelFormatError, match=r"g\.safetensors is \d+ bytes; the limit is 1000"):
        io.load_generator((json_path, weights_path))
    with pytest.raises(ModelFormatError, match=r"The weights file is \d+ bytes; the limit is 1000"):
        io.load_generator_bytes(b"{}", weights_path.read_bytes())


def test_wrong_shapes_and_a_widths_chain_that_does_not_connect(saved):
    _, _, G = saved
    arch, tensors = _pair(G)
    spec = json.loads(arch)
    with pytest.raises(ModelFormatError, match=r"'weight_1' has shape \(20, 7\); the widths chain needs \(20, 8\)"):
        _load(spec, tensors | {"weight_1": torch.zeros(20, 7, dtype=torch.float64)})
    with pytest.raises(ModelFormatError, match=r"'weight_0' has shape \(8, 3\); the widths chain needs \(9, 3\)"):
        _load(spec | {"widths": [3, 9, 20]}, tensors)
    with pytest.raises(ModelFormatError, match=r"'bias_1' has shape \(19,\); expected \(20,\)"):
        _load(spec, tensors | {"bias_1": torch.zeros(19, dtype=torch.float64)})
    with pytest.raises(ModelFormatError, match=r"missing \['weight_1'\], unexpected \['extra'\]"):
        _load(spec, {k: v for k, v in tensors.items() if k != "weight_1"} | {"extra": torch.zeros(1)})
    with pytest.raises(ModelFormatError, match="'widths' must be a list of at least two positive integers"):
        _load(spec | {"widths": [3, 0, 20]}, tensors)


def test_nan_and_integer_weights_are_rejected(saved):
    _, _, G = saved
    arch, tensors = _pair(G)
    bad = tensors["weight_0"].clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ModelFormatError, match="'weight_0' contains NaN or inf"):
        _load(arch, tensors | {"weight_0": bad})
    with pytest.raises(ModelFormatError, match=r"'bias_0' has dtype torch.int32; weights must be floating point"):
        _load(arch, tensors | {"bias_0": torch.zeros(8, dtype=torch.int32)})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"hidden": {"name": "swish"}}, "Unknown hidden activation .*swish"),
        ({"output": "softmax"}, "Unknown output activation 'softmax'"),
        ({"hidden": "tanh"}, "Unknown hidden activation 'tanh': expected one of relu, leaky_relu"),
        ({"hidden": {"name": "leaky_relu", "negative_slope": 2}}, "negative_slope' must be in"),
        ({"bias": [True]}, "'bias' must be a bool or a list of 2 bools"),
        ({"dtype": "int8"}, "'dtype' must be one of"),
        ({"version": 99}, "'version' must be an integer from 1 to 2"),
        ({"format": "other"}, "'format' must be 'geninv-generator'"),
    ],
)
def test_bad_architecture_fields_are_named(saved, change, match):
    _, _, G = saved
    arch, tensors = _pair(G)
    with pytest.raises(ModelFormatError, match=match):
        _load(json.loads(arch) | change, tensors)


def test_bad_json_and_missing_files(saved, tmp_path):
    _, weights_path, _ = saved
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        io.load_generator_bytes(b"{not json", weights_path.read_bytes())
    with pytest.raises(ModelFormatError, match="must be an object"):
        io.load_generator_bytes(b"[1, 2]", weights_path.read_bytes())
    with pytest.raises(ModelFormatError, match="must be bytes"):
        io.load_generator_bytes("{}", weights_path.read_bytes())
    with pytest.raises(ModelFormatError, match=r"No such generator file: .*nope\.json.*shipped generators: mnist"):
        io.load_generator(tmp_path / "nope")
