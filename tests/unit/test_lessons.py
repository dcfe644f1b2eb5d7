"""Lessons: data only, each a full experiment; what the text says is what happens."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from geninv import demo, io, lessons, limits, session

ROOT = Path(__file__).resolve().parents[2]


def test_at_least_five_lessons_each_a_valid_link_within_the_budget():
    assert len(lessons.LESSONS) >= 5
    for name, lesson in lessons.LESSONS.items():
        assert name == lesson.name and re.fullmatch(r"[a-z][a-z0-9-]*", name)
        assert lesson.title and 2 <= len(lesson.notice) <= 5
        assert all(len(text) < 600 for text in lesson.notice)
        exp = lesson.experiment
        assert session.Experiment.from_query(exp.to_query()) == exp  # a link reproduces it exactly
        limits.budget().check_experiment(exp)
        assert lesson.replay in exp.methods
        for item in lesson.unfold:
            assert item in ("certificate", "replay", "network") or item.removeprefix("options:") in exp.methods


def test_the_lessons_cover_the_topics_of_a_lecture():
    specs = {n: io.parse_spec(lesson.experiment.generator) for n, lesson in lessons.LESSONS.items()}
    assert specs["contraction"]["widths"][1] < specs["contraction"]["widths"][0]  # a contracting layer
    widths = specs["expansion"]["widths"]
    assert all(b >= 2 * a for a, b in itertools.pairwise(widths))
    assert lessons.get("masks").experiment.corruption.mask != "none"
    assert lessons.get("noise").experiment.corruption.noise != "none"
    assert specs["leaky-relu"]["hidden"] == "leaky_relu"
    assert lessons.get("real-digit").experiment.digit is not None
    with pytest.raises(demo.GeninvError, match="lesson"):
        lessons.get("nonsense")


def test_the_readme_lists_every_lesson_with_its_text():
    readme = (ROOT / "README.md").read_text()
    assert lessons.markdown() in readme


def _run(name):
    lesson = lessons.get(name)
    G = io.generator_from_spec(lesson.experiment.generator).double()
    out = demo.run(G, lesson.experiment)
    return out, {r["method"]: r for r in out.table()}


@pytest.mark.slow
def test_each_lesson_shows_what_its_text_says():
    out, rows = _run("expansion")
    assert out.verdict[0] == "identifiable and stable"
    assert all(r["latent_error"] < 1e-10 for r in rows.values())

    out, rows = _run("contraction")
    assert out.verdict[0].startswith("not identifiable")
    for method in ("latent-pursuit", "hybrid"):
        assert rows[method]["signal_error"] < 1e-12 and rows[method]["latent_error"] > 0.1

    out, rows = _run("masks")
    assert out.network["identifiable_layerwise"]
    assert rows["latent-pursuit"]["latent_error"] < 1e-10
    assert rows["gd"]["latent_error"] > 1e-3 and rows["gd"]["signal_error"] < 2e-3  # close image, slow latent
    loss = out.methods["gd"].history["loss"].min(axis=1)
    assert loss[-1] < loss[len(loss) // 2]  # still falling when the budget ends, not stuck
    G = io.generator_from_spec("mnist").double()
    batch = {r["method"]: r for r in demo.run_batch(G, lessons.get("masks").experiment, 20).summary()}
    assert 0.5 <= batch["gd"]["success_rate"] < 1 and batch["latent-pursuit"]["success_rate"] == 1
    assert batch["latent-pursuit"]["seconds_per_signal"] < batch["gd"]["seconds_per_signal"] / 20

    out, rows = _run("noise")
    assert out.verdict[0].startswith("identifiable but unstable") and out.network["condition"] > 300
    assert all(r["latent_error"] > 1 and r["psnr_db"] > 40 for r in rows.values())
    assert out.network["equations_output"] < out.network["observed"] / 2  # saturated pixels give no equation
    assert "oracle" in rows

    out, rows = _run("stable-noise")
    assert out.verdict[0] == "identifiable and stable" and out.network["condition"] < 10
    assert all(r["latent_error"] < 0.05 for r in rows.values())

    out, rows = _run("leaky-relu")
    assert not out.network["identifiable_layerwise"] and out.network["identifiable_network"]
    assert all(r["latent_error"] < 1e-10 for r in rows.values())
    last = next(c for c in out.certificate if c["layer"] == len(out.widths) - 2)
    assert last["cardinality"] == last["unknowns"] == 392 > last["rows"]  # dense: every unit an unknown

    out, rows = _run("real-digit")
    assert 0.12 < out.digit["projection_error"] < 0.25
    assert out.digit["projection_latent_norm"] > 20
    assert rows["gd"]["digit_error"] < rows["latent-pursuit"]["digit_error"]
