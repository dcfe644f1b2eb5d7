"""geninv dashboard: ``streamlit run dashboard/streamlit_app.py``.

The pages are in ``main.py``; this entry point only adds a start-up hook that imports torch and
geninv and loads the shipped generator in the background while the server starts, so that the
first visitor does not wait for them.
"""

from __future__ import annotations

import sys
import threading
from contextlib import asynccontextmanager
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _warm() -> None:
    import geninv
    from dashboard.components import controls, figures  # noqa: F401  (torch, plotly, pandas: seconds)

    geninv.methods()
    geninv.load_generator("mnist")


@asynccontextmanager
async def _lifespan(_app):
    threading.Thread(target=_warm, name="geninv-warm-up", daemon=True).start()
    yield


app = st.App("main.py", lifespan=_lifespan)
