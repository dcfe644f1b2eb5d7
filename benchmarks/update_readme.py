"""Copy the generated results and performance tables into README.md (between marker comments).

    python3 docs/results/tables.py --write   # docs/results/HEADLINE.md from the sweep records
    python3 benchmarks/run_all.py            # benchmarks/results/PERFORMANCE.md
    python3 benchmarks/update_readme.py      # splice both into README.md

So every number in the README comes from a command anyone can run; nothing is typed by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {
    "results": ROOT / "docs" / "results" / "HEADLINE.md",
    "performance": ROOT / "benchmarks" / "results" / "PERFORMANCE.md",
    "gpu": ROOT / "benchmarks" / "results" / "GPU.md",  # python3 benchmarks/gpu_report.py
    "scale": ROOT / "benchmarks" / "results" / "SCALE_cpu.md",  # python3 benchmarks/bench_scale.py --plot
}


def demote(markdown: str) -> str:
    """Headings one level down, so that a file's '# Title' becomes a README '## Title'."""
    return re.sub(r"^(#+) ", r"#\1 ", markdown, flags=re.M)


def splice(readme: str, name: str, body: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in readme or end not in readme:
        raise SystemExit(f"README.md has no {begin} ... {end} markers")
    head, rest = readme.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body.strip()}\n{end}{tail}"


def main() -> int:
    path = ROOT / "README.md"
    readme = path.read_text()
    for name, source in SECTIONS.items():
        text = source.read_text()
        readme = splice(readme, name, demote(text) if text.lstrip().startswith("# ") else text)
    path.write_text(readme)
    print(f"updated {path.relative_to(ROOT)}: {', '.join(SECTIONS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
