"""geninv dashboard: ``streamlit run dashboard/streamlit_app.py``.

Every page runs inside :func:`dashboard.safety.guard`: whatever it raises, the visitor sees a short
message and the server's log gets the traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run` puts dashboard/ on the path, not the repository root
    sys.path.insert(0, str(ROOT))

from dashboard import safety, state  # noqa: E402  (needs the path set above)

st.set_page_config(page_title="geninv — invert generative models", page_icon=":material/replay:", layout="wide")

PAGES = Path(__file__).resolve().parent / "app_pages"
navigation = st.navigation(
    [
        st.Page(PAGES / "invert.py", title="Invert", icon=":material/search:", default=True),
        st.Page(PAGES / "sweep.py", title="Sweep", icon=":material/show_chart:"),
        st.Page(PAGES / "theory.py", title="Theory", icon=":material/functions:"),
    ]
)
safety.configure_logging()
state.keep()  # widget values survive page switches and widgets that a run does not draw
with safety.guard(f"page {navigation.title!r}"):
    navigation.run()
