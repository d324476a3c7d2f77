"""The chat page in headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium) against the real
server over the micro run: streaming with tokens/s, stop, regenerate, edit, history, file upload, token
alternatives on hover, the tokenizer tab, the completion playground and a phone-width layout. Screenshots go to
a pytest tmp dir, and to $CHATFORGE_SCREENSHOTS when it is set."""

import json
import os
import re
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from chatforge.runs import checkpoints

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
if not (shutil.which("chromium") and shutil.which("chromedriver")):
    pytest.skip("Debian's chromium and chromium-driver are not installed (make test-deps)", allow_module_level=True)

from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

WAIT = 60  # seconds: the tests share two cores with the rest of the suite


class Recorder:
    """ASGI wrapper around the app that keeps the JSON body of every chat request, to check what the page sent."""

    def __init__(self, app):
        self.app, self.chats = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        parts, more = [], True
        while more:
            message = await receive()
            parts.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(parts)
        self.chats.append(json.loads(body))
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@pytest.fixture(scope="module")
def server(micro_run):
    import uvicorn

    from chatforge.serve.app import ServeLimits, create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    limits = ServeLimits(max_upload=100_000)  # a small upload limit, to try it
    recorder = Recorder(create_app(micro_run, limits=limits))
    srv = uvicorn.Server(uvicorn.Config(recorder, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + WAIT
    while not srv.started:
        assert thread.is_alive() and time.time() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", recorder, limits
    srv.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> list[Path]:
    folders = [tmp_path_factory.mktemp("screenshots")]
    if os.environ.get("CHATFORGE_SCREENSHOTS"):
        folders.append(Path(os.environ["CHATFORGE_SCREENSHOTS"]))
    return folders


def shoot(driver, folders: list[Path], name: str) -> None:
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(folder / f"{name}.png"))


@pytest.fixture
def page(server, browser, shots, request, micro_run):
    """The chat page, fresh: no history, default settings, full network speed, desktop size, talking to the base
    model (the micro run's chat models can go straight into a tool call and show no text; the page's handling
    is the same). Saves a screenshot named after the test at the end."""
    url = server[0]
    browser.set_window_size(1280, 900)
    browser.execute_cdp_cmd("Network.enable", {})
    throttle(browser, 0)
    browser.get(f"{url}/health")  # the same origin without the page, so nothing writes its storage back
    browser.execute_script("localStorage.clear()")
    browser.get(url)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option[value]"))
    assert browser.find_element(By.ID, "model").get_attribute("value") == checkpoints(micro_run)[-1]
    browser.find_element(By.CSS_SELECTOR, "#model option[value='base']").click()
    yield browser
    shoot(browser, shots, request.node.name)


def throttle(driver, bytes_per_s: int) -> None:
    """Slow the page's downloads (0: unthrottled), so a reply streams for long enough to be watched and stopped."""
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "uploadThroughput": -1,
        "downloadThroughput": bytes_per_s if bytes_per_s else -1})


def wait(driver, condition, timeout: float = WAIT):
    """Until `condition(driver)`; a streaming reply is re-rendered often, so a stale element just means 'again'."""
    return WebDriverWait(driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=[StaleElementReferenceException]).until(condition)


def text(driver, selector: str) -> str:
    """The text of the first element matching `selector`, read in one step (the element may be replaced)."""
    return driver.execute_script("return document.querySelector(arguments[0])?.innerText ?? ''", selector)


def css(driver, selector: str) -> list:
    return driver.find_elements(By.CSS_SELECTOR, selector)


def send(driver, text: str) -> None:
    driver.find_element(By.ID, "input").send_keys(text)
    driver.find_element(By.ID, "send").click()


def finished(driver) -> bool:
    """The last reply is complete: its actions (Regenerate) are shown and the Send button is back."""
    return bool(css(driver, ".msg.assistant:last-child .actions")) and driver.find_element(By.ID, "send").is_displayed()


def test_reply_streams_with_tokens_per_second(page, server):
    throttle(page, 20_000)
    send(page, "Hello")
    # while it streams: some text, the Stop button, a live tokens/s figure
    wait(page, lambda d: d.find_element(By.ID, "stop").is_displayed() and css(d, ".msg.assistant .tok")
         and "tok/s" in text(d, ".msg.assistant .stats"))
    partial = text(page, ".msg.assistant .text")
    wait(page, finished)
    stats = text(page, ".msg.assistant .stats")
    assert re.search(r"[\d.]+ tok/s · \d+ ms to first token · \d+ tokens", stats), stats
    assert len(text(page, ".msg.assistant .text")) > len(partial)
    assert server[1].chats[-1]["messages"] == [{"role": "user", "content": "Hello"}]
    assert server[1].chats[-1]["stream"] and server[1].chats[-1]["logprobs"]


