"""The web app in a real browser (headless Chromium) against the local stack: sign-in, streamed chat
with sources, documents cited in chat, browsing, searching and deleting memories, safe rendering of
hostile Markdown; with no console error, no CSP violation and no API call before a key is entered.

The test run writes docs/screenshots/chat.png and docs/screenshots/memories.png (the README's)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from pai_core.bootstrap import Container, get_container, set_container
from pai_core.config import REPO_ROOT
from pai_core.models import ChatMessage, Completion, TextDelta
from pai_local.stack import RunningStack
from pai_local.web import content_security_policy
from tests.integration.browser import chromium, find_browser
from tests.integration.support import ApiClient, RecordingChatModel

pytestmark = pytest.mark.integration

SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
WAIT_SECONDS = 60
API_PATHS = {"/memory", "/search", "/chat", "/documents", "/account", "/health"}
# Registered before any of the page's own scripts run (CDP), so a violation at load is caught too.
CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


class PacedChatModel:
    """The session's model, with a pause between the pieces of a streamed reply, so the page is seen
    to receive a reply piece by piece (scripted replies otherwise arrive at once)."""

    def __init__(self, inner: RecordingChatModel, pause_seconds: float) -> None:
        self._inner = inner
        self._pause = pause_seconds
        self.name = inner.name
        self.context_tokens = inner.context_tokens

    def count_tokens(self, text: str) -> int:
        return self._inner.count_tokens(text)

    def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Completion:
        return self._inner.complete(messages, max_tokens=max_tokens)

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Iterator[TextDelta | Completion]:
        for item in self._inner.stream(messages, max_tokens=max_tokens):
            if isinstance(item, TextDelta):
                time.sleep(self._pause)
            yield item


class GatewayRequests(logging.Handler):
    """The request lines the gateway logs ("GET /config.json HTTP/1.1"), as (method, path)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(record.args or ()) == 3:
            method, _, rest = str(record.args[1]).partition(" ")  # type: ignore[index]
            self.lines.append((method, urlsplit(rest.split(" ")[0]).path))


@pytest.fixture(scope="module")
def browser_binaries() -> tuple[str, str]:
    found = find_browser()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture(scope="module")
def web_user(stack: RunningStack, chat_model: RecordingChatModel) -> Iterator[ApiClient]:
    """A user of its own (so the pages show only what these tests stored), served by the session's
    composition root with the paced model."""
    owner = f"web-{os.getpid()}"
    container = Container(
        replace(stack.settings, owner=owner), chat_model=PacedChatModel(chat_model, pause_seconds=0.08)
    )
    container.embedder = stack.container.embedder
    before = get_container()
    set_container(container)
    try:
        key = container.api_keys.issue(owner, "web app tests").key
        yield ApiClient(stack.gateway_url, api_key=key)
    finally:
        set_container(before)


@pytest.fixture(scope="module")
def requests_seen() -> Iterator[GatewayRequests]:
    logger = logging.getLogger("pai_local.gateway")
    handler = GatewayRequests()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="module")
def browser(browser_binaries: tuple[str, str], requests_seen: GatewayRequests) -> Iterator[WebDriver]:
    with chromium(*browser_binaries) as driver:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_WATCH})
        yield driver


@pytest.fixture
def page(browser: WebDriver) -> Iterator[WebDriver]:
    """The browser; after the test, the page must have logged no error and broken no CSP rule."""
    browser.get_log("browser")  # what earlier tests left
    yield browser
    assert_page_clean(browser)


# -- helpers -----------------------------------------------------------------------------------------


def wait(driver: WebDriver, condition: Any, message: str = "") -> Any:
    try:
        return WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.1).until(condition)
    except TimeoutException:
        pytest.fail(f"timed out waiting: {message}\nconsole: {driver.get_log('browser')}")


def by_testid(driver: WebDriver | WebElement, testid: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def visible(driver: WebDriver, css: str) -> WebElement | None:
    found = [element for element in driver.find_elements(By.CSS_SELECTOR, css) if element.is_displayed()]
    return found[0] if found else None


def assert_page_clean(driver: WebDriver) -> None:
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    violations = driver.execute_script("return window.__cspViolations || []")
    assert errors == [], errors
    assert violations == [], violations


def open_app(driver: WebDriver, stack: RunningStack, view: str = "chat") -> None:
    driver.get("about:blank")  # a load of its own, even where only the #view would change
    driver.get(f"{stack.gateway_url}/#{view}")
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "body[data-ready]"), "the app to start")


