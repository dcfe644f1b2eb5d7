"""What keeps a served dashboard safe for its visitors and its server.

- :func:`guard`: every page (and fragment) runs inside it; an unexpected exception becomes a short
  message with a reference, and its traceback goes to the server's log, never to the visitor.
- :func:`show_error` and friends: user-provided text is escaped, so it is never rendered as
  Markdown (no injected images or links inside the app's own messages), and messages are short.
- :func:`reporter`: the progress callback of a long run; it draws the progress a few times a
  second (each draw is where Streamlit stops a script whose Stop was pressed) and stops the work
  when the visitor's session has gone away.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import streamlit as st

log = logging.getLogger("geninv.dashboard")
MAX_MESSAGE = 600
_MARKDOWN = re.compile(r"([\\`*_{}\[\]<>#!|~$:])")  # what can start Markdown, LaTeX, HTML or a Streamlit directive


def escape(text: Any) -> str:
    """``text`` with every Markdown (and LaTeX / HTML) character escaped, cut to :data:`MAX_MESSAGE`."""
    text = " ".join(str(text).split())
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1] + "…"
    text = _MARKDOWN.sub(r"\\\1", text).replace("www.", "www\\.")  # no link, image, formula, directive
    if text[:1] in ("-", "+", "=") or re.match(r"[0-9]+[.)]", text):  # nor a list or a heading
        text = "\\" + text
    return text


def show_error(text: Any, where: Any = None) -> None:
    """``st.error`` of user-influenced text, escaped (``where``: ``st.sidebar`` or a container)."""
    (where or st).error(escape(text))


def refuse(what: str, exc: Exception) -> None:
    """A request past the budget: logged (INFO, the reason only) and told to the visitor in one sentence."""
    log.info("%s refused: %s", what, str(exc)[:300])
    show_error(f"This {what} is refused: {exc}")


def show_warning(text: Any, where: Any = None) -> None:
    (where or st).warning(escape(text))


@contextlib.contextmanager
def guard(where: str) -> Iterator[None]:
    """Catch anything a page raises: a short message for the visitor, the details in the log.

    Streamlit's own control flow (``st.stop``, ``st.rerun``, a stop or rerun request) derives from
    BaseException and passes through untouched.
    """
    try:
        yield
    except Exception:
        reference = secrets.token_hex(4)
        log.exception("unexpected error on %s (reference %s)", where, reference)
        st.error(
            f"Something went wrong on this page (reference {reference}); the details are in the server's log. "
            "Change a setting or reload the page to go on."
        )


def reporter(bar: Any, *, every: float = 0.25) -> Callable[[float, str], bool]:
    """A progress callback for geninv's long runs, drawing on ``bar`` (an ``st.progress``).

    Returns False (the library's "stop") once the visitor's session is no longer connected; a
    Stop button or a new request interrupts the run at the next draw.
    """
    session_id = _session_id()
    last = [-1.0]

    def progress(fraction: float, message: str) -> bool:
        now = time.monotonic()
        if fraction < 1 and now - last[0] < every:
            return True
        last[0] = now
        if not _session_alive(session_id):
            log.info("session %s went away: stopping its run", session_id)
            return False
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=escape(message)[:120])
        return True

    return progress


def _session_id() -> str | None:
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx(suppress_warning=True)
        return None if ctx is None else ctx.session_id
    except Exception:  # an older or newer Streamlit without this helper: no liveness check
        return None


def _session_alive(session_id: str | None) -> bool:
    if session_id is None:
        return True
    try:
        from streamlit import runtime

        return not runtime.exists() or runtime.get_instance().is_active_session(session_id)
    except Exception:
        return True


def configure_logging() -> None:
    """Send the dashboard's log lines (refusals, errors with their traceback) to stderr once."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
