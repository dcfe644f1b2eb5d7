"""The shipped MNIST generator: it loads, its samples look like digits, it is identifiable; training is reproducible."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import geninv
from geninv import train
from geninv.errors import ModelFormatError
from geninv.io import load_generator

# The MNIST idx files are not part of the repository: GENINV_MNIST_DATA names their folder (default: data/mnist
# in the checkout, ignored by git); the tests that need them are skipped without them.
DATA = Path(os.environ.get(train.DATA_ENV) or Path(__file__).resolve().parents[2] / "data" / "mnist")
HAVE_DATA = (DATA / train.IMAGES).is_file()


@pytest.fixture(scope="module")
def mnist() -> geninv.Generator:
    return load_generator("mnist")


@pytest.fixture(scope="module")
def samples(mnist) -> torch.Tensor:
    return mnist.generate(mnist.sample_latent(256, seed=0))


def test_shipped_model_loads_with_its_architecture(mnist, samples):
    assert mnist.widths == (20, 128, 392, 784)
    assert mnist.hidden_activation.name == "relu" and mnist.output_activation.name == "sigmoid"
    assert mnist.dtype == torch.float32 and mnist.name == "mnist"
    assert samples.shape == (256, 784)
    assert bool(((samples >= 0) & (samples <= 1)).all())


def test_samples_have_digit_statistics(samples):
    # MNIST test digits: mean intensity 0.133, 13.4 % of pixels above 0.5, an empty border.
    images = samples.reshape(-1, 28, 28)
    assert 0.08 < float(samples.mean()) < 0.2
    assert 0.05 < float((samples > 0.5).float().mean()) < 0.2
    border = torch.cat([images[:, :3].flatten(1), images[:, -3:].flatten(1), images[:, :, :3].flatten(1)], 1)
    assert float(border.mean()) < 0.03
    assert float(images[:, 8:20, 8:20].mean()) > 0.25
    # different latents give different digits, not one mean image
    spread = torch.cdist(samples[:64], samples[:64]).sum() / (64 * 63)
    assert float(spread) > 5.0


@pytest.mark.skipif(not HAVE_DATA, reason=f"MNIST test digits not found in {DATA} (set GENINV_MNIST_DATA)")
def test_samples_are_close_to_real_digits(mnist, samples):
    images, _ = train.load_mnist(DATA)
    real = torch.from_numpy(images[:3000])
    random = geninv.Generator.random(list(mnist.widths), seed=0, bias=True, output="sigmoid", dtype=torch.float32)
    fake = random.generate(random.sample_latent(256, seed=0))
    nn_trained = torch.cdist(samples, real).amin(dim=1).median()
    nn_random = torch.cdist(fake, real).amin(dim=1).median()
    assert float(nn_trained) < 0.5 * float(nn_random)


@pytest.mark.slow
def test_shipped_model_is_identifiable_on_most_samples(mnist):
    G = load_generator("mnist", dtype=torch.float64)
    cert = geninv.certify(G, G.sample_latent(32, seed=3))
    assert float(np.mean(cert.identifiable)) >= 0.9


# ----------------------------------------------------------------------------- training (tiny_data: conftest.py)
def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_training_is_reproducible_from_the_seed_and_leaves_global_rng_alone(tiny_data):
    state = torch.random.get_rng_state()
    kwargs = {"widths": (2, 6, 784), "epochs": 2, "batch_size": 16, "log": lambda _: None}
    a, info = train.train_mnist(tiny_data, seed=5, **kwargs)
    b, _ = train.train_mnist(tiny_data, seed=5, **kwargs)
    c, _ = train.train_mnist(tiny_data, seed=6, **kwargs)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.weight(1), b.weight(1)) and not torch.equal(a.weight(1), c.weight(1))
    assert a.widths == (2, 6, 784) and a.output_activation.name == "sigmoid"
    assert info["epochs"] == 2 and np.isfinite(info["final_loss"])


def test_train_cli_writes_a_loadable_generator(tiny_data, tmp_path, capsys):
    out = tmp_path / "out"
    rc = train.main(["mnist", "--data", str(tiny_data), "--out", str(out), "--epochs", "1", "--widths", "2,6,784"])
    assert rc == 0
    assert "epoch   1/1" in capsys.readouterr().err
    G = load_generator(out / "mnist")
    assert G.widths == (2, 6, 784)
    assert (out / "samples.png").stat().st_size > 0
    info = json.loads((out / "mnist_training.json").read_text())
    assert info["command"].startswith("python -m geninv.train mnist --data")


@pytest.mark.parametrize(
    "options, message",
    [
        (["--epochs", "0"], "The 'epochs' parameter must be an integer in the range [1, 100000]. Got 0"),
        (["--limit", "0"], "The 'limit' parameter must be an integer in the range [1, inf). Got 0"),
        (["--threads", "0"], "The 'threads' parameter must be an integer in the range [1, "),
        (["--seed", "-1"], "The 'seed' parameter must be an integer in the range [0, "),
        (["--beta", "nan"], "The 'beta' parameter must be a finite number in the range [0, inf). Got nan"),
        (["--beta", "-1"], "The 'beta' parameter must be a finite number in the range [0, inf). Got -1.0"),
        (["--smoothing", "0.5"], "The 'smoothing' parameter must be a finite number in the range [0, 0.5)"),
        (["--widths", "20,128,785"], "The 'widths' parameter must be a list ending in 784 (the MNIST pixels)"),
        (["--widths", "20"], "The 'widths' parameter must be at least two positive integers, latent first"),
        (["--widths", "20,x,784"], "The 'widths' parameter must be comma-separated integers such as 20,128,392,784"),
        (["--widths", "20,0,784"], "The 'widths' parameter must be at least two positive integers"),
        (["--widths", "20,5000000,784"], "has a layer of 5000000 units; geninv builds at most 1e+06 on any machine"),
        (["--channels", "4,2"], "The 'channels' parameter must be 2 to 4 integers from 1 to 4096 ending in 1"),
        (["--channels", "5000,1"], "The 'channels' parameter must be 2 to 4 integers from 1 to 4096 ending in 1"),
    ],
)
def test_train_cli_refuses_a_bad_option_in_one_sentence_before_reading_anything(
    options, message, tiny_data, tmp_path, capsys, monkeypatch
):
    def refuse(*args, **kwargs):
        raise AssertionError("a bad option reached the data or the training")

    monkeypatch.setattr(train, "load_mnist", refuse)
    monkeypatch.setattr(train, "train_mnist", refuse)
    what = "mnist-conv" if "--channels" in options else "mnist"
    out = tmp_path / "out"
    assert train.main([what, "--data", str(tiny_data), "--out", str(out), *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("geninv train: error: ") and message in err[0], err
    assert not out.exists()


def test_train_cli_refuses_a_model_this_machine_cannot_hold(tiny_data, tmp_path, capsys, monkeypatch):
    import geninv.limits

    monkeypatch.setattr(geninv.limits, "machine_memory", lambda: 2 * 2**30)
    monkeypatch.setattr(train, "train_mnist", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    # ~163 million weights (encoder and decoder), 16 bytes each with gradients and Adam's moments
    assert train.main(["mnist", "--data", str(tiny_data), "--widths", "20,100000,784"]) == 2
    err = capsys.readouterr().err.strip()
    assert "A model of 163,000,824 weights would hold up to 2.43 GiB in memory" in err
    assert err.endswith("more than this machine's 2 GiB; choose smaller widths or channels.") and "\n" not in err


def test_the_memory_check_counts_every_trained_weight():
    for widths, channels in [
        ((20, 128, 392, 784), None),
        ((2, 6, 784), None),
        ((20,), (4, 2, 1)),
        ((8,), (8, 4, 2, 1)),
    ]:
        model = train._VAE(widths) if channels is None else train._ConvVAE(widths[0], channels)
        assert train._trained_weights(widths, channels) == sum(p.numel() for p in model.parameters())


def test_train_mnist_checks_its_own_arguments(tiny_data):
    from geninv.errors import InvalidValueError

    with pytest.raises(InvalidValueError, match="'epochs'"):
        train.train_mnist(tiny_data, widths=(2, 6, 784), epochs=0)
    with pytest.raises(InvalidValueError, match="'lr'"):
        train.train_mnist(tiny_data, widths=(2, 6, 784), epochs=1, lr=float("nan"))
    with pytest.raises(InvalidValueError, match="'batch_size'"):
        train.train_mnist(tiny_data, widths=(2, 6, 784), epochs=1, batch_size=0)


def test_truncated_idx_file_is_rejected(tmp_path):
    _write_idx(tmp_path / "x.gz", np.zeros((4, 28, 28)))
    blob = gzip.decompress((tmp_path / "x.gz").read_bytes())
    (tmp_path / "x.idx").write_bytes(blob[:-10])
    with pytest.raises(ModelFormatError, match="truncated: expected 3136 values"):
        train.read_idx(tmp_path / "x.idx")
    (tmp_path / "y.idx").write_bytes(b"\x01\x02\x03")
    with pytest.raises(ModelFormatError, match="bad magic number"):
        train.read_idx(tmp_path / "y.idx")


def _run(G, obs, method):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = geninv.invert(G, obs, method)
    return geninv.metrics.latent_error(res.z_hat, obs.z_true), res.statuses


@pytest.mark.slow
def test_pursuit_beats_gd_on_the_trained_generator():
    """The paper's headline on real data: layer-wise recovery is exact to working precision, clean and
    with half the image hidden, where gd (best iterate, decaying step, 8000 steps x 2 restarts) is not;
    and each status tells the truth."""
    G = geninv.load_generator("mnist").double()
    z = G.sample_latent(10, seed=3)
    clean = geninv.observe(G, z)
    pursuit, status = _run(G, clean, "latent-pursuit")
    assert float(pursuit.max()) < 1e-9 and set(status) == {"converged"}
    half = geninv.observe(G, z, mask=geninv.masks.half((28, 28)))
    hybrid, status = _run(G, half, "hybrid")
    assert float(hybrid.max()) < 1e-9 and set(status) == {"converged"}
    gd, gd_status = _run(G, half, "gd")
    assert float(gd.max()) > 1e-6  # gd does not reach working precision on every half-masked signal
    assert geninv.metrics.success_rate(hybrid, 1e-3) >= geninv.metrics.success_rate(gd, 1e-3)
    assert all(e < 1e-6 for e, s in zip(gd.tolist(), gd_status) if s == "converged")


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_DATA, reason=f"needs the MNIST test set in {DATA} (or GENINV_MNIST_DATA)")
def test_noise_on_a_small_trained_decoder_reaches_the_oracle():
    """A two-layer decoder (8-256-784, sigmoid output) trained here for 5 epochs: at 20 dB the hybrid's
    median latent error is within 10% of least squares on the true pattern, and no worse than gd's."""
    from geninv.inversion.oracle import oracle_latent

    G, _ = train.train_mnist(DATA, widths=(8, 256, 784), epochs=5, log=lambda _: None)
    G = G.double()
    obs = geninv.observe(G, G.sample_latent(40, seed=1), snr_db=20, seed=3)
    oracle = geninv.metrics.latent_error(oracle_latent(G, obs), obs.z_true).median()
    hybrid, status = _run(G, obs, "hybrid")
    gd, _ = _run(G, obs, "gd")
    assert float(hybrid.median()) <= 1.1 * float(oracle)
    assert float(hybrid.median()) <= float(gd.median()) * (1 + 1e-6)  # both at the same ML points: a tie
    assert set(status) == {"converged"}  # fit to the noise level


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_DATA, reason=f"needs the MNIST test set in {DATA} (or GENINV_MNIST_DATA)")
def test_tiny_training_matches_the_recorded_run():
    """Training is deterministic on one machine and torch build, and close elsewhere: a tiny run
    (benchmarks/tiny_training_reference.py) against the one recorded in tests/data."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from tiny_training_reference import cpu_model, tiny_run

    ref = json.loads((Path(__file__).resolve().parents[1] / "data" / "tiny_training.json").read_text())
    got = tiny_run(DATA)
    assert got["final_loss"] == pytest.approx(ref["final_loss"], rel=0.01)
    assert got["certificate_100_latents_seed1"] == ref["certificate_100_latents_seed1"]
    if ref["torch"] == torch.__version__ and ref["cpu"] == cpu_model():
        assert got["weights_sha256"] == ref["weights_sha256"]  # same build and CPU: bit for bit
