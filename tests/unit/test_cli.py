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


# ----------------------------------------------------------------------------- bad input: exit 2, one line, no compute
@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if a command gets as far as inverting or sweeping."""
    import geninv.experiments
    import geninv.sweeps

    def refuse(*args, **kwargs):
        raise AssertionError("bad input reached the compute")

    monkeypatch.setattr(geninv.experiments, "run_methods", refuse)
    monkeypatch.setattr(geninv.sweeps, "run_sweep", refuse)


SMALL = ["--generator", "random:4-16-49"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["invert", *SMALL, "--methods", "bogus"], "invalid choice: 'bogus'"),
        (["invert", *SMALL, "--methods", "gd", "gd"], "'methods'"),
        (["invert", *SMALL, "--snr", "5000"], "'snr'"),
        (["invert", *SMALL, "--snr", "-5000"], "'snr'"),
        (["invert", *SMALL, "--sigma", "-1"], "'sigma'"),
        (["invert", *SMALL, "--samples", "0"], "'samples'"),
        (["certify", *SMALL, "--samples", "0"], "'samples'"),
        (["invert", *SMALL, "--missing", "0", "--box", "3"], "not allowed with argument --missing"),
        (["invert", *SMALL, "--half", "top", "--mask-png", "m.png"], "not allowed with argument --half"),
        (["certify", *SMALL, "--missing", "0.5", "--half", "top"], "not allowed with argument --missing"),
        (["sweep", "--variable", "missing", "--values", "0", "--trials", "0"], "'trials'"),
        (["sweep", "--variable", "missing", "--values", "0", "0"], "'values'"),
        (["sweep", "--variable", "missing", "--values", "0", "--workers", "0"], "'workers'"),
        (["sweep", "--variable", "noise_db", "--values", "5000"], "'values'"),
        (["sweep", "--variable", "expansion", "--values", "2000"], "'values'"),
        (["sweep", "--variable", "missing", "--values", "0", "--methods", "gd", "gd"], "'methods'"),
    ],
)
def test_bad_input_is_refused_before_any_compute(argv, message, capsys, no_compute, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors (one line too)
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "error:" in err[0], err


def test_out_that_is_a_file_and_mask_png_that_is_a_folder(tmp_path, capsys, no_compute):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["invert", *SMALL, "--out", str(afile)]) == 2
    assert "'out' parameter must be a folder" in capsys.readouterr().err
    assert main(["invert", *SMALL, "--mask-png", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "'mask-png' parameter must be a PNG file" in capsys.readouterr().err
    assert main(["sweep", "--variable", "missing", "--values", "0", "--out", str(afile)]) == 2


def test_unreachable_scheduler_is_an_error_not_a_hang(tmp_path, capsys, no_compute):
    argv = ["sweep", "--variable", "missing", "--values", "0", "--out", str(tmp_path)]
    assert main([*argv, "--scheduler", "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Cannot reach the Dask scheduler at tcp://127.0.0.1:1" in err[0]
    assert main([*argv, "--scheduler", "localhost"]) == 2
    assert "'scheduler'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- what this machine can hold
@pytest.fixture
def small_machine(monkeypatch):
    """A machine of 2 GiB (1 GiB of it the solvers' budget), where drawing a signal fails the test: a
    request it cannot hold must be refused before."""
    import geninv.limits
    from geninv.generator import Generator

    def refuse(*args, **kwargs):
        raise AssertionError("a signal was drawn before the memory check")

    monkeypatch.setattr(geninv.limits, "machine_memory", lambda: 2 * 2**30)
    monkeypatch.setattr(Generator, "sample_latent", refuse)


@pytest.mark.parametrize(
    "argv, name",
    [
        (["invert", *SMALL, "--samples", "1000000", "--methods", "latent-pursuit"], "'samples' parameter (1,000,000"),
        (["invert", *SMALL, "--samples", "20000"], "'samples' parameter (20,000"),  # gd's and the hybrid's iterates
        (["certify", *SMALL, "--samples", "2000000"], "'samples' parameter (2,000,000"),
        (
            ["sweep", *SMALL, "--variable", "missing", "--values", "0", "--methods", "lbp", "--trials", "1000000"],
            "'trials' parameter (1,000,000",
        ),
        (["sweep", "expansion", "--trials", "100000"], "'trials' parameter (100,000"),
    ],
)
def test_a_request_this_machine_cannot_hold_is_refused_before_any_signal(
    argv, name, capsys, no_compute, small_machine, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0] and "more than this machine's 2 GiB; ask for fewer signals" in err[0], err


def test_the_same_requests_run_where_they_fit(tmp_path, capsys, monkeypatch):
    import geninv.limits

    monkeypatch.setattr(geninv.limits, "machine_memory", lambda: 2 * 2**30)
    argv = ["invert", *SMALL, "--samples", "3", "--methods", "latent-pursuit", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert json.loads((tmp_path / "results.json").read_text())["methods"]["latent-pursuit"]["success_rate"] == 1.0


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried ..."),
    ],
)
def test_running_out_of_memory_partway_is_one_sentence(error, tmp_path, capsys, monkeypatch):
    import geninv.experiments

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(geninv.experiments, "run_methods", fail)
    assert main(["invert", *SMALL, "--samples", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "geninv: error: this machine ran out of memory partway through; ask for fewer signals or a smaller generator."
    ]


def test_other_runtime_errors_are_not_reported_as_memory(tmp_path, monkeypatch):
    import geninv.experiments

    def fail(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(geninv.experiments, "run_methods", fail)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        main(["invert", *SMALL, "--samples", "2", "--out", str(tmp_path)])


# ----------------------------------------------------------------------------- papercuts
def test_invert_help_lists_the_methods_and_the_default(capsys):
    import geninv

    with pytest.raises(SystemExit):
        main(["invert", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(m in out for m in geninv.methods())
    assert "(default: gd latent-pursuit hybrid)" in out


def test_invert_lists_every_file_it_wrote_and_writes_no_nan(tmp_path, capsys):
    argv = ["invert", "--generator", "random:4-16-49", "--box", "3", "--samples", "2", "--out", str(tmp_path)]
    assert main([*argv, "--methods", "latent-pursuit", "lp"]) == 0
    out = capsys.readouterr().out
    wrote = next(line for line in out.splitlines() if line.startswith("wrote "))
    names = {p.rsplit("/", 1)[-1] for p in wrote.removeprefix("wrote ").split(", ")}
    assert names == {p.name for p in tmp_path.iterdir()}
    assert {"results.json", "original.png", "observed.png", "mask.png", "reconstruction_lp.png"} <= names
    assert "NaN" not in (tmp_path / "results.json").read_text()


def test_progress_draws_in_place_only_on_a_terminal():
    import io

    from geninv.cli import _Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    log, tty = io.StringIO(), Terminal()
    for stream in (log, tty):
        bar = _Progress(stream)
        for k in range(101):
            bar(k / 100, f"step {k}")
    assert "\r" not in log.getvalue() and len(log.getvalue().splitlines()) == 11  # 0%, 10%, ..., 100%
    assert tty.getvalue().count("\r") > 50 and tty.getvalue().endswith("\n")  # redrawn about every 1%


def test_sweep_table_shows_the_clean_case_as_clean(tmp_path, capsys):
    argv = ["sweep", "--generator", "random:4-16-48", "--variable", "noise_db", "--values", "1000", "30"]
    assert main([*argv, "--methods", "latent-pursuit", "--trials", "2", "--out", str(tmp_path)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert any(r.split()[:2] == ["latent-pursuit", "clean"] for r in rows) and not any("1000" in r for r in rows)


def test_sweep_writes_to_a_scratch_folder_by_default():
    from geninv.cli import build_parser

    assert build_parser().parse_args(["sweep", "noise"]).out == "out/sweeps"


def test_resume_drops_a_torn_last_line_and_refuses_a_wrong_shaped_one(tmp_path, capsys):
    argv = ["sweep", "--generator", "random:4-16-48", "--variable", "missing", "--values", "0", "0.5"]
    argv += ["--methods", "latent-pursuit", "--trials", "2", "--out", str(tmp_path), "--resume"]
    assert main(argv) == 0
    path = tmp_path / "sweep-missing.records.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][:40])
    with pytest.warns(UserWarning, match="line 2: an incomplete last line was dropped"):
        assert main(argv) == 0
    assert len(path.read_text().splitlines()) == 2
    entry = json.loads(lines[0])
    entry["records"][0]["success"] = not entry["records"][0]["success"]  # a forged record
    path.write_text(json.dumps(entry) + "\n")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sweep-missing.records.jsonl, line 1: 'success'" in err[0]


@pytest.mark.slow
def test_ctrl_c_with_workers_stops_and_keeps_the_finished_tasks(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "sw"
    cmd = [sys.executable, "-m", "geninv", "sweep", "--generator", "random:20-128-392-784", "--variable", "missing"]
    cmd += ["--values", "0", "0.2", "0.4", "0.6", "0.7", "0.8", "--methods", "gd", "latent-pursuit"]
    cmd += ["--trials", "60", "--workers", "2", "--out", str(out)]
    # A test run started in the background by a non-interactive shell ignores SIGINT, and children
    # inherit that: the command gets the default disposition back, as in a terminal.
    proc = subprocess.Popen(
        cmd,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    records = out / "sweep-missing.records.jsonl"
    deadline = time.monotonic() + 300
    while not (records.exists() and records.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "the finished tasks are kept" in err
    assert 2 <= records.read_text().count("\n") < 12
    assert "--resume" in err.strip().splitlines()[-1]


# ----------------------------------------------------------------------------- compressed sensing
def test_invert_and_certify_from_measurement_specs(tmp_path, capsys):
    args = ["--generator", "random:4-16-49", "--measurements", "gaussian:20:seed=3", "--samples", "2"]
    assert main(["invert", *args, "--methods", "latent-pursuit", "hybrid", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["measurements"] == "gaussian:20:seed=3" and report["m"] == 20
    assert report["methods"]["hybrid"]["success_rate"] == 1.0
    assert (tmp_path / "original.png").exists() and not (tmp_path / "observed.png").exists()  # y is not an image
    capsys.readouterr()
    assert main(["certify", *args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["rows_mean"] == 20 and rows[-1]["identifiable_network"] == 1.0
    assert main(["certify", "--generator", "random:4-16-49", "--measurements", "dct:3", "--samples", "2"]) == 0
    assert "from dct:3" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--measurements", "gaussian:lots"], "'measurements' parameter must be"),
        (["--measurements", "gaussian:5000"], "at most 49 measurements"),
        (["--measurements", "fourier:10"], "unknown kind 'fourier'"),
    ],
)
def test_bad_measurement_specs_exit_2_with_one_line(args, match, capsys):
    assert main(["certify", "--generator", "random:4-16-49", *args]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


def test_measurements_exclude_a_mask(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["certify", "--measurements", "gaussian:10", "--missing", "0.3"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_sweep_against_the_number_of_measurements(tmp_path, capsys):
    code = main(
        [
            "sweep",
            "--generator",
            "random:4-16-48",
            "--variable",
            "measurements",
            "--measurement",
            "subsample",
            "--values",
            "2",
            "48",
            "--methods",
            "latent-pursuit",
            "--trials",
            "3",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    payload = json.loads((tmp_path / "sweep-measurements.json").read_text())
    rates = {row["value"]: row["success_rate"] for row in payload["summary"]}
    assert payload["config"]["measurement"] == "subsample"
    assert rates[48.0] > rates[2.0] == 0.0  # 2 pixels cannot pin down 4 latents; all 48 mostly do
