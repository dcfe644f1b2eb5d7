"""The README tells a newcomer the truth: CI runs its test command verbatim, its examples write only
under out/, and it documents every environment variable the code reads."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
sys.path.insert(0, str(ROOT / "docs"))
from newcomer import readme_steps  # noqa: E402


def _commands() -> list[str]:
    return [s["cmd"] for s in readme_steps(README) if s["kind"] == "shell"]


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = next(c for c in _commands() if c.endswith("python3 -m pytest -q"))
    assert "python3 -m venv .venv" in test_command
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_every_readme_command_writes_under_out():
    commands = _commands()
    assert len(commands) >= 15, commands  # the parser finds the README's commands at all
    for cmd in commands:
        for flag in ("--out", "--folder", "-w"):
            for target in re.findall(rf"(?:^|\s){flag}[ =](\S+)", cmd):
                assert target.startswith("out/"), f"{cmd!r} writes to {target}"
        for target in re.findall(r"GENINV_[A-Z_]*SCREENSHOTS?=(\S+)", cmd):
            assert target.startswith("out/"), f"{cmd!r} writes to {target}"


def test_the_readme_documents_every_environment_variable():
    used = set()
    for folder in ("geninv", "dashboard", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            used |= set(re.findall(r"\bGENINV_[A-Z_]+\b", path.read_text()))
    missing = sorted(name for name in used if f"`{name}`" not in README)
    assert not missing, f"environment variables the README does not document: {missing}"
