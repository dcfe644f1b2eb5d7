"""One real-browser test: the dashboard in headless Chromium (Debian's package) via Playwright."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from geninv import lessons

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("GENINV_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

HAVE_CHROMIUM = bool(shutil.which(CHROMIUM)) or Path(CHROMIUM).exists()
# CI sets GENINV_REQUIRE_BROWSER=1: there a missing browser fails the test instead of skipping it.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not HAVE_CHROMIUM and not os.environ.get("GENINV_REQUIRE_BROWSER"), reason="needs Debian's chromium"
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    """The dashboard served by ``streamlit run`` from the repository root (so .streamlit/config.toml applies):
    its URL and the file its log goes to."""
    log_path = tmp_path_factory.mktemp("server") / "streamlit.log"
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "dashboard" / "streamlit_app.py"),
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
    ]
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"streamlit did not start: {log_path.read_text()}")
        time.sleep(0.3)
    yield url, log_path
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def app_url(app_server):
    return app_server[0]


def _settle(page) -> None:
    """Wait until the app has finished its reruns (no "Running..." status widget)."""
    page.wait_for_timeout(500)
    page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=60_000)


def test_invert_page_in_a_real_browser(app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    shot = Path(os.environ.get("GENINV_SCREENSHOT", tmp_path / "invert.png"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1700})
        page.goto(app_url, timeout=60_000)
        sidebar = page.get_by_test_id("stSidebar")
        expect(page.get_by_text("Invert a generator")).to_be_visible(timeout=60_000)
        # Corruption: paint a stroke over the digit on the canvas (streamlit-drawable-canvas).
        sidebar.get_by_role("combobox", name="Hide").click()
        page.get_by_role("option", name="draw with the mouse").click()
        canvas = page.locator("canvas").last
        expect(canvas).to_be_visible(timeout=30_000)
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + 30, box["y"] + 150)
        page.mouse.down()
        for k in range(25):
            page.mouse.move(box["x"] + 30 + 9 * k, box["y"] + 150 + 3 * k)
        page.mouse.up()
        hidden = page.get_by_text("pixels hidden", exact=False)
        expect(hidden).to_be_visible(timeout=30_000)
        assert int(hidden.inner_text().split()[0]) > 20
        # Methods: gd and latent-pursuit are the defaults; run them.
        expect(sidebar.get_by_text("latent-pursuit").first).to_be_visible()
        _settle(page)
        sidebar.get_by_role("button", name="Run").click()
        expect(page.get_by_text("Results", exact=True)).to_be_visible(timeout=120_000)
        for method in ("gd", "latent-pursuit"):
            expect(page.get_by_test_id("stMain").get_by_text(method, exact=True).first).to_be_visible()
        captions = page.get_by_text("latent error", exact=False)
        expect(captions.first).to_be_visible(timeout=30_000)
        assert captions.count() >= 2
        assert (
            page.get_by_test_id("stImage").count() >= 6
        )  # sample, observed, then original, observed, gd, latent-pursuit
        page.wait_for_timeout(3000)  # let the charts draw before the screenshot
        assert page.get_by_test_id("stException").count() == 0
        assert "mask=custom" in page.url and "latent-pursuit" in page.url
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        # Replay: a click on a point of gd's convergence curve moves the iteration slider there.
        slider = page.get_by_test_id("stSlider").filter(has_text="Iteration")
        last = slider.inner_text().split()[1]
        page.get_by_test_id("stPlotlyChart").first.locator(".scatterlayer .trace .points path").nth(5).click(force=True)
        for _ in range(60):  # the value above the thumb (the text also holds the range's ends)
            if slider.inner_text().split()[1] != last:
                break
            page.wait_for_timeout(500)
        assert int(slider.inner_text().split()[1]) < int(last)
        browser.close()
    assert shot.stat().st_size > 20_000


def test_sweep_stop_button_keeps_the_records_so_far(app_url):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(f"{app_url}/sweep", timeout=60_000)
        expect(page.get_by_text("Sweep a parameter")).to_be_visible(timeout=60_000)
        for label, value in (
            ("Values (comma-separated; empty = the variable's defaults)", "0.6, 0.7, 0.8, 0.9"),
            ("Trials per value", "25"),  # long enough to be stopped half-way, within the default budget
        ):
            field = page.get_by_label(label)
            field.fill(value)
            field.press("Tab")  # commit the value before the form is submitted
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Run sweep").click()
        progress = page.get_by_test_id("stProgress")
        expect(progress).to_contain_text("missing=0.6", timeout=60_000)  # the first task has finished
        page.get_by_test_id("stMain").get_by_role("button", name="Stop").click()
        stopped = page.get_by_text("Stopped:", exact=False)
        expect(stopped).to_be_visible(timeout=60_000)
        done, total = (int(w) for w in stopped.inner_text().split()[1:4:2])
        assert 0 < done < total == 4 * 3 * 25  # 4 values x 3 default methods x 25 trials
        expect(page.get_by_role("button", name="Resume")).to_be_visible()
        assert page.get_by_test_id("stException").count() == 0
        browser.close()


def test_a_link_past_the_budget_is_refused_in_the_browser(app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    shot = Path(os.environ.get("GENINV_REFUSAL_SCREENSHOT", tmp_path / "refused.png"))
    link = f"{app_url}/?gen=random:20-31623-31623&methods=latent-pursuit&z=3"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(link, timeout=60_000)
        refusal = page.get_by_text("The link's experiment was not run", exact=False)
        expect(refusal).to_be_visible(timeout=60_000)
        text = refusal.inner_text()
        assert "31623 units" in text and "max_width" in text and "GENINV_BUDGET" in text
        expect(page.get_by_text("Invert a generator")).to_be_visible()
        _settle(page)
        assert page.get_by_test_id("stException").count() == 0
        assert page.get_by_text("Results", exact=True).count() == 0  # nothing ran
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()


def test_two_sessions_sweeping_the_same_configuration_keep_their_records(app_url):
    from playwright.sync_api import expect, sync_playwright

    def start(page) -> None:
        page.goto(f"{app_url}/sweep", timeout=60_000)
        expect(page.get_by_text("Sweep a parameter")).to_be_visible(timeout=60_000)
        for label, value in (("Values (comma-separated; empty = the variable's defaults)", "0, 0.3"),):
            field = page.get_by_label(label)
            field.fill(value)
            field.press("Tab")
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Run sweep").click()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pages = [browser.new_context().new_page() for _ in range(2)]  # two sessions, no shared cookies
        for page in pages:
            page.set_viewport_size({"width": 1300, "height": 1100})
            start(page)  # the second starts while the first runs
        for page in pages:
            expect(page.get_by_role("button", name="Records as CSV")).to_be_visible(timeout=240_000)
            _settle(page)
            assert page.get_by_text("Stopped:", exact=False).count() == 0  # every record of the sweep is there
            assert page.get_by_test_id("stException").count() == 0
        # Enter in a sweep field does not submit the form, so it cannot touch the finished records.
        field = pages[0].get_by_label("Values (comma-separated; empty = the variable's defaults)")
        field.fill("0, 0.3, 0.5")
        field.press("Enter")
        pages[0].wait_for_timeout(1500)
        _settle(pages[0])
        expect(pages[0].get_by_role("button", name="Records as CSV")).to_be_visible()
        assert pages[0].get_by_test_id("stProgress").count() == 0
        assert pages[0].get_by_text("Stopped:", exact=False).count() == 0
        browser.close()


def test_a_long_run_stops_on_stop_and_when_its_session_goes_away(app_server):
    from playwright.sync_api import expect, sync_playwright

    app_url, log_path = app_server
    heavy = '{"gd":{"n_iter":50000,"restarts":32,"record_every":100}}'  # within the budget, minutes long
    link = f"{app_url}/?gen=mnist&methods=gd&options={heavy}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(link, timeout=60_000)
        progress = page.get_by_test_id("stProgress")
        expect(progress).to_contain_text("gd: iteration", timeout=60_000)
        page.get_by_test_id("stMain").get_by_role("button", name="Stop").click()
        expect(progress).to_have_count(0, timeout=60_000)
        expect(page.get_by_text("press Run", exact=False)).to_be_visible(timeout=60_000)  # no results
        assert page.get_by_text("Results", exact=True).count() == 0
        # The same run again, then the visitor leaves: the server stops it.
        context = browser.new_context()
        other = context.new_page()
        other.goto(link, timeout=60_000)
        expect(other.get_by_test_id("stProgress")).to_contain_text("gd: iteration", timeout=60_000)
        context.close()
        deadline = time.monotonic() + 60
        while "went away: stopping its run" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "went away: stopping its run" in log_path.read_text()
        browser.close()


def _no_horizontal_scroll(page) -> None:
    """The page fits its width: neither the document nor the main panel scrolls sideways."""
    widths = page.evaluate(
        "(() => { const d = document.documentElement, m = document.querySelector('[data-testid=stMain]');"
        " return [d.scrollWidth, d.clientWidth, m.scrollWidth, m.clientWidth]; })()"
    )
    assert widths[0] <= widths[1] and widths[2] <= widths[3], widths


def _button_labels_not_cut(page) -> None:
    """Every sidebar button shows its whole label (once "New sample" was cut to "New sa...")."""
    cut = page.evaluate(
        "(() => [...document.querySelectorAll('[data-testid=stSidebar] button')]"
        ".filter(b => b.offsetParent !== null && b.innerText.trim())"
        ".filter(b => [b, ...b.querySelectorAll('*')].some(e => e.scrollWidth > e.clientWidth + 1))"
        ".map(b => b.innerText.trim()))()"
    )
    assert not cut, f"button labels cut: {cut}"


def _network_title(page) -> str:
    chart = (
        page.get_by_test_id("stPlotlyChart")
        .filter(has_text="supports of its iterate")
        .or_(page.get_by_test_id("stPlotlyChart").filter(has_text=" steps)"))
    )
    return chart.first.locator(".gtitle").text_content(timeout=10_000) or ""


_CURRENT_TITLE = """() => {
    // While the page reruns, Streamlit keeps the previous element beside the new one, marked stale, and
    // puts the new one first: the first title not marked stale is the picture's current one (on a loaded
    // machine the old copy can stay unmarked for a moment, and reading every copy would see it as a step back).
    for (const el of document.querySelectorAll('[data-testid=stPlotlyChart] .gtitle')) {
        const box = el.closest('[data-testid=stElementContainer]');
        if (box && box.getAttribute('data-stale') === 'true') continue;
        const t = el.textContent;
        if (t.includes(' steps)') || t.includes('supports of its iterate')) return t;
    }
    return null;
}"""


def _steady_network_title(page, seconds: float = 30) -> str:
    """The network picture's title once it has stayed the same for a second: the current copy (not one
    Streamlit keeps, marked stale, while the page reruns), after any rerun still in flight has landed."""
    last, since = None, 0
    for _ in range(int(seconds * 4)):
        title = page.evaluate(_CURRENT_TITLE)
        since = since + 1 if title == last else 0
        if title is not None and since >= 4:
            return title
        last = title
        page.wait_for_timeout(250)
    raise AssertionError(f"the network picture's title did not settle: last {last!r}")


_RECORD_TITLES = (
    """() => {
    // Every title the network picture shows, in order, however fast the replay moves.
    const current = """
    + _CURRENT_TITLE
    + """;
    window.__titles = [];
    new MutationObserver(() => {
        const t = current();
        if (t !== null && window.__titles[window.__titles.length - 1] !== t) window.__titles.push(t);
    }).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
}"""
)


def _play_button(page) -> str:
    """The replay button's label, "▶ Play" or "⏸ Pause" (not a stale copy kept while the page reruns)."""
    for _ in range(60):
        labels = page.evaluate(
            """() => Array.from(document.querySelectorAll('button'))
                .filter(b => { const c = b.closest('[data-testid=stElementContainer]');
                               return !c || c.getAttribute('data-stale') !== 'true'; })
                .map(b => b.textContent).filter(t => t.includes('Play') || t.includes('Pause'))"""
        )
        if len(labels) == 1:
            return labels[0]
        page.wait_for_timeout(250)
    raise AssertionError(f"no single Play / Pause button: {labels}")