def sign_in(driver: WebDriver, key: str) -> None:
    field = by_testid(driver, "api-key-input")[0]
    field.clear()
    field.send_keys(key)
    by_testid(driver, "api-key-save")[0].click()


def signed_in(driver: WebDriver, stack: RunningStack, user: ApiClient, view: str = "chat") -> None:
    open_app(driver, stack, view)
    if visible(driver, '[data-testid="api-key-input"]'):
        assert user.api_key is not None
        sign_in(driver, user.api_key)
    wait(driver, lambda d: visible(d, "#nav"), "the signed-in app")


def assistant_replies(driver: WebDriver) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, '[data-testid="chat-message"][data-role="assistant"]')


def send(driver: WebDriver, message: str) -> WebElement:
    """Types `message` and presses Enter; the assistant's reply once it is complete."""
    before = len(assistant_replies(driver))
    box = by_testid(driver, "chat-input")[0]
    box.send_keys(message)
    box.send_keys(Keys.ENTER)
    wait(driver, lambda d: len(assistant_replies(d)) > before, "a reply to start")
    reply = assistant_replies(driver)[-1]
    wait(driver, lambda d: reply.get_attribute("data-state") in ("done", "error"), "the reply to finish")
    assert reply.get_attribute("data-state") == "done", reply.text
    return reply


def store(user: ApiClient, content: str, category: str = "general") -> dict[str, Any]:
    stored = user.post("/memory", {"action": "store", "content": content, "category": category})
    assert stored.status == 201, stored
    return dict(stored.json)


