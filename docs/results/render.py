"""PNG figures for the README from the sweep records in docs/results (plotly HTML does not show on GitHub).

    python3 docs/results/render.py                 # every <preset>.json here -> <preset>.png
    python3 docs/results/render.py noise --width 800 --height 450

Each figure is :func:`geninv.charts.figure` on the preset's records (the same chart as
``<preset>.html``), drawn by plotly.js inside a headless Debian chromium driven by playwright, and
exported with ``Plotly.toImage``. It never downloads a browser: it uses ``--chromium`` (default
/usr/bin/chromium) and plotly.js from the plotly Python package, so it works offline.
"""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Sequence
from pathlib import Path

from tables import PRESET_ORDER  # this folder: one list of the presets, in the README's order

from geninv.charts import figure

HERE = Path(__file__).resolve().parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TITLES = {
    "expansion": "Clean inversion of random generators: success vs expansion",
    "noise": "Random 20-128-392-784 generator with Gaussian noise",
    "missing-random": "Random 20-128-392-784 generator, random pixels missing",
    "missing-mnist": "MNIST decoder, random pixels missing",
    "box-mnist": "MNIST decoder, centred box missing",
    "noise-mnist": "MNIST decoder with Gaussian noise",
    "certificate": "Certificate vs achieved recovery (random generators)",
    "measurements-mnist": "Compressed sensing, MNIST decoder: success vs m Gaussian measurements (n = 784)",
    "measurements-mnist-conv": "Compressed sensing, convolutional MNIST generator: success vs m (n = 784)",
    "measurements-dct-mnist": "MNIST decoder, m random 2-D DCT coefficients: success vs m (n = 784)",
}


def metric_for(config: dict) -> str:
    """The metric write_results draws for this sweep (kept in step with geninv.sweeps.write_results)."""
    if config.get("certificate"):
        return "identifiable_rate"
    return "median_error" if config["variable"] == "noise_db" else "success_rate"


def build_figure(payload: dict, preset: str):
    config = payload["config"]
    threshold = config["threshold"]
    fig = figure(payload["records"], metric_for(config), title=TITLES.get(preset, preset), threshold=threshold)
    subtitle = (
        f"{config['trials']} signals per point; success = relative latent error ≤ {threshold:g}; "
        "where methods tie, the wider line is underneath"
    )
    fig.update_layout(
        title={"text": f"{TITLES.get(preset, preset)}<br><sup>{subtitle}</sup>", "x": 0.02},
        margin={"l": 70, "r": 20, "t": 70, "b": 60},
        font={"size": 13},
    )
    if metric_for(config) != "median_error":
        fig.update_yaxes(range=[-0.04, 1.04], tickformat=".0%")
    if config.get("certificate"):
        fig.update_layout(legend_title="")
    if config["variable"] == "missing":
        fig.update_xaxes(tickformat=".0%")
    return fig  # ties: charts.figure already draws earlier traces wider


def figures_to_png(figs, *, width: int, height: int, chromium: str = "/usr/bin/chromium") -> list[bytes]:
    """PNG bytes of plotly figures, drawn by plotly.js in one headless chromium session."""
    from playwright.sync_api import sync_playwright

    images = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        for fig in figs:
            page.set_content(fig.to_html(include_plotlyjs=True, full_html=True, div_id="fig"))
            page.wait_for_function("() => window.Plotly && document.querySelector('#fig .main-svg')")
            url = page.evaluate(
                "([w, h]) => Plotly.toImage(document.getElementById('fig'), {format: 'png', width: w, height: h})",
                [width, height],
            )
            images.append(base64.b64decode(url.split(",", 1)[1]))
        browser.close()
    return images


def to_png(fig, *, width: int = 800, height: int = 450, chromium: str = "/usr/bin/chromium") -> bytes:
    """PNG bytes of one plotly figure (see :func:`figures_to_png`)."""
    return figures_to_png([fig], width=width, height=height, chromium=chromium)[0]


def render(presets: Sequence[str], *, width: int, height: int, chromium: str, folder: Path = HERE) -> list[Path]:
    figs = [build_figure(json.loads((folder / f"{p}.json").read_text()), p) for p in presets]
    written = []
    for preset, image in zip(presets, figures_to_png(figs, width=width, height=height, chromium=chromium)):
        out = folder / f"{preset}.png"
        out.write_bytes(image)
        written.append(out)
        print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("presets", nargs="*", help="presets (default: every <preset>.json here)")
    parser.add_argument("--width", type=int, default=800)
    parser.add_argument("--height", type=int, default=450)
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="browser executable (never downloaded)")
    parser.add_argument("--folder", type=Path, default=HERE, help="where the records are (default: docs/results)")
    args = parser.parse_args(argv)
    presets = args.presets or [p for p in PRESET_ORDER if (args.folder / f"{p}.json").exists()]
    render(presets, width=args.width, height=args.height, chromium=args.chromium, folder=args.folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