def test_stop_ends_the_reply_where_it_is(page):
    throttle(page, 2_000)  # a reply's chunks (tokens with their alternatives) arrive over many seconds
    send(page, "Tell me a long story")
    wait(page, lambda d: css(d, ".msg.assistant .tok"))
    page.find_element(By.ID, "stop").click()
    wait(page, finished)
    stats = text(page, ".msg.assistant .stats")
    assert stats.endswith("stopped"), stats
    shown = len(css(page, ".msg.assistant .tok"))
    time.sleep(0.5)  # nothing arrives after the stop
    assert len(css(page, ".msg.assistant .tok")) == shown

    for _ in range(4):  # Escape stops too; a reply the model ends within a few tokens may finish first: ask again
        send(page, "Another")
        wait(page, lambda d: css(d, ".msg.assistant:last-child .tok"))
        page.find_element(By.ID, "input").send_keys(Keys.ESCAPE)
        wait(page, finished)
        stats = text(page, ".msg.assistant:last-child .stats")
        if stats.endswith("stopped") or int(re.search(r"(\d+) tokens", stats)[1]) > 3:
            break
    assert stats.endswith("stopped"), stats


def test_regenerate_and_edit_resend(page, server):
    chats = server[1].chats
    send(page, "Hi")
    wait(page, finished)
    before = len(chats)
    page.find_element(By.XPATH, "//button[text()='Regenerate']").click()
    wait(page, lambda d: len(chats) > before and finished(d))
    assert chats[-1]["messages"] == chats[before - 1]["messages"]
    assert len(css(page, ".msg")) == 2

    user = page.find_element(By.CSS_SELECTOR, ".msg.user")
    ActionChains(page).move_to_element(user).perform()
    user.find_element(By.XPATH, ".//button[text()='Edit']").click()
    area = page.find_element(By.CSS_SELECTOR, "textarea.edit")
    area.clear()
    area.send_keys("Who are you?")
    page.find_element(By.XPATH, "//button[text()='Send']").click()
    wait(page, lambda d: len(chats) > before + 1 and finished(d))
    assert chats[-1]["messages"] == [{"role": "user", "content": "Who are you?"}]
    assert [m.text for m in css(page, ".msg.user .text")] == ["Who are you?"]
    assert len(css(page, ".msg")) == 2


def test_history_survives_a_reload_and_new_chat_starts_empty(page):
    send(page, "Remember me")
    wait(page, finished)
    page.refresh()
    wait(page, lambda d: css(d, ".msg.user"))
    assert page.find_element(By.CSS_SELECTOR, ".msg.user .text").text == "Remember me"
    assert css(page, ".msg.assistant .tok"), "the alternatives are kept with the reply"
    wait(page, lambda d: d.find_element(By.ID, "model").get_attribute("value") == "base", 10)  # settings kept too
    page.find_element(By.ID, "new-chat").click()
    assert not css(page, ".msg")
    page.find_element(By.XPATH, "//ul[@id='history']//button[text()='Remember me']").click()
    wait(page, lambda d: css(d, ".msg.user"))


def test_uploaded_file_goes_into_the_question(page, server, tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("The cat is Tom.")
    page.find_element(By.ID, "file").send_keys(str(note))
    wait(page, lambda d: "note.txt" in d.find_element(By.ID, "attachment").text)
    send(page, "Name?")
    wait(page, finished)
    assert server[1].chats[-1]["messages"][-1]["content"] == "File: note.txt\n\nThe cat is Tom.\n\nName?"
    bubble = page.find_element(By.CSS_SELECTOR, ".msg.user")
    assert "note.txt" in bubble.find_element(By.CSS_SELECTOR, "details.file summary").text
    assert bubble.find_element(By.CSS_SELECTOR, "details.file pre").get_attribute("textContent") == "The cat is Tom."
    assert page.find_element(By.ID, "attachment").get_attribute("hidden") is not None


def test_unsupported_file_is_refused_with_the_servers_reason(page, tmp_path):
    data = tmp_path / "image.png"
    data.write_bytes(b"\x89PNG\r\n")
    page.find_element(By.ID, "file").send_keys(str(data))
    wait(page, lambda d: "cannot read text" in d.find_element(By.ID, "attachment").text)


def test_file_over_the_limit_shows_the_limit(page, server, tmp_path):
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * (server[2].max_upload + 1))
    page.find_element(By.ID, "file").send_keys(str(big))
    wait(page, lambda d: f"the limit is {server[2].max_upload}" in d.find_element(By.ID, "attachment").text)


def test_thinking_and_tool_calls_fold_away(page):
    html = page.execute_script("""return renderMessage({role: "assistant", content: "4", reasoning: "add them",
        tools: [{name: "python", input: "2+2", output: "4"}], done: true}, 0).outerHTML""")
    assert '<details class="think"><summary>Thought</summary><div>add them</div></details>' in html
    assert '<details class="tool"><summary>python: 2+2</summary>' in html and ">4</pre>" in html


def test_search_toggle_follows_the_runs_tools(page, server):
    """Web search is offered where /v1/models says the model has it (the run has a search index)."""
    models = json.load(urllib.request.urlopen(f"{server[0]}/v1/models"))["data"]
    toggle = page.find_element(By.ID, "search")
    indexed = "search" in next(m for m in models if m["id"] == "base")["tools"]
    if not indexed:
        assert not toggle.is_enabled()
        assert "no search index" in toggle.find_element(By.XPATH, "..").get_attribute("title")
        # offer it anyway, to see the request and how the page shows the server's refusal
        page.execute_script("""const option = document.querySelector("#model option[value='base']");
            option.dataset.tools = "python search"; option.parentElement.dispatchEvent(new Event("change"));""")
    toggle.click()
    send(page, "Search for cats")
    wait(page, finished)
    assert server[1].chats[-1]["tools_enabled"] == ["python", "search"]
    if not indexed:
        assert "search" in text(page, ".msg.assistant .error")  # the server's reason, shown in the reply