def screenshot(driver: WebDriver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(1280, 860)
    assert driver.save_screenshot(str(SCREENSHOTS / name))


def api_requests(lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(method, path) for method, path in lines if path in API_PATHS or method not in ("GET", "HEAD")]


# -- tests -------------------------------------------------------------------------------------------


def test_the_page_is_served_with_its_policy(stack: RunningStack) -> None:
    answer = ApiClient(stack.gateway_url).get("/")
    assert answer.status == 200
    # Streamed chat goes to the stack's Function URL, the one other origin the page may call.
    assert stack.stream_url is not None
    assert answer.headers["content-security-policy"] == content_security_policy([stack.stream_url])
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    config = ApiClient(stack.gateway_url).get("/config.json").json
    assert config == {"apiUrl": "", "chatStreamUrl": stack.stream_url}


def test_no_api_call_before_a_key_is_entered(
    page: WebDriver, stack: RunningStack, web_user: ApiClient, requests_seen: GatewayRequests
) -> None:
    requests_seen.lines.clear()
    open_app(page, stack)
    assert visible(page, '[data-testid="api-key-input"]') is not None
    assert visible(page, '[data-testid="chat-input"]') is None
    wait(page, lambda d: ("GET", "/config.json") in requests_seen.lines, "config.json in the gateway's log")
    time.sleep(0.5)  # room for a request the page should not make
    assert api_requests(requests_seen.lines) == [], requests_seen.lines
    modules = ("api.js", "chat.js", "documents.js", "dom.js", "markdown.js", "memories.js", "paged.js")
    page_files = {"/", "/app.js", "/app.css", "/config.json", "/favicon.svg"} | {f"/js/{name}" for name in modules}
    assert {path for _, path in requests_seen.lines} <= page_files
    # The key is kept for this tab only unless "remember" is ticked.
    assert web_user.api_key is not None
    sign_in(page, web_user.api_key)
    wait(page, lambda d: visible(d, '[data-testid="chat-input"]'), "the chat after sign-in")
    assert ("POST", "/memory") in api_requests(requests_seen.lines)
    stored = page.execute_script("return [sessionStorage.getItem('pai.apiKey'), localStorage.getItem('pai.apiKey')]")
    assert stored == [web_user.api_key, None]


def test_a_wrong_key_is_refused_and_sign_out_forgets_the_key(
    browser: WebDriver, stack: RunningStack, web_user: ApiClient
) -> None:
    signed_in(browser, stack, web_user)
    browser.find_element(By.ID, "sign-out").click()
    wait(browser, lambda d: visible(d, '[data-testid="api-key-input"]'), "the sign-in form")
    assert browser.execute_script("return [sessionStorage.length, localStorage.length]") == [0, 0]
    browser.get_log("browser")
    sign_in(browser, "pai_not_a_key")
    wait(browser, lambda d: "not accepted" in d.find_element(By.ID, "signin-error").text, "the refusal")
    assert visible(browser, '[data-testid="chat-input"]') is None
    # The one console error is Chromium's note of the 401 itself.
    errors = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert all("401" in message for message in errors), errors
    # Remembered on this device: the key is in localStorage, and survives a reload.
    browser.find_element(By.ID, "remember").click()
    assert web_user.api_key is not None
    sign_in(browser, web_user.api_key)
    wait(browser, lambda d: visible(d, '[data-testid="chat-input"]'), "the chat after sign-in")
    assert browser.execute_script(
        "return [sessionStorage.getItem('pai.apiKey'), localStorage.getItem('pai.apiKey')]"
    ) == [
        None,
        web_user.api_key,
    ]
    open_app(browser, stack)
    assert visible(browser, '[data-testid="chat-input"]') is not None
    browser.find_element(By.ID, "sign-out").click()
    assert browser.execute_script("return localStorage.length") == 0


def test_chat_streams_the_reply_with_its_sources_and_continues_the_session(
    page: WebDriver, stack: RunningStack, web_user: ApiClient, chat_model: RecordingChatModel
) -> None:
    store(web_user, "My cat Miso likes tuna and naps in the sun.", "pets")
    signed_in(page, stack, web_user)
    page.find_element(By.ID, "chat-new").click()
    # Every state of the reply's text as the page shows it, from first piece to last.
    page.execute_script(
        """
        window.__lengths = [];
        new MutationObserver(() => {
          const replies = document.querySelectorAll('[data-role="assistant"] .body');
          if (replies.length) window.__lengths.push(replies[replies.length - 1].textContent.length);
        }).observe(document.getElementById('chat-log'), {childList: true, subtree: true, characterData: true});
        """
    )
    reply_text = "Miso likes **tuna** and naps in the sun, as you told me. Cats like warm spots."
    box = by_testid(page, "chat-input")[0]
    box.send_keys("What does my cat like?")
    box.send_keys(Keys.SHIFT, Keys.ENTER)  # a new line, not a send
    box.send_keys("Tell me briefly.")
    assert box.get_attribute("value") == "What does my cat like?\nTell me briefly."
    assert by_testid(page, "chat-message") == []
    with chat_model.answering(reply_text):
        reply = send(page, "")
    messages = by_testid(page, "chat-message")
    assert [m.get_attribute("data-role") for m in messages] == ["user", "assistant"]
    assert messages[0].find_element(By.CSS_SELECTOR, ".body").text == "What does my cat like?\nTell me briefly."
    body = reply.find_element(By.CSS_SELECTOR, ".body")
    assert body.text == "Miso likes tuna and naps in the sun, as you told me. Cats like warm spots."
    assert body.find_element(By.TAG_NAME, "strong").text == "tuna"
    lengths = [n for n in page.execute_script("return window.__lengths") if n > 0]
    assert len(set(lengths)) >= 4, lengths  # the reply grew piece by piece
    assert lengths == sorted(lengths)
    sources = by_testid(reply, "source")
    assert [s.get_attribute("data-kind") for s in sources].count("memory") >= 1
    memory_source = next(s for s in sources if s.get_attribute("data-kind") == "memory")
    memory_source.find_element(By.TAG_NAME, "summary").click()
    wait(page, lambda d: "Miso likes tuna" in memory_source.text, "the cited memory's text")

    # The same session goes on: the model is given the first turn with the second.
    with chat_model.answering("Yes, tuna."):
        send(page, "Does she like fish?")
    prompt = "\n".join(message.content for message in chat_model.last_prompt)
    assert "What does my cat like?" in prompt
    assert len(by_testid(page, "chat-message")) == 4

    # A new chat starts from nothing.
    page.find_element(By.ID, "chat-new").click()
    assert by_testid(page, "chat-message") == []
    with chat_model.answering("Hello."):
        send(page, "Hello there")
    prompt = "\n".join(message.content for message in chat_model.last_prompt)
    assert "Does she like fish?" not in prompt


def test_an_uploaded_document_is_cited_in_chat(
    page: WebDriver, stack: RunningStack, web_user: ApiClient, chat_model: RecordingChatModel, tmp_path: Path
) -> None:
    notes = tmp_path / "lighthouse-notes.md"
    notes.write_text(
        "# The lighthouse\n\nThe lighthouse keeper's boat is called Marigold. It is painted green and moored "
        "at the north jetty.\n",
        encoding="utf-8",
    )
    signed_in(page, stack, web_user, "documents")
    by_testid(page, "document-upload")[0].send_keys(str(notes))
    wait(
        page,
        lambda d: any("lighthouse-notes.md" in item.text for item in by_testid(d, "document-item")),
        "the uploaded document in the list",
    )
    upload = page.find_element(By.CSS_SELECTOR, "#upload-list li")
    assert "done" in (upload.get_attribute("class") or "")
    assert upload.find_element(By.TAG_NAME, "progress").get_attribute("value") == "1"
    listed = web_user.post("/documents", {"action": "list"}).json["items"]
    assert [item["name"] for item in listed] == ["lighthouse-notes.md"]

    page.find_element(By.CSS_SELECTOR, 'a[href="#chat"]').click()
    page.find_element(By.ID, "chat-new").click()
    with chat_model.answering("The keeper's boat is called **Marigold**; it is painted green."):
        reply = send(page, "What is the lighthouse keeper's boat called?")
    sources = by_testid(reply, "source")
    documents = [s for s in sources if s.get_attribute("data-kind") == "document"]
    assert documents, [s.text for s in sources]
    assert "lighthouse-notes.md" in documents[0].text
    screenshot(page, "chat.png")

    # A file dropped on the drop zone goes up the same way; a document deleted is gone.
    page.find_element(By.CSS_SELECTOR, 'a[href="#documents"]').click()
    page.execute_script(
        """
        const files = new DataTransfer();
        files.items.add(new File(['The garden gate code is 4512.'], 'dropped.txt', {type: 'text/plain'}));
        const zone = document.getElementById('drop-zone');
        for (const type of ['dragenter', 'dragover', 'drop']) {
          zone.dispatchEvent(new DragEvent(type, {dataTransfer: files, bubbles: true, cancelable: true}));
        }
        """
    )
    wait(
        page,
        lambda d: any("dropped.txt" in item.text for item in by_testid(d, "document-item")),
        "the dropped document in the list",
    )
    for item in by_testid(page, "document-item"):
        delete = item.find_element(By.CSS_SELECTOR, "button.danger")
        delete.click()
        delete.click()
    wait(page, lambda d: by_testid(d, "document-item") == [], "the documents to go")
    assert web_user.post("/documents", {"action": "list"}).json["items"] == []


def test_memories_browse_filter_page_search_history_and_delete(
    page: WebDriver, stack: RunningStack, web_user: ApiClient
) -> None:
    filler = [
        {"content": f"Reading list item {n}: a book about lighthouses.", "category": "reading"} for n in range(21)
    ]
    assert web_user.post("/memory", {"action": "store_many", "items": filler}).status == 201
    doomed = store(web_user, "The spare key is under the blue flowerpot.", "home")
    store(web_user, "Dentist appointment on **Tuesday at 9:30**; bring the insurance card.", "plans")
    store(web_user, "Ana's birthday is on 14 March. She likes:\n\n- orchids\n- dark chocolate", "people")
    changed = store(web_user, "I run 5 km on Saturdays.", "health")
    updated = web_user.post(
        "/memory", {"action": "update", "id": changed["id"], "content": "I run 10 km on Saturdays and Wednesdays."}
    )
    assert updated.status == 200, updated

    signed_in(page, stack, web_user, "memories")
    wait(page, lambda d: len(by_testid(d, "memory-item")) == 20, "the first page of memories")
    newest = web_user.post("/memory", {"action": "list", "limit": 20}).json["items"]
    shown = [item.get_attribute("data-id") for item in by_testid(page, "memory-item")]
    assert shown == [memory["id"] for memory in newest]  # newest first, as the API lists them
    more = page.find_element(By.ID, "memory-more")
    more.click()
    total = len(web_user.post("/memory", {"action": "list", "limit": 100}).json["items"])
    wait(page, lambda d: len(by_testid(d, "memory-item")) == total, "the second page")
    assert not more.is_displayed()

    # A learned or updated memory shows its history, oldest version first.
    item = page.find_element(By.CSS_SELECTOR, f'[data-testid="memory-item"][data-id="{changed["id"]}"]')
    item.find_element(By.XPATH, ".//button[text()='History']").click()
    wait(page, lambda d: len(item.find_elements(By.CSS_SELECTOR, ".version")) == 2, "two versions")
    versions = [v.text for v in item.find_elements(By.CSS_SELECTOR, ".version")]
    assert "5 km" in versions[0]
    assert "10 km" in versions[1]
    page.execute_script("document.getElementById('main').scrollTop = 0; window.scrollTo(0, 0)")
    screenshot(page, "memories.png")

    # By category.
    category = page.find_element(By.ID, "memory-category")
    category.send_keys("people", Keys.ENTER)
    wait(page, lambda d: len(by_testid(d, "memory-item")) == 1, "the category's one memory")
    assert "Ana's birthday" in by_testid(page, "memory-item")[0].text
    page.find_element(By.ID, "memory-clear").click()

    # Search.
    query = page.find_element(By.ID, "memory-query")
    query.send_keys("where is the spare key", Keys.ENTER)
    wait(page, lambda d: "found" in d.find_element(By.ID, "memory-status").text, "search results")
    found = by_testid(page, "memory-item")
    # The cards' text (with their relevance) says whether a miss was ranking or fetching.
    assert found[0].get_attribute("data-id") == doomed["id"], [card.text for card in found[:3]]
    first = found[0]

    # Delete: pressed twice (the second press confirms).
    delete = first.find_element(By.CSS_SELECTOR, "button.danger")
    delete.click()
    assert delete.text == "Really delete?"
    delete.click()
    wait(
        page,
        lambda d: doomed["id"] not in [i.get_attribute("data-id") for i in by_testid(d, "memory-item")],
        "the memory to go",
    )
    assert web_user.post("/memory", {"action": "retrieve", "id": doomed["id"]}).status == 404


HOSTILE = """# Notes <img src=x onerror="window.__pwned='img'">

<script>window.__pwned = 'script'</script>
<iframe src="https://example.invalid/frame"></iframe>

[click me](javascript:window.__pwned='link') and [data](data:text/html,<script>alert(1)</script>)
and [spaced](java\tscript:alert(1)) and <javascript:alert(1)>

![tracker](https://example.invalid/pixel.png) ![local](x.png)

**bold <b onmouseover=alert(1)>hover</b>** `<svg onload=alert(1)>` [ok](https://example.com/ok "a title")

<a href="javascript:alert(1)">raw link</a> <style>body{display:none}</style>
"""

ELEMENTS_ALLOWED = {
    "P", "BR", "EM", "STRONG", "DEL", "CODE", "PRE", "H3", "H4", "H5", "H6", "UL", "OL", "LI", "BLOCKQUOTE", "HR", "A",
}  # fmt: skip


def rendered(element: WebElement) -> dict[str, Any]:
    return dict(
        element.parent.execute_script(
            """
            const root = arguments[0];
            const nodes = [...root.querySelectorAll('*')];
            return {
              tags: [...new Set(nodes.map((n) => n.tagName))],
              handlers: nodes.flatMap((n) => [...n.attributes].map((a) => a.name)).filter((n) => n.startsWith('on')),
              hrefs: [...root.querySelectorAll('a')].map((a) => a.getAttribute('href')),
              rels: [...root.querySelectorAll('a')].map((a) => a.rel + ' ' + a.target),
              text: root.textContent,
            };
            """,
            element,
        )
    )


def assert_harmless(driver: WebDriver, element: WebElement) -> None:
    found = rendered(element)
    assert set(found["tags"]) <= ELEMENTS_ALLOWED, found["tags"]
    assert found["handlers"] == []
    # Plain http(s) links stay links (not followed); the image is one of them.
    assert found["hrefs"] == [
        "https://example.invalid/frame",
        "https://example.invalid/pixel.png",
        "https://example.com/ok",
    ], found["hrefs"]
    assert set(found["rels"]) == {"noopener noreferrer nofollow _blank"}
    # What was HTML shows as text.
    assert "<script>window.__pwned = 'script'</script>" in found["text"]
    assert "Image: tracker" in found["text"]
    assert driver.execute_script("return window.__pwned === undefined")
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert not [url for url in fetched if "example.invalid" in url or "x.png" in url], fetched


def test_hostile_markdown_from_a_memory_or_the_model_stays_text(
    page: WebDriver, stack: RunningStack, web_user: ApiClient, chat_model: RecordingChatModel
) -> None:
    hostile = store(web_user, HOSTILE, "hostile")
    signed_in(page, stack, web_user, "memories")
    item_css = f'[data-testid="memory-item"][data-id="{hostile["id"]}"] .markdown'
    item = wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, item_css), "the hostile memory")[0]
    assert_harmless(page, item)

    page.find_element(By.CSS_SELECTOR, 'a[href="#chat"]').click()
    page.find_element(By.ID, "chat-new").click()
    with chat_model.answering(HOSTILE):
        reply = send(page, "Repeat my notes.")
    assert_harmless(page, reply.find_element(By.CSS_SELECTOR, ".body"))


