import json

import pytest

from geninv.cli import main


def test_help_explains_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["invert", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--missing" in out and "fraction of random pixels hidden" in out


def test_invert_writes_json_and_pngs(tmp_path, capsys):
    code = main(
        [
            "invert",
            "--generator",
            "random:4-16-49",
            "--missing",
            "0.3",
            "--samples",
            "2",
            "--methods",
            "latent-pursuit",
            "hybrid",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["methods"]["latent-pursuit"]["success_rate"] == 1.0
    assert (tmp_path / "reconstruction_hybrid.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "mask.png").exists()


def test_certify_table_and_json(capsys):
    assert main(["certify", "--generator", "random:20-80-320", "--samples", "10"]) == 0
    assert "identifiable" in capsys.readouterr().out
    assert main(["certify", "--generator", "random:20-80-320", "--samples", "10", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[-1]["layer"] == "all" and rows[-1]["identifiable"] >= 0.9


def test_sweep_custom(tmp_path, capsys):
    code = main(
        [
            "sweep",
            "--generator",
            "random:4-16-48",
            "--variable",
            "missing",
            "--values",
            "0",
            "0.5",
            "--methods",
            "latent-pursuit",
            "--trials",
            "2",
            "--out",
            str(tmp_path),
            "--resume",
        ]
    )
    assert code == 0
    assert (tmp_path / "sweep-missing.csv").exists() and (tmp_path / "sweep-missing.records.jsonl").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["invert", "--generator", "random:20-x"], "must be positive integers"),
        (["invert", "--generator", "random:4-16-48", "--missing", "1.5"], "'missing'"),
        (["sweep", "nonsense"], "Unknown preset"),
        (["certify", "--generator", "resnet50"], "Unknown generator spec"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("geninv: error:")
    assert "Traceback" not in "\n".join(err)