def _wait_for_button(page, label: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while _play_button(page) != label:
        assert time.monotonic() < deadline, f"the replay button never read {label!r}"
        page.wait_for_timeout(200)


def test_a_lesson_plays_end_to_end_and_the_network_picture_follows_the_replay(app_url):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(f"{app_url}/?lesson=expansion", timeout=60_000)
        expect(page.get_by_text("Lesson · Expansion makes a generator invertible")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Results", exact=True)).to_be_visible(timeout=120_000)
        _settle(page)
        assert "lesson=expansion" in page.url
        _no_horizontal_scroll(page)
        # The lesson's replay is latent-pursuit, shown at its end; Play starts over and walks to z.
        assert _network_title(page) == "latent-pursuit: after step 3: z (3 of 3 steps)"
        page.evaluate(_RECORD_TITLES)
        page.get_by_role("button", name="▶ Play").click()
        _wait_for_button(page, "⏸ Pause")
        _wait_for_button(page, "▶ Play")  # at the end, Pause becomes Play again
        _settle(page)
        states = [t for t in page.evaluate("window.__titles") if t.startswith("latent-pursuit:")]
        start = "latent-pursuit: observed y (0 of 3 steps)"
        assert start in states, states  # Play at the end starts over
        walk = states[len(states) - 1 - states[::-1].index(start) :]
        # The picture walks forward from y and stops at z. A browser that cannot keep up with the
        # half-second ticks paints only the newest state it was sent: on a loaded machine middle states
        # may be missing (seen with three busy processes on two cores), never out of order.
        # (gd's replay below checks that the picture shows the states in between.)
        steps = [int(t.split("(")[-1].split()[0]) for t in walk]
        assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == 3, walk
        assert walk[-1] == "latent-pursuit: after step 3: z (3 of 3 steps)" == _network_title(page)
        # gd's iterations, fast: the picture follows the iterate; Pause stops it where it is.
        page.get_by_test_id("stMain").get_by_role("radiogroup").first.get_by_text("gd", exact=True).click()
        _settle(page)
        slider = page.get_by_test_id("stSlider").filter(has_text="Speed")
        slider.get_by_role("slider").focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")  # 8 frames per tick
        _settle(page)
        page.evaluate(_RECORD_TITLES)
        page.get_by_role("button", name="▶ Play").click()
        its: list[int] = []
        for _ in range(120):
            titles = [t for t in page.evaluate("window.__titles") if t.startswith("gd at iteration")]
            its = [int(t.split()[3]) for t in titles]  # the first may still be the end, before Play took effect
            if 0 in its and len(its) - its.index(0) >= 3:
                break
            page.wait_for_timeout(250)
        assert 0 in its, its  # Play at the end starts over
        its = its[its.index(0) :]
        assert len(its) >= 3 and its == sorted(its), its  # the picture walks forward with the replay
        page.get_by_role("button", name="⏸ Pause").click()
        _wait_for_button(page, "▶ Play")
        _settle(page)
        paused = _steady_network_title(page)  # a tick in flight when Pause was clicked may still land
        page.wait_for_timeout(2000)  # four ticks of the replay, were it still playing
        assert page.evaluate(_CURRENT_TITLE) == paused
        assert page.get_by_test_id("stException").count() == 0
        browser.close()


LESSON_SHOTS = os.environ.get("GENINV_LESSON_SCREENSHOTS")
LESSONS = tuple(lessons.LESSONS)


def test_lessons_fit_a_1280x720_screen(app_url, tmp_path):
    """A lesson at 1280x720 without sideways scrolling. With GENINV_LESSON_SCREENSHOTS=docs/lessons every
    lesson is checked and its page (1280 wide, every section) written there as NAME.png."""
    from playwright.sync_api import expect, sync_playwright

    folder = Path(LESSON_SHOTS) if LESSON_SHOTS else tmp_path
    names = LESSONS if LESSON_SHOTS else ("noise",)
    folder.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for name in names:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(f"{app_url}/?lesson={name}", timeout=60_000)
            expect(page.get_by_text("Results", exact=True)).to_be_visible(timeout=180_000)
            _settle(page)
            page.wait_for_timeout(2000)  # let the charts draw
            _no_horizontal_scroll(page)
            _button_labels_not_cut(page)
            assert page.get_by_test_id("stException").count() == 0
            height = page.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight")
            page.set_viewport_size({"width": 1280, "height": int(height)})  # same width: same layout, all of it
            page.wait_for_timeout(1500)
            shot = folder / f"{name}.png"
            page.screenshot(path=str(shot))
            page.close()
            _shrink_png(shot)
            assert shot.stat().st_size > 20_000
        browser.close()


def _shrink_png(path: Path) -> None:
    """Screenshots in the repository are kept small: 256 colours are plenty for a page of text and plots."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