def test_dropped_turns_are_announced(page, server):
    """A conversation longer than the context: the server drops the oldest turns and the reply says so."""
    long = {"role": "assistant", "text": "", "content": "word " * 400, "done": True}
    chat = {"id": "old", "title": "Long", "updated": 0,
            "messages": [{"role": "user", "text": "Talk a lot"}, long]}
    page.execute_script("localStorage.setItem('chatforge.chats', JSON.stringify([arguments[0]]))", chat)
    page.refresh()
    wait(page, lambda d: css(d, ".msg.assistant"))
    send(page, "And now?")
    wait(page, finished)
    assert len(server[1].chats[-1]["messages"]) == 3
    notice = page.find_element(By.CSS_SELECTOR, ".msg.assistant:last-child .notice").text
    assert re.match(r"2 earlier messages were left out to fit the model's \d+-token context", notice), notice


def test_hovering_a_token_shows_its_alternatives(page):
    send(page, "Hello")
    wait(page, finished)
    token = css(page, ".msg.assistant .tok")[1]
    ActionChains(page).move_to_element(token).perform()
    tip = page.find_element(By.ID, "tip")
    wait(page, lambda d: tip.is_displayed())
    assert re.search(r"sampled at (<)?[\d.]+%$", tip.find_element(By.CSS_SELECTOR, ".head").text)
    rows = tip.find_elements(By.CSS_SELECTOR, ".alt")
    assert len(rows) == 5  # the page asks for top_logprobs=5
    assert all(re.search(r"[\d.]+%$", row.find_element(By.CSS_SELECTOR, ".p").text) for row in rows)


def test_tokenizer_tab_colours_tokens_and_shows_ids(page, server):
    page.find_element(By.CSS_SELECTOR, ".tab[data-view='tokenize']").click()
    box = page.find_element(By.ID, "tok-input")
    box.clear()
    text = "Hello world, hello tokens!"
    box.send_keys(text)
    request = urllib.request.Request(f"{server[0]}/v1/tokenize", json.dumps({"text": text}).encode(),
                                     {"Content-Type": "application/json"})
    want = json.load(urllib.request.urlopen(request))
    wait(page, lambda d: d.find_element(By.ID, "tok-count").text.startswith(f"{want['count']} tokens"))
    pieces = css(page, "#tok-pieces .piece")
    assert "".join(p.get_attribute("textContent") for p in pieces) == text
    assert [int(i.text) for i in css(page, "#tok-ids .id")] == [t["id"] for t in want["tokens"]]
    colours = {p.value_of_css_property("background-color") for p in pieces}
    assert len(colours) > 1 and "rgba(0, 0, 0, 0)" not in colours


def test_completion_playground_continues_a_prompt(page):
    page.find_element(By.CSS_SELECTOR, ".tab[data-view='complete']").click()
    page.find_element(By.ID, "prompt").send_keys("Once upon a time")
    page.find_element(By.ID, "complete").click()
    wait(page, lambda d: d.find_element(By.ID, "complete").is_displayed() and css(d, "#completion .tok"))
    assert page.find_element(By.CSS_SELECTOR, "#completion .prompt").text == "Once upon a time"
    assert "ms to first token" in page.find_element(By.ID, "complete-stats").text


def test_markdown_escapes_html(page):
    html = page.execute_script("return markdown(arguments[0])",
                               "**bold** <img src=x onerror=alert(1)> `<b>`\n\n```\n<script>x</script>\n```")
    assert "<strong>bold</strong>" in html and "&lt;img src=x" in html and "<code>&lt;b&gt;</code>" in html
    assert "<script>" not in html and "<img" not in html


def test_phone_width(page, shots):
    page.set_window_size(390, 844)
    send(page, "Hi")
    wait(page, finished)
    shoot(page, shots, "phone_chat")
    width = page.execute_script("return window.innerWidth")
    assert page.execute_script("return document.documentElement.scrollWidth") <= width
    assert page.find_element(By.ID, "menu").is_displayed()
    top = page.find_element(By.CSS_SELECTOR, ".topbar").rect
    assert top["height"] < 60, "the top bar fits on one line"
    sidebar = page.find_element(By.ID, "sidebar")
    assert sidebar.rect["x"] + sidebar.rect["width"] <= 0, "the conversation list is off screen until asked for"
    page.find_element(By.ID, "menu").click()
    try:
        wait(page, lambda d: sidebar.rect["x"] >= 0, timeout=5)
    except TimeoutException:
        pytest.fail("the menu button does not open the conversation list")
    composer = page.find_element(By.ID, "composer").rect
    assert composer["x"] >= 0 and composer["x"] + composer["width"] <= width
