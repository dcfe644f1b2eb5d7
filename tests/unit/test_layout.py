"""The README's code-structure section matches the code: every module it names exists, and it names every module."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Code structure")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_every_folder_and_module_the_readme_names_exists():
    section = _section()
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) >= 6
    for row in rows:
        folders = re.findall(r"^\| `([^`]+)`(?:, `([^`]+)`)?", row)[0]
        for folder in filter(None, folders):
            assert (ROOT / folder).is_dir(), folder
        base = ROOT / folders[0]
        for name in re.findall(r"`([\w/]+\.py)`", row):
            assert (base / name).is_file() or (ROOT / name).is_file(), f"{name} (row {folders[0]})"


def test_the_readme_names_every_public_module():
    section = _section()
    modules = [
        p for p in (ROOT / "geninv").rglob("*.py") if not p.name.startswith("_") and "__pycache__" not in p.parts
    ]
    missing = [str(p.relative_to(ROOT)) for p in modules if f"`{p.name}`" not in section]
    assert not missing, f"modules missing from the README's code structure: {missing}"
