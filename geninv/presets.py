"""The named sweeps behind the README's results (``geninv sweep --preset NAME``)."""

from __future__ import annotations

from geninv.sweeps import CLEAN_DB, ORACLE, SweepConfig


def _success_against_m(generator: str, measurement: str) -> SweepConfig:
    """Compressed sensing: success against the number m of measurements of the 784 pixels."""
    return SweepConfig(
        generator=generator,
        variable="measurements",
        values=(10.0, 20.0, 30.0, 50.0, 100.0, 200.0, 400.0),
        methods=("gd", "latent-pursuit", "hybrid"),
        trials=20,
        measurement=measurement,
    )


PRESETS: dict[str, SweepConfig] = {
    "expansion": SweepConfig(
        generator="random:20-40-80-160:seed=0",
        variable="expansion",
        values=(1.0, 1.5, 2.0, 2.5, 3.0, 4.0),
        methods=("gd", "lbp", "latent-pursuit", "hybrid"),
        trials=30,
    ),
    "noise": SweepConfig(
        generator="random:20-128-392-784",
        variable="noise_db",
        values=(CLEAN_DB, 40.0, 30.0, 20.0, 15.0, 10.0),
        methods=("gd", "lbp", "latent-pursuit", "hybrid", ORACLE),
        trials=20,
    ),
    "missing-random": SweepConfig(
        generator="random:20-128-392-784",
        variable="missing",
        values=(0.0, 0.2, 0.4, 0.6, 0.7, 0.8),
        methods=("gd", "lbp", "latent-pursuit", "hybrid"),
        trials=20,
    ),
    "missing-mnist": SweepConfig(
        generator="mnist",
        variable="missing",
        values=(0.0, 0.2, 0.4, 0.6),
        methods=("gd", "latent-pursuit", "hybrid"),
        trials=20,
    ),
    "box-mnist": SweepConfig(
        generator="mnist",
        variable="box",
        values=(0.0, 6.0, 10.0, 14.0),
        methods=("gd", "latent-pursuit", "hybrid"),
        trials=20,
    ),
    "noise-mnist": SweepConfig(
        generator="mnist",
        variable="noise_db",
        values=(CLEAN_DB, 50.0, 40.0, 30.0, 20.0),
        methods=("gd", "latent-pursuit", "hybrid", ORACLE),
        trials=20,
    ),
    "measurements-mnist": _success_against_m("mnist", "gaussian"),
    "measurements-mnist-conv": _success_against_m("mnist-conv", "gaussian"),
    "measurements-dct-mnist": _success_against_m("mnist", "dct"),
    "certificate": SweepConfig(
        generator="random:20-40-80-160:seed=0",
        variable="expansion",
        values=(1.0, 1.5, 2.0, 2.5, 3.0, 4.0),
        methods=("latent-pursuit", "gd"),
        trials=30,
        certificate=True,
    ),
}
