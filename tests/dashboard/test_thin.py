"""The dashboard stays thin: widgets, caching and plots over geninv's public API."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALGORITHM_LIBRARIES = {"torch", "scipy", "cvxpy", "numpy.linalg", "sklearn"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_dashboard_imports_no_algorithm_library():
    files = sorted((ROOT / "dashboard").rglob("*.py"))
    assert len(files) >= 6
    for path in files:
        bad = {n for n in _imports(path) if n.split(".")[0] in ALGORITHM_LIBRARIES or n in ALGORITHM_LIBRARIES}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
        private = {n for n in _imports(path) if n.startswith("geninv.") and n.split(".")[1].startswith("_")}
        assert not private, f"{path.relative_to(ROOT)} reaches into geninv internals {sorted(private)}"


def test_geninv_never_imports_streamlit():
    for path in (ROOT / "geninv").rglob("*.py"):
        assert not {n for n in _imports(path) if n.split(".")[0] == "streamlit"}, path
