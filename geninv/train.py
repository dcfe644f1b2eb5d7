"""Train the shipped MNIST generators: the decoders of two small VAEs.

    python -m geninv.train mnist --data DATA --out out/mnist --seed 0 --epochs 100
    python -m geninv.train mnist-conv --data DATA --out out/mnist-conv --seed 0 --epochs 100
    python -m geninv.train digits --data DATA --out out/digits   # the real digits shipped in assets/

``DATA`` is a folder with the MNIST test-set idx files (default: the environment variable
``GENINV_MNIST_DATA``, else ``data/mnist``); the output goes to a scratch folder unless ``--out`` says
otherwise (the shipped weights are in ``assets/``). ``mnist`` is the fully connected decoder
``20 -> 128 -> 392 -> 784``;
``mnist-conv`` a DCGAN-style decoder: a dense layer ``20 -> 4x7x7``, then stride-2 transposed
convolutions to ``2x14x14`` and ``1x28x28`` (each layer doubles the units, as the invertibility
theory needs). Both have relu hidden units, biases and a sigmoid output; the
encoders are thrown away. MNIST (Y. LeCun, C. Cortes, C. Burges) is CC BY-SA 3.0.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geninv._validation import check_int, check_real, fail
from geninv.errors import ModelFormatError
from geninv.limits import HARD_LIMITS, MAX_CHANNELS, check_memory, parameters

IMAGES = "t10k-images-idx3-ubyte.gz"
LABELS = "t10k-labels-idx1-ubyte.gz"
DEFAULT_WIDTHS = (20, 128, 392, 784)
MNIST_SOURCE = "https://ossci-datasets.s3.amazonaws.com/mnist/ (a mirror of http://yann.lecun.com/exdb/mnist/)"
DEFAULT_CHANNELS = (4, 2, 1)
"""Channels of the conv decoder's feature maps: 4x7x7 -> 2x14x14 -> 1x28x28."""
CONV_SIZES = (4, 7, 14, 28)
DATA_ENV = "GENINV_MNIST_DATA"
MAX_EPOCHS = 100_000
"""The most epochs :func:`train_mnist` accepts (the shipped generators took 100 and 150)."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzipped) idx file: the MNIST distribution format."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ModelFormatError(f"{path} is not an idx file (bad magic number).")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[data[2]]
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ModelFormatError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {arr.size}.")
    return arr.reshape(shape)


def load_mnist(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 in [0, 1] of shape (N, 784), and labels (N,).

    Raises
    ------
    InvalidValueError
        When the folder does not hold the two files (with where to get them).
    """
    from geninv.errors import InvalidValueError

    data_dir = Path(data_dir)
    missing = [name for name in (IMAGES, LABELS) if not (data_dir / name).is_file()]
    if missing:
        raise InvalidValueError(
            f"The MNIST test set is not in {str(data_dir)[:200]!r} (missing {', '.join(missing)}): download "
            f"{IMAGES} and {LABELS} from {MNIST_SOURCE} into that folder, or point --data (or the "
            "environment variable GENINV_MNIST_DATA) at a folder that has them."
        )
    images = read_idx(data_dir / IMAGES).reshape(-1, 784).astype(np.float32) / 255.0
    labels = read_idx(data_dir / LABELS).astype(np.int64)
    return images, labels


class _VAE(nn.Module):
    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        latent, *hidden, out = widths
        enc: list[nn.Module] = []
        prev = out
        for w in reversed(hidden):
            enc += [nn.Linear(prev, w), nn.ReLU()]
            prev = w
        self.encoder = nn.Sequential(*enc)
        self.mu = nn.Linear(prev, latent)
        self.logvar = nn.Linear(prev, latent)
        dec: list[nn.Module] = []
        prev = latent
        for w in hidden:
            dec += [nn.Linear(prev, w), nn.ReLU()]
            prev = w
        dec += [nn.Linear(prev, out)]
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, ...]:
        h = self.encoder(x)
        mu, logvar = self.mu(h), self.logvar(h)
        eps = torch.randn(mu.shape, generator=rng)
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.decoder(z), mu, logvar


