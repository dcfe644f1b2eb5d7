"""Sweep records on disk: atomic appends, no symlinks, every line checked against the sweep."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
import types

import pytest
import torch

from geninv.errors import InvalidValueError, RecordsWarning
from geninv.sweeps import SweepConfig, _cached_generator, append_line, read_records, run_sweep, run_task, write_results

TINY = SweepConfig(
    generator="random:4-16-48", variable="missing", values=(0.0, 0.5), methods=("latent-pursuit", "lbp"), trials=3
)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A finished TINY sweep's records file (its lines, as written)."""
    path = tmp_path_factory.mktemp("records") / "tiny.jsonl"
    run_sweep(TINY, records_path=path)
    return path.read_text().splitlines()


def _write(tmp_path, lines, end="\n"):
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(lines) + end)
    return path


def test_records_file_is_private_and_one_line_per_task(tmp_path, recorded):
    assert len(recorded) == 4
    path = tmp_path / "x.jsonl"
    run_sweep(TINY, records_path=path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_torn_last_line_is_dropped_with_a_warning_naming_file_and_line_and_the_sweep_resumes(tmp_path, recorded):
    path = _write(tmp_path, [*recorded[:2], recorded[2][: len(recorded[2]) // 2]], end="")
    with pytest.warns(RecordsWarning, match=r"r\.jsonl, line 3: an incomplete last line was dropped"):
        assert len(read_records(TINY, path)) == 2 * TINY.trials
    seen = []
    with pytest.warns(RecordsWarning):
        records = run_sweep(TINY, records_path=path, progress=lambda f, m: seen.append(m))
    assert len(seen) == 2 and len(records) == 4 * TINY.trials  # only the two missing tasks ran
    assert [json.loads(line)["task"] for line in path.read_text().splitlines()] == [
        json.loads(line)["task"] for line in recorded
    ]  # the torn fragment was cut off, the new lines start on their own


def test_a_complete_last_line_without_its_newline_is_kept_and_ended(tmp_path, recorded):
    path = _write(tmp_path, recorded[:2], end="")
    run_sweep(TINY, records_path=path)
    assert len(path.read_text().splitlines()) == 4 and path.read_text().endswith("\n")


def _forge(line, change):
    entry = json.loads(line)
    change(entry)
    return json.dumps(entry)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda e: e.pop("records"), "exactly 'config', 'task', 'records'"),
        (lambda e: e.update(task="0.7|lbp"), "not in this sweep"),
        (lambda e: e.update(task=["x"]), "not in this sweep"),
        (lambda e: e["records"].pop(), "list of 3 rows"),
        (lambda e: e["records"][0].pop("latent_error"), "exactly the keys"),
        (lambda e: e["records"][0].update(extra=1), "exactly the keys"),
        (lambda e: e["records"][0].update(latent_error="0"), "'latent_error' must be of type int or float"),
        (lambda e: e["records"][0].update(trial=True), "'trial' must be of type int"),
        (lambda e: e["records"][1].update(trial=0), "trials must be 0 to 2, each once"),
        (lambda e: e["records"][0].update(method="gd"), "'method' is 'gd'"),
        (lambda e: e["records"][0].update(value=0.25), "'value' is"),
        (lambda e: e["records"][0].update(success=True, latent_error=0.5), "does not follow from latent_error"),
        (lambda e: e["records"][0].update(success=True, latent_error=float("nan")), "does not follow"),
    ],
)
def test_forged_or_wrong_shaped_lines_are_refused_naming_file_and_line(tmp_path, recorded, change, match):
    lines = list(recorded)
    lines[1] = _forge(lines[1], change)
    path = _write(tmp_path, lines)
    with pytest.raises(InvalidValueError, match=r"r\.jsonl, line 2: .*" + match):
        read_records(TINY, path)


def test_garbage_in_the_middle_is_an_error_not_a_skip(tmp_path, recorded):
    path = _write(tmp_path, [recorded[0], "{not json", recorded[1]])
    with pytest.raises(InvalidValueError, match=r"line 2: not a JSON record"):
        run_sweep(TINY, records_path=path)


def test_a_task_recorded_twice_counts_once(tmp_path, recorded):
    path = _write(tmp_path, [recorded[0], recorded[0], recorded[1]])
    with pytest.warns(RecordsWarning, match="line 2: task .* recorded again; counted once"):
        records = read_records(TINY, path)
    assert len(records) == 2 * TINY.trials


def test_lines_of_another_sweep_in_the_same_file_are_left_alone(tmp_path, recorded):
    other = [_forge(line, lambda e: e.update(config="0123456789")) for line in recorded]
    path = _write(tmp_path, [*other, recorded[0]])
    assert len(read_records(TINY, path)) == TINY.trials


def test_records_are_never_read_or_written_through_a_symbolic_link(tmp_path, recorded):
    target = tmp_path / "elsewhere.txt"
    target.write_text("precious\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    with pytest.raises(InvalidValueError, match="Cannot read the records file"):
        read_records(TINY, link)
    with pytest.raises(OSError):
        append_line(link, recorded[0])
    assert target.read_text() == "precious\n"


def _append_many(path: str, tag: int) -> None:
    for k in range(200):
        append_line(path, json.dumps({"writer": tag, "k": k, "pad": "x" * 5000}))


def test_concurrent_appends_never_interleave_a_line(tmp_path):
    path = str(tmp_path / "shared.jsonl")
    procs = [mp.get_context("fork").Process(target=_append_many, args=(path, tag)) for tag in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = open(path).read().splitlines()
    assert len(lines) == 600
    assert {(e["writer"], e["k"]) for e in map(json.loads, lines)} == {(t, k) for t in range(3) for k in range(200)}


def test_a_sweep_task_restores_torchs_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_task(TINY.to_dict(), 0.0, "latent-pursuit")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_sweep_generator_cache_is_bounded():
    config = SweepConfig(generator="random:20-20", variable="expansion", values=(1.0,), methods=("lbp",), trials=1)
    for r in (1.0, 1.1, 1.2, 1.3, 1.4, 1.5):
        run_task({**config.to_dict(), "values": (r,)}, r, "lbp")
    info = _cached_generator.cache_info()
    assert info.maxsize == 4 and info.currsize <= 4


def test_sweep_html_works_offline(tmp_path):
    records = run_sweep(TINY)
    write_results(records, TINY, tmp_path, "a")
    write_results(records, TINY, tmp_path, "b")
    html = (tmp_path / "a.html").read_text()
    assert "cdn.plot.ly" not in html and 'src="plotly.min.js"' in html
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000  # written once, beside the files


@pytest.mark.slow
def test_an_interrupt_with_workers_keeps_the_finished_tasks_and_ends_the_workers(tmp_path, monkeypatch):
    # Spawned workers re-import __main__ from its file; AppTest (earlier in the same pytest run) leaves
    # __main__ pointing at the dashboard script, which must not run in a worker.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    path = tmp_path / "r.jsonl"

    def interrupt(fraction, message):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(TINY, progress=interrupt, records_path=path, n_workers=2)
    assert len(read_records(TINY, path)) == TINY.trials  # the first finished task, kept
    deadline = time.monotonic() + 60  # a loaded machine may take a moment to reap them; not a timing check
    while [p for p in mp.active_children() if p.is_alive()] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in mp.active_children() if p.is_alive()]  # the workers were ended, not left running
    assert os.path.getsize(path) > 0
