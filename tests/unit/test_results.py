"""docs/results/tables.py: the markdown tables of the committed results, from tiny hand-made records."""

import importlib.util
import re
from pathlib import Path

import pytest

from geninv.sweeps import CLEAN_DB

TABLES = Path(__file__).resolve().parents[2] / "docs" / "results" / "tables.py"


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("results_tables", TABLES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _records(variable, values, methods, trials=4, certificate=False):
    rows = []
    for i, value in enumerate(values):
        for j, method in enumerate(methods):
            for t in range(trials):
                err = 1e-14 if j == 0 else 10.0 ** (i - 2) * (t + 1)  # method 0 exact; others worsen
                row = {
                    "variable": variable,
                    "value": value,
                    "method": method,
                    "trial": t,
                    "latent_error": err,
                    "success": err <= 1e-3,
                    "seconds": 0.01,
                }
                if certificate:
                    row |= {
                        "identifiable": t < 2,
                        "paper_unique": "holds" if t < 1 else "fails",
                        "lbp_guaranteed": False,
                    }
                rows.append(row)
    return rows


def _parse(markdown):
    lines = markdown.strip().splitlines()
    assert all(line.startswith("|") and line.endswith("|") for line in lines)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert set("".join(cells[1])) <= set("-: ")  # the separator row
    return cells[0], cells[2:]


def test_table_has_one_row_per_value_and_one_column_per_method(tables):
    methods = ("latent-pursuit", "gd", "hybrid")
    header, rows = _parse(tables.markdown_table(_records("missing", (0.0, 0.4, 0.8), methods)))
    assert header == ["missing", *methods]
    assert [r[0] for r in rows] == ["0% missing", "40% missing", "80% missing"]
    assert all(len(r) == len(header) for r in rows)
    for row in rows:
        for cell in row[1:]:
            rate, err = re.fullmatch(r"(\d+)% · (\S+)", cell).groups()
            assert 0 <= int(rate) <= 100
            assert float(err) >= 0
    assert rows[0][1] == "100% · 1.0e-14"  # exact method
    assert rows[0][2] == "0% · 2.5e-02"  # errors 0.01 .. 0.04: none a success, median 0.025
    assert rows[2][2].startswith("0% ")


def test_table_labels_noise_and_adds_certificate_rates(tables):
    header, rows = _parse(tables.markdown_table(_records("noise_db", (CLEAN_DB, 20.0), ("lp", "gd"), certificate=True)))
    assert header == ["noise_db", "lp", "gd", "identifiable", "paper's condition", "LBP guarantee"]
    assert [r[0] for r in rows] == ["clean", "20 dB"]
    assert rows[0][3:] == ["50%", "25%", "0%"]


def test_table_rejects_no_records(tables):
    with pytest.raises(ValueError, match="'records'"):
        tables.markdown_table([])


def test_readme_sections_are_spliced_between_markers():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "update_readme.py"
    spec = importlib.util.spec_from_file_location("update_readme", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = "intro\n<!-- results:begin -->\nold\n<!-- results:end -->\noutro\n"
    out = module.splice(readme, "results", module.demote("# Performance\n\n## Dashboard\n| a |"))
    assert out == "intro\n<!-- results:begin -->\n## Performance\n\n### Dashboard\n| a |\n<!-- results:end -->\noutro\n"
    with pytest.raises(SystemExit, match="performance:begin"):
        module.splice(readme, "performance", "x")
    real = (path.parents[1] / "README.md").read_text()
    assert all(f"<!-- {name}:begin -->" in real for name in module.SECTIONS)


def test_compressed_sensing_table_has_a_row_per_m_and_a_column_per_generator_and_method(tables):
    payloads = {
        preset: {
            "config": {"values": [20.0, 100.0]},
            "records": _records("measurements", (20.0, 100.0), ("gd", "hybrid")),
        }
        for preset, _ in tables.CS_PRESETS
    }
    header, rows = _parse(tables.cs_table(payloads))
    assert header == [
        "m (of 784)",
        "MNIST decoder: gd",
        "MNIST decoder: hybrid",
        "conv generator: gd",
        "conv generator: hybrid",
    ]
    assert [r[0] for r in rows] == ["20", "100"]
    assert rows[0][1].startswith("100%") and rows[1][2].startswith("0%")  # gd exact; hybrid 10^-1 .. 10^-1 * 4
    assert tables.format_value("measurements", 100.0) == "m = 100"