class _ConvVAE(nn.Module):
    """A VAE with a fully connected encoder and a DCGAN-style decoder (stride-2 transposed convolutions)."""

    def __init__(self, latent: int, channels: Sequence[int]) -> None:
        super().__init__()
        _check_channels(channels)
        sizes = CONV_SIZES[-len(channels) :]  # the last feature maps of 4 -> 7 -> 14 -> 28
        self.encoder = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU())
        self.mu = nn.Linear(64, latent)
        self.logvar = nn.Linear(64, latent)
        dec: list[nn.Module] = [
            nn.Linear(latent, channels[0] * sizes[0] ** 2),
            nn.ReLU(),
            nn.Unflatten(1, (channels[0], sizes[0], sizes[0])),
        ]
        for i in range(1, len(channels)):
            kernel = _conv_kernel(sizes[i - 1], sizes[i])
            dec.append(nn.ConvTranspose2d(channels[i - 1], channels[i], kernel, stride=2, padding=1))
            if i < len(channels) - 1:
                dec.append(nn.ReLU())
        dec.append(nn.Flatten())
        self.decoder = nn.Sequential(*dec)

    forward = _VAE.forward


def train_mnist(
    data_dir: str | Path,
    *,
    widths: tuple[int, ...] = DEFAULT_WIDTHS,
    channels: tuple[int, ...] | None = None,
    epochs: int = 100,
    batch_size: int = 128,
    lr: float = 1e-3,
    smoothing: float = 0.01,
    beta: float = 2.0,
    seed: int = 0,
    limit: int | None = None,
    log=print,
):
    """Train the VAE and return ``(Generator, info)`` with the decoder as a geninv Generator.

    Deterministic for a given seed on one machine and torch build (and thread count): two runs give
    bit-identical weights. Elsewhere the floating-point reduction order may differ, so the weights
    differ in their last bits and the final loss by a fraction of a percent (the shipped model: 153.61
    here, 153.99 on another machine); what matters for inversion, the invertibility certificate,
    does not change (``tests/unit/test_mnist.py`` checks a tiny run against a recorded one).

    Parameters
    ----------
    data_dir : path
        Folder with the MNIST idx files.
    widths : tuple of int
        Decoder widths, latent first (the conv decoder uses only the latent size).
    channels : tuple of int, optional
        Train the convolutional decoder with these feature-map channels (see :data:`DEFAULT_CHANNELS`;
        sizes 4, 7, 14, 28) instead of the fully connected one.
    epochs, batch_size, lr : int, int, float
        Adam with a cosine learning-rate schedule.
    smoothing : float
        Targets are squeezed into ``[smoothing, 1 - smoothing]``. Without it the decoder drives the
        background logits to -inf: those pixels saturate (``y`` within 1e-6 of 0) and carry only an
        inequality, which leaves too few equations for the last hidden layer once pixels are masked.
    beta : float
        Weight of the KL term; above 1 the posterior fills the prior better, so that decoded
        z ~ N(0, I) look more like digits (and less like the training set).
    seed : int
        Seeds the initialisation, the shuffling and the reparametrisation noise (the global torch
        generator is left untouched).
    limit : int, optional
        Train on the first ``limit`` images only (tiny, quick runs).
    log : callable
        Receives one progress line per epoch.
    """
    from geninv.generator import Generator

    _check_training(widths, channels, epochs=epochs, smoothing=smoothing, beta=beta, seed=seed, limit=limit)
    check_int("batch_size", batch_size, low=1)
    check_real("lr", lr, low=0.0, low_open=True)
    rng = torch.Generator().manual_seed(seed)
    images, _ = load_mnist(data_dir)
    if limit is not None:
        images = images[: int(limit)]
    x_all = torch.from_numpy(images)
    targets_all = smoothing + (1.0 - 2.0 * smoothing) * x_all
    # nn.Linear initialises from the global generator: fork it so that seeding stays local.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _VAE(tuple(widths)) if channels is None else _ConvVAE(widths[0], tuple(channels))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    start = time.perf_counter()
    loss_value = float("nan")
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(x_all.shape[0], generator=rng)
        total = 0.0
        for i in range(0, x_all.shape[0], batch_size):
            idx = perm[i : i + batch_size]
            xb = x_all[idx]
            logits, mu, logvar = model(xb, rng)
            rec = nn.functional.binary_cross_entropy_with_logits(logits, targets_all[idx], reduction="sum")
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = (rec + beta * kl) / xb.shape[0]
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * xb.shape[0]
        sched.step()
        loss_value = total / x_all.shape[0]
        log(f"epoch {epoch:3d}/{epochs}  loss {loss_value:8.2f}  ({time.perf_counter() - start:5.1f} s)")
    if channels is None:
        linears = [m for m in model.decoder if isinstance(m, nn.Linear)]
        gen = Generator.from_weights(
            [m.weight.detach() for m in linears],
            [m.bias.detach() for m in linears],
            hidden="relu",
            output="sigmoid",
            name="mnist",
            dtype=torch.float32,
        )
    else:
        from geninv.io import from_sequential

        gen = from_sequential(nn.Sequential(*model.decoder, nn.Sigmoid()), name="mnist-conv")
    info = {
        "widths": list(gen.widths),
        "channels": None if channels is None else list(channels),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "smoothing": smoothing,
        "beta": beta,
        "seed": seed,
        "final_loss": round(loss_value, 3),
        "train_seconds": round(time.perf_counter() - start, 1),
        "samples": int(x_all.shape[0]),
    }
    return gen, info


