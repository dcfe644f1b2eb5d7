"""The wheel: built from the source tree, installed elsewhere, it carries every subpackage and every
shipped generator (the top-level assets/ folder becomes geninv/assets inside the package)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import json, sys
import geninv
from geninv import _assets, io
site = sys.argv[1]
out = {"geninv": geninv.__file__, "assets": str(_assets.assets_dir()), "generators": {}}
for name in io.SHIPPED:
    G = io.load_generator(name)
    out["generators"][name] = {"widths": list(G.widths), "sample": float(G.generate(G.sample_latent(1, seed=0)).sum())}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_the_wheel_installs_every_subpackage_and_shipped_generator(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("geninv", "assets"):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    dist, site = tmp_path / "dist", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)], check=True)
    (wheel,) = dist.glob("geninv-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "geninv").rglob("__init__.py")}
    assert all(f"{p}/__init__.py" in names for p in packages), sorted(packages)
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "geninv").rglob("*.py")}
    assert modules <= set(names), sorted(modules - set(names))
    shipped = {p.name for p in (ROOT / "assets").iterdir() if p.is_file()}
    assert {f"geninv/assets/{n}" for n in shipped} <= set(names)

    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True)
    env = os.environ | {"PYTHONPATH": str(site)}
    run = subprocess.run(
        [sys.executable, "-c", CHECK, str(site)], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    out = json.loads(run.stdout)
    assert out["geninv"].startswith(str(site)) and out["assets"].startswith(str(site))
    assert set(out["generators"]) == {"mnist", "mnist-conv"}
    assert out["generators"]["mnist"]["widths"] == [20, 128, 392, 784]
    assert out["generators"]["mnist-conv"]["widths"][0] == 20 and out["generators"]["mnist-conv"]["widths"][-1] == 784
