"""The demo in a real browser: headless Chromium driven by Playwright opens each tab, runs an example,
waits for the result and saves a screenshot.

The browser is an installed Chromium: ``LLM_MEMORY_CHROMIUM`` when set, else the first of ``chromium``,
``chromium-browser``, ``google-chrome`` and ``google-chrome-stable`` on the ``PATH`` or in ``/usr/bin``;
Playwright never downloads one. Without it the tests fail with a message that says how to install one,
rather than skip, so that a CI without a browser is noticed (``.ci/run`` installs Debian's).
Screenshots go to a temporary folder, and also to ``LLM_MEMORY_SCREENSHOTS`` when that is set. Every
page also checks that the browser asked nothing of any host but the app: plotly.js and the fonts ship
with Gradio, and the demo must work offline.
"""

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from llm_memory.demo.app import build_demo
from llm_memory.demo.tabs import SUMMARIZE_EXAMPLES
from llm_memory.serving.models import load_models

# A real browser and a served app: slow.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_CHROMIUM = (
    "Install Chromium and run the tests again: on Debian or Ubuntu `sudo apt-get install chromium "
    "fonts-noto-cjk fonts-noto-color-emoji` (the fonts draw Chinese and emoji in the screenshots); on macOS "
    "`brew install --cask chromium`; elsewhere any Chromium or Chrome build. If it is not on the PATH, set "
    "LLM_MEMORY_CHROMIUM to its executable. This test never downloads a browser."
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Model calls on a busy 2-core machine; generous, since a timeout here says nothing about the UI.
RESULT_TIMEOUT_MS = 60_000


def find_chromium() -> str | None:
    """The Chromium to drive: LLM_MEMORY_CHROMIUM, else the first known name on the PATH or in /usr/bin."""
    if os.environ.get("LLM_MEMORY_CHROMIUM"):
        return os.environ["LLM_MEMORY_CHROMIUM"]
    for name in CHROMIUM_NAMES:
        found = shutil.which(name) or shutil.which(name, path="/usr/bin")
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def app_url(tiny_checkpoints, free_port):
    checkpoints = tiny_checkpoints
    # As app.py serves: generation decoded in a child process.
    models = load_models(
        checkpoints["model"], checkpoints["classifier"], checkpoints["summarizer"], decoder_process=True
    )
    demo = build_demo(models, ROOT / "checkpoints" / "memory")
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()
    models.batcher.close()


@pytest.fixture(scope="module")
def browser():
    chromium = find_chromium()
    if chromium is None:
        pytest.fail(f"No Chromium found (looked for {', '.join(CHROMIUM_NAMES)}). {INSTALL_CHROMIUM}")
    if not (os.path.isfile(chromium) and os.access(chromium, os.X_OK)):
        pytest.fail(f"LLM_MEMORY_CHROMIUM={chromium!r} is not an executable file. {INSTALL_CHROMIUM}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def screenshot_dirs(tmp_path_factory) -> list[Path]:
    folders = [tmp_path_factory.mktemp("screenshots")]
    if os.environ.get("LLM_MEMORY_SCREENSHOTS"):
        folders.append(Path(os.environ["LLM_MEMORY_SCREENSHOTS"]))
        folders[-1].mkdir(parents=True, exist_ok=True)
    return folders


@pytest.fixture
def page(browser, app_url, screenshot_dirs):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(app_url)
    expect(page.get_by_role("tab", name="Generate")).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    page.requested = requested
    yield page
    context.close()


def open_tab_and_run_example(page, tab: str, example: str, button: str) -> None:
    page.get_by_role("tab", name=tab).click()
    # An example is a button named by its text, which a long example shows only the start of.
    page.get_by_role("button", name=re.compile("^" + re.escape(example[:40]))).click()
    page.get_by_role("button", name=button, exact=True).click()


def finish(page, app_url: str, screenshot_dirs: list[Path], name: str) -> None:
    """Saves the screenshot and checks that every request went to the app itself."""
    path = screenshot_dirs[0] / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    for folder in screenshot_dirs[1:]:
        shutil.copy2(path, folder / path.name)
    assert path.stat().st_size > 10_000
    foreign = [url for url in page.requested if not url.startswith((app_url, "data:", "blob:"))]
    assert not foreign, f"the page requested other hosts: {foreign}"


def test_generate_tab_streams_a_continuation(page, app_url, screenshot_dirs):
    open_tab_and_run_example(page, "Generate", "I watched this film last night, and", "Generate")
    expect(page.locator("#generate-speed")).to_contain_text("done", timeout=RESULT_TIMEOUT_MS)
    expect(page.locator("#generate-speed")).to_contain_text("tokens/s")
    expect(page.locator("#generate-output textarea")).not_to_have_value("")
    finish(page, app_url, screenshot_dirs, "generate")


def test_classify_tab_shows_labels_and_attributions(page, app_url, screenshot_dirs):
    open_tab_and_run_example(page, "Classify", "The plot was thin, but the acting saved it 😀", "Classify")
    expect(page.locator("#classify-label")).to_contain_text(re.compile("neg|pos"), timeout=RESULT_TIMEOUT_MS)
    expect(page.locator("#classify-pieces")).to_contain_text("😀")
    finish(page, app_url, screenshot_dirs, "classify")


def test_summarize_tab_marks_the_picked_sentences(page, app_url, screenshot_dirs):
    open_tab_and_run_example(page, "Summarize", SUMMARIZE_EXAMPLES[1], "Summarize")
    expect(page.locator("#summarize-summary textarea")).not_to_have_value("", timeout=RESULT_TIMEOUT_MS)
    expect(page.locator("#summarize-marked")).to_contain_text("summary")
    finish(page, app_url, screenshot_dirs, "summarize")


def test_attention_tab_draws_heatmaps_with_hover_on_chinese(page, app_url, screenshot_dirs):
    open_tab_and_run_example(page, "Attention", "我喜欢编程", "Show attention")
    expect(page.locator("#attention-info")).to_contain_text("pieces", timeout=RESULT_TIMEOUT_MS)
    heatmap = page.locator("#attention-heatmap .js-plotly-plot")
    expect(heatmap).to_be_visible()
    expect(page.locator("#attention-grid .js-plotly-plot")).to_be_visible()
    # Hovering a cell shows its weight: the figure is interactive, not a picture.
    cells = page.locator("#attention-heatmap .nsewdrag").first
    cells.scroll_into_view_if_needed()
    box = cells.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
    expect(page.locator("#attention-heatmap .hovertext")).to_contain_text("weight")
    # Clicking the first piece makes it the query.
    page.locator("#attention-highlights").get_by_text("我").first.click()
    expect(page.locator("#attention-info")).to_contain_text("from piece 0", timeout=RESULT_TIMEOUT_MS)
    finish(page, app_url, screenshot_dirs, "attention")


def test_memory_tab_wraps_the_probe_between_words_and_explains_the_empty_plot(page, app_url, screenshot_dirs):
    page.get_by_role("tab", name="Memory").click()
    page.get_by_role("button", name="Run probe", exact=True).click()
    expect(page.locator("#memory-probe")).to_contain_text("pass key", timeout=RESULT_TIMEOUT_MS)
    field = page.locator("#memory-probe .textfield").first
    assert field.evaluate("element => getComputedStyle(element).wordBreak") == "normal"
    # The default distance (128) is past the 64-token window: the attention plot says why it has no bars.
    expect(page.get_by_text("beyond the 64-token window")).to_be_visible()
    finish(page, app_url, screenshot_dirs, "memory")