def save_sample_grid(generator, path: str | Path, *, n: int = 64, seed: int = 0, scale: int = 2) -> Path:
    """Write ``n`` samples ``G(z)``, z ~ N(0, I) from ``seed``, as a square grid PNG (white ink on black)."""
    from PIL import Image

    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"The 'n' parameter must be a perfect square. Got {n!r} instead.")
    images = generator.generate(generator.sample_latent(n, seed=seed)).reshape(side, side, 28, 28)
    grid = images.permute(0, 2, 1, 3).reshape(side * 28, side * 28).clamp(0, 1)
    pixels = (grid.double().cpu().numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(pixels, mode="L").resize((side * 28 * scale,) * 2, Image.NEAREST)
    path = Path(path)
    image.save(path)
    return path


def _check_training(widths, channels, *, epochs, smoothing, beta, seed, limit) -> None:
    """The training options :func:`train_mnist` and the command line share, before the data are read:
    one sentence naming the first bad one."""
    check_int("epochs", epochs, low=1, high=MAX_EPOCHS)
    check_real("smoothing", smoothing, low=0.0, high=0.5, high_open=True)
    check_real("beta", beta, low=0.0)
    check_int("seed", seed, low=0, high=2**63 - 1)
    if limit is not None:
        check_int("limit", limit, low=1)
    least = 2 if channels is None else 1  # the convolutional decoder takes only the latent size
    if len(widths) < least or any(isinstance(w, bool) or not isinstance(w, Integral) or w < 1 for w in widths):
        expected = "at least two positive integers, latent first" if least == 2 else "positive integers"
        fail("widths", expected, tuple(widths))
    if channels is None and widths[-1] != 784:
        fail("widths", "a list ending in 784 (the MNIST pixels)", tuple(widths))
    HARD_LIMITS.check_widths(widths, what="The 'widths' parameter's decoder", hard=True)
    if channels is not None:
        _check_channels(channels)


def _check_channels(channels: Sequence[int]) -> None:
    """The convolutional decoder's channels: 2 to 4 of them, each 1 to MAX_CHANNELS, the last 1."""
    if (
        not 2 <= len(channels) <= len(CONV_SIZES)
        or channels[-1] != 1
        or any(isinstance(c, bool) or not isinstance(c, Integral) or not 1 <= c <= MAX_CHANNELS for c in channels)
    ):
        fail(
            "channels",
            f"2 to {len(CONV_SIZES)} integers from 1 to {MAX_CHANNELS} ending in 1 (one 28x28 image)",
            tuple(channels),
        )


def _conv_kernel(size_in: int, size_out: int) -> int:
    """Kernel side of a stride-2, padding-1 transposed convolution from ``size_in`` to ``size_out`` pixels:
    out = 2 (in - 1) - 2 + k, so k = out - 2 in + 4 (3 for 4 -> 7, 4 for 7 -> 14)."""
    return size_out - 2 * size_in + 4


def _trained_weights(widths: tuple[int, ...], channels: tuple[int, ...] | None) -> int:
    """Weights and biases of the VAE that :func:`train_mnist` trains (decoder and encoder)."""
    if channels is None:  # the encoder mirrors the decoder, with two heads (mean, log-variance)
        return parameters(widths) + parameters(widths[:0:-1]) + 2 * (widths[1] * widths[0] + widths[0])
    latent, sizes = widths[0], CONV_SIZES[-len(channels) :]
    decoder = latent * channels[0] * sizes[0] ** 2 + channels[0] * sizes[0] ** 2
    for i in range(1, len(channels)):
        decoder += channels[i - 1] * channels[i] * _conv_kernel(sizes[i - 1], sizes[i]) ** 2 + channels[i]
    return decoder + parameters((784, 256, 64)) + 2 * (64 * latent + latent)


def _integers(name: str, text: str, example: str) -> tuple[int, ...]:
    """``'20,128,784'`` -> (20, 128, 784), or one sentence naming the option and an ``example``."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        fail(name, f"comma-separated integers such as {example}", text)
        raise  # unreachable: fail raises


def _checked_options(args: argparse.Namespace) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """Every option of ``geninv train mnist`` / ``mnist-conv`` checked before anything is read or trained,
    the model's memory against this machine's included; returns ``(widths, channels)``."""
    widths = _integers("widths", args.widths, "20,128,392,784")
    channels = _integers("channels", args.channels, "4,2,1") if args.what == "mnist-conv" else None
    _check_training(
        widths, channels, epochs=args.epochs, smoothing=args.smoothing, beta=args.beta, seed=args.seed, limit=args.limit
    )
    check_int("threads", args.threads, low=1, high=max(1, os.cpu_count() or 1))
    # float32 weights, their gradients and Adam's two moments
    weights = _trained_weights(widths, channels)
    check_memory(
        f"A model of {weights:,} weights",
        16.0 * weights,
        holds="weights, gradients and Adam's moments",
        solvers=False,
        advice="choose smaller widths or channels",
    )
    return widths, channels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="geninv train", description="Train the shipped generators.")
    parser.add_argument(
        "what",
        choices=["mnist", "mnist-conv", "digits"],
        help="'mnist' / 'mnist-conv': train that generator; 'digits': write the shipped real digits",
    )
    parser.add_argument(
        "--data",
        default=os.environ.get(DATA_ENV, "data/mnist"),
        help=f"folder with the MNIST test-set idx files {IMAGES} and {LABELS} (default: ${DATA_ENV}, else data/mnist)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output folder for NAME.safetensors/.json "
        "(default out/NAME, a scratch folder; the shipped ones are in assets/)",
    )
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images only")
    parser.add_argument("--epochs", type=int, default=100, help="training epochs (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--smoothing", type=float, default=0.01, help="squeeze targets into [s, 1-s] (default 0.01)")
    parser.add_argument("--beta", type=float, default=2.0, help="weight of the KL term (default 2)")
    parser.add_argument(
        "--widths", default="20,128,392,784", help="decoder widths, latent first (default 20,128,392,784)"
    )
    parser.add_argument(
        "--channels",
        default="4,2,1",
        help="mnist-conv: channels of the last feature maps of 4, 7, 14, 28 pixels (default 4,2,1: 7, 14, 28)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--per-class", type=int, default=4, help="digits: how many of each class (default 4)")
    args = parser.parse_args(argv)
    if args.what == "digits":
        from geninv.digits import write_digits

        path = write_digits(args.data, args.out or "out/digits", per_class=args.per_class)
        print(f"wrote {path} ({path.stat().st_size} bytes)")
        return 0
    from geninv.errors import GeninvError
    from geninv.io import save_generator

    try:
        widths, channels = _checked_options(args)
        load_mnist(args.data)  # check the data before anything else
    except GeninvError as exc:
        print(f"geninv train: error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    epochs = args.epochs
    gen, info = train_mnist(
        args.data,
        widths=widths,
        channels=channels,
        epochs=epochs,
        smoothing=args.smoothing,
        beta=args.beta,
        seed=args.seed,
        limit=args.limit,
        log=lambda m: print(m, file=sys.stderr),
    )
    words = list(sys.argv[1:] if argv is None else argv)
    # the data folder is this machine's: the record names it by the environment variable instead
    words = [f"${DATA_ENV}" if w == args.data else w for w in words]
    if "--data" not in words and not any(w.startswith("--data=") for w in words):
        words[1:1] = ["--data", f"${DATA_ENV}"]
    info["command"] = "python -m geninv.train " + " ".join(words)
    info["torch"] = torch.__version__
    out = Path(args.out or f"out/{args.what}")
    out.mkdir(parents=True, exist_ok=True)
    name = args.what
    save_generator(gen, out / name)
    (out / f"{name}_training.json").write_text(json.dumps(info, indent=2) + "\n")
    save_sample_grid(gen, out / ("samples.png" if name == "mnist" else f"samples-{name}.png"))
    print(f"saved {out / name}.safetensors ({info})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
