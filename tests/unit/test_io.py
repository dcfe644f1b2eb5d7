import io
import json
import pickle

import pytest
import torch
from torch import nn

import geninv
from geninv import io as gio
from geninv.errors import ModelFormatError


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"bias": True},
        {"hidden": "leaky_relu", "output": "tanh", "negative_slope": 0.3},
        {"output": "sigmoid", "bias": True},
        {"output": "relu"},
    ],
)
def test_round_trip_is_exact(tmp_path, kw):
    G = geninv.Generator.random([5, 20, 60], seed=1, **kw)
    G.save(tmp_path / "g")
    H = geninv.load_generator(tmp_path / "g")
    z = G.sample_latent(4, seed=0)
    assert torch.equal(G(z), H(z)) and H.describe() == G.describe()


def test_from_sequential_matches_module():
    torch.manual_seed(0)
    seq = nn.Sequential(
        nn.Linear(4, 16), nn.LeakyReLU(0.1), nn.Linear(16, 40), nn.LeakyReLU(0.1), nn.Linear(40, 9), nn.Tanh()
    )
    G = gio.from_sequential(seq)
    z = torch.randn(6, 4)
    torch.testing.assert_close(G(z), seq(z))
    assert G.hidden_activation.name == "leaky_relu" and G.output_activation.name == "tanh"
    with pytest.raises(ModelFormatError, match="Unsupported module Conv1d"):
        gio.from_sequential(nn.Sequential(nn.Linear(2, 3), nn.Conv1d(1, 1, 1)))


def test_state_dict_decoder_with_bias_free_layers(tmp_path):
    torch.manual_seed(0)
    sd = {
        "enc.weight": torch.randn(8, 30),
        "fc3.weight": torch.randn(12, 3),
        "fc4.weight": torch.randn(30, 12),
    }
    path = tmp_path / "ckpt.pt"
    torch.save(sd, path)
    G = gio.from_state_dict(path, ["fc3.weight", "fc4.weight"], output="sigmoid")
    z = torch.randn(2, 3)
    torch.testing.assert_close(G(z), torch.sigmoid(torch.relu(z @ sd["fc3.weight"].T) @ sd["fc4.weight"].T))
    assert not G.has_bias
    with pytest.raises(ModelFormatError, match="'fc9.weight' is not in the state dict"):
        gio.from_state_dict(sd, ["fc9.weight"])


def _files(tmp_path, **kw):
    G = geninv.Generator.random([3, 8, 16], seed=0, **kw)
    jp, wp = gio.save_generator(G, tmp_path / "g")
    return jp.read_bytes(), wp.read_bytes()


def test_truncated_safetensors(tmp_path):
    arch, weights = _files(tmp_path)
    with pytest.raises(ModelFormatError, match="not a valid safetensors"):
        gio.load_generator_bytes(arch, weights[: len(weights) // 2])


def test_wrong_shapes_and_broken_chain(tmp_path):
    arch, weights = _files(tmp_path)
    spec = json.loads(arch)
    spec["widths"] = [3, 9, 16]
    with pytest.raises(ModelFormatError, match=r"'weight_0' has shape \(8, 3\).*needs \(9, 3\)"):
        gio.load_generator_bytes(json.dumps(spec).encode(), weights)
    spec["widths"], spec["bias"] = [3, 8], [False]
    with pytest.raises(ModelFormatError, match="unexpected.*weight_1"):
        gio.load_generator_bytes(json.dumps(spec).encode(), weights)
    spec["widths"] = [3]
    with pytest.raises(ModelFormatError, match="'widths'"):
        gio.load_generator_bytes(json.dumps(spec).encode(), weights)


def test_nan_weights(tmp_path):
    from safetensors.torch import save

    arch, _ = _files(tmp_path)
    bad = save({"weight_0": torch.full((8, 3), float("nan")), "weight_1": torch.zeros(16, 8)})
    spec = json.loads(arch) | {"dtype": "float32"}
    with pytest.raises(ModelFormatError, match="'weight_0' contains NaN"):
        gio.load_generator_bytes(json.dumps(spec).encode(), bad)


def test_unknown_activation_and_bad_json(tmp_path):
    arch, weights = _files(tmp_path)
    spec = json.loads(arch)
    spec["output"] = "softmax"
    with pytest.raises(ModelFormatError, match="Unknown output activation 'softmax'"):
        gio.load_generator_bytes(json.dumps(spec).encode(), weights)
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        gio.load_generator_bytes(b"{widths:", weights)


def test_pickle_is_never_unpickled(tmp_path):
    arch, _ = _files(tmp_path)

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    buf = io.BytesIO()
    pickle.dump(Boom(), buf)
    with pytest.raises(ModelFormatError, match="pickle"):
        gio.load_generator_bytes(arch, buf.getvalue())
    torch_file = tmp_path / "w.pt"
    torch.save({"weight_0": torch.zeros(8, 3)}, torch_file)
    with pytest.raises(ModelFormatError, match="pickle"):
        gio.load_generator_bytes(arch, torch_file.read_bytes())


def test_oversized_file(tmp_path, monkeypatch):
    arch, weights = _files(tmp_path)
    monkeypatch.setattr(gio, "MAX_FILE_BYTES", 100)
    with pytest.raises(ModelFormatError, match="the limit is 100"):
        gio.load_generator_bytes(arch, weights)
    with pytest.raises(ModelFormatError, match="the limit is 100"):
        gio.load_generator(tmp_path / "g")


def test_missing_files(tmp_path):
    with pytest.raises(ModelFormatError, match="No such generator file"):
        gio.load_generator(tmp_path / "nothing")
