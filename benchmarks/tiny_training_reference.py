"""Record the tiny training run that tests/unit/test_mnist.py compares against.

    python3 benchmarks/tiny_training_reference.py [--data DIR]   # writes tests/data/tiny_training.json

A decoder 8-64-784 trained for 2 epochs on the first 2,000 MNIST test digits (seed 0, one thread):
its final loss, the sha256 of its weights, and its invertibility certificate over 100 latents,
with the torch build and CPU that produced them. On the same build and CPU a rerun is bit for bit the
same; elsewhere the test allows the loss to differ by 1% and requires the same certificate.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
from pathlib import Path

import torch

import geninv
from geninv import train

ROOT = Path(__file__).resolve().parents[1]
RUN = {"widths": [8, 64, 784], "epochs": 2, "limit": 2000, "seed": 0, "threads": 1}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def tiny_run(data: str | Path) -> dict:
    """Train the tiny decoder and summarise it (what the reference records)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(RUN["threads"])
    try:
        G, info = train.train_mnist(
            data,
            widths=tuple(RUN["widths"]),
            epochs=RUN["epochs"],
            limit=RUN["limit"],
            seed=RUN["seed"],
            log=lambda _: None,
        )
    finally:
        torch.set_num_threads(threads)
    digest = hashlib.sha256(b"".join(G.weight(i).numpy().tobytes() for i in range(G.n_layers))).hexdigest()
    G = G.double()
    cert = geninv.certify(G, G.sample_latent(100, seed=1))
    return {
        "run": RUN,
        "final_loss": info["final_loss"],
        "weights_sha256": digest,
        "certificate_100_latents_seed1": {
            "identifiable": float(cert.identifiable.mean()),
            "identifiable_network": float(cert.identifiable_network.mean()),
        },
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "machine": platform.machine(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("GENINV_MNIST_DATA", "data/mnist"))
    parser.add_argument("--out", default=str(ROOT / "tests" / "data" / "tiny_training.json"))
    args = parser.parse_args(argv)
    ref = tiny_run(args.data)
    Path(args.out).write_text(json.dumps(ref, indent=1) + "\n")
    print(json.dumps(ref, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