def test_markdown_renders_as_the_elements_it_names(page: WebDriver, stack: RunningStack) -> None:
    open_app(page, stack)
    cases = {
        "*em* and **strong** and ~~gone~~ and `a <b> c`": (
            "<p><em>em</em> and <strong>strong</strong> and <del>gone</del> and <code>a &lt;b&gt; c</code></p>"
        ),
        "# Title\n\ntext": "<h3>Title</h3><p>text</p>",
        "- a\n- b\n  - c\n\n1. one\n2. two": (
            "<ul><li>a</li><li>b<ul><li>c</li></ul></li></ul><ol><li>one</li><li>two</li></ol>"
        ),
        "```\n<script>x()</script>\n```": "<pre><code>&lt;script&gt;x()&lt;/script&gt;</code></pre>",
        "> quoted\n\n---": "<blockquote><p>quoted</p></blockquote><hr>",
        "snake_case_name and 2 * 3 * 4": "<p>snake_case_name and 2 * 3 * 4</p>",
        "see https://example.com/a_(b). and mail <mailto:me@example.com>": (
            '<p>see <a href="https://example.com/a_(b)" rel="noopener noreferrer nofollow" target="_blank" '
            'referrerpolicy="no-referrer">https://example.com/a_(b)</a>. and mail '
            '<a href="mailto:me@example.com" rel="noopener noreferrer nofollow" target="_blank" '
            'referrerpolicy="no-referrer">mailto:me@example.com</a></p>'
        ),
        "[x](javascript:alert(1)) [y](/relative)": "<p>x y</p>",
        "line one\nline two": "<p>line one<br>line two</p>",
        "\\*not em\\*": "<p>*not em*</p>",
    }
    results = page.execute_async_script(
        """
        const [cases, done] = arguments;
        import('./js/markdown.js').then(({renderMarkdown}) => {
          const out = {};
          for (const text of cases) {
            const box = document.createElement('div');
            box.append(renderMarkdown(text));
            out[text] = box.innerHTML;
          }
          // A long text full of delimiters renders (each scan is linear or bounded).
          out.__long = renderMarkdown('*_`[<'.repeat(20000)).textContent.length > 0;
          done(out);
        });
        """,
        list(cases),
    )
    assert results.pop("__long") is True
    assert results == cases


def test_the_app_fits_a_phone_screen(page: WebDriver, stack: RunningStack, web_user: ApiClient) -> None:
    signed_in(page, stack, web_user)
    try:
        page.set_window_size(390, 844)
        for view in ("chat", "memories", "documents"):
            page.find_element(By.CSS_SELECTOR, f'a[href="#{view}"]').click()
            overflow = page.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (view, overflow)
        assert by_testid(page, "document-upload")[0].is_displayed()
    finally:
        page.set_window_size(1280, 860)


def test_the_policy_is_enforced_not_only_sent(browser: WebDriver, stack: RunningStack) -> None:
    """A control for the checks above: an inline script is refused, and the refusal is seen."""
    open_app(browser, stack)
    browser.get_log("browser")
    ran = browser.execute_script(
        """
        const script = document.createElement('script');
        script.textContent = 'window.__inline = 1';
        document.body.append(script);
        return window.__inline === 1;
        """
    )
    assert ran is False
    wait(browser, lambda d: d.execute_script("return window.__cspViolations.length") > 0, "the violation event")
    assert "script-src" in browser.execute_script("return window.__cspViolations[0]")
    logged = json.dumps(browser.get_log("browser"))
    assert "Content Security Policy" in logged
