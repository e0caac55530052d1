"""The dashboard in a real browser: headless Chromium (Debian's, driven by Playwright)
against a real `fnrun run`, as a person uses it (SPEC 11).

One browser and one supervisor serve the module; each test takes a fresh page and
fails on any JavaScript error. Every screen is saved as a PNG under
`$FNRUN_ARTIFACTS` (default `.artifacts/screens/`) for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import _service_missing
from tests.e2e.harness import Project, free_port, wait_until
from tests.services import redis_url

pytestmark = pytest.mark.timeout(120)

CHROMIUM = os.environ.get("FNRUN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
SCREENS = Path(os.environ.get("FNRUN_ARTIFACTS") or Path(__file__).parents[2] / ".artifacts"
               ) / "screens"
TOKEN = "dash-test-token-0123456789"
WAIT_MS = 20_000

YAML = """
functions:
  greet:
    handler: dash.py:greet
    triggers:
      - event: greet.requested
  pay:
    handler: dash.py:pay
    retry: {max_attempts: 1}
    triggers:
      - event: pay.requested
  nightly:
    handler: dash.py:nightly
    triggers:
      - schedule: {cron: "0 3 * * *"}
"""

CODE = """
import os

FIXED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixed")

def greet(event, ctx):
    record(event, ctx)
    ctx.log.info("hello %s", event.data["name"])
    print("printed for", event.data["name"])
    ctx.emit("greet.sent", {"to": event.data["name"]})
    return {"greeting": "hello " + event.data["name"]}

def pay(event, ctx):
    record(event, ctx)
    if event.data.get("card") == "bad" and not os.path.exists(FIXED):
        raise RuntimeError("card declined")
    return {"paid": event.data.get("card")}

def nightly(event, ctx):
    record(event, ctx)
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists():
        _service_missing(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


BROKERS = """
brokers:
  legacy: {{url: "{url}"}}
sources:
  orders: {{broker: legacy, stream: {stream}-in, type: order.imported}}
sinks:
  greetings: {{broker: legacy, stream: {stream}-out, events: greet.sent}}
"""
BROKER_DB = 9
"""The Redis database of the Redis Streams broker (its streams are named per run)."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    client = redis.Redis.from_url(redis_url(BROKER_DB))
    try:
        client.ping()
    except redis.ConnectionError:
        _service_missing(f"Redis is not running at {redis_url(BROKER_DB)}")
    stream = f"fnrun-dash-{uuid.uuid4().hex[:8]}"
    project = Project(tmp_path_factory.mktemp("dashboard") / "proj")
    project.functions.mkdir(parents=True)
    project.write("fnrun.yaml", BROKERS.format(url=redis_url(BROKER_DB), stream=stream))
    project.add("dash", YAML, CODE)
    project.start()
    yield project
    project.close()
    client.delete(f"{stream}-in", f"{stream}-out")
    client.close()


class Page:
    """A fresh page of its own context that collects JavaScript errors."""

    def __init__(self, browser: Any, base: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.base = base
        self.errors: list[str] = []
        """JavaScript errors, and every answer of 400 or more the page got."""
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        # The browser logs each failed load on the console too: those are in `errors`
        # with their URL, from `response`.
        self.page.on("console", lambda msg: msg.type == "error" and not msg.text.startswith(
            "Failed to load resource") and self.errors.append(f"console: {msg.text}"))
        self.page.on("response", lambda r: r.status >= 400 and self.errors.append(
            f"{r.status} {r.request.method} {r.url}"))

    def open(self, path: str = "/_/ui") -> Any:
        self.page.goto(self.base + path)
        return self.page

    def shot(self, name: str) -> None:
        SCREENS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def ui(browser: Any, served: Project) -> Iterator[Page]:
    page = Page(browser, served.url(""))
    yield page
    page.close()
    assert page.errors == []


def headers_of(page: Any, table: str) -> list[str]:
    return [t.strip().lower() for t in page.locator(f"{table} thead th").all_inner_texts()]


def test_the_functions_page_lists_each_function_with_its_triggers(ui: Page) -> None:
    page = ui.open()
    page.get_by_role("link", name="Functions", exact=True).click()
    rows = page.locator("#functions tbody tr")
    rows.first.wait_for()
    assert headers_of(page, "#functions") == [
        "function", "triggers", "pending", "running", "dead", "workers"]
    names = [r.get_attribute("data-function") for r in rows.all()]
    assert names == ["greet", "nightly", "pay"]
    nightly = page.locator('tr[data-function="nightly"]').inner_text()
    assert re.search(r"schedule 0 3 \* \* \*, next \d{4}-\d\d-\d\dT03:00", nightly), nightly
    assert "event greet.requested" in page.locator('tr[data-function="greet"]').inner_text()
    assert headers_of(page, "#brokers") == ["broker", "kind", "url", "state", "since", "error"]
    wait_until(lambda: page.reload() or page.locator("#brokers .state.up").count() == 1,
               interval=0.3)
    assert page.locator('#sources tr[data-name="orders"]').inner_text().split("\t")[:4] == [
        "orders", "legacy", "order.imported", "running"]
    assert headers_of(page, "#sinks")[:3] == ["sink", "broker", "events"]
    assert "greet.sent" in page.locator('#sinks tr[data-name="greetings"]').inner_text()
    ui.shot("functions")


def test_a_sent_event_runs_and_appears_live_then_its_page_shows_everything(ui: Page) -> None:
    page = ui.open("/_/ui#/runs")
    page.locator("#runs").wait_for()
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    page.get_by_label("Type", exact=True).fill("greet.requested")
    page.get_by_label("Data", exact=True).fill("{oops")
    page.get_by_role("button", name="Send event").click()
    page.get_by_text("Data is not JSON").wait_for()
    page.get_by_label("Data", exact=True).fill('{"name": "Ada"}')
    page.get_by_role("button", name="Send event").click()
    sent = page.get_by_text(re.compile(r"Sent event \S+ \(reaches 1 function\)"))
    event_id = re.search(r"Sent event (\S+) ", sent.inner_text())[1]  # type: ignore[index]
    row = page.locator("#runs tbody tr", has_text=event_id).filter(has_text="greet.requested")
    row.wait_for()
    assert page.evaluate("window.sameDocument") is True
    options = page.locator("#filters select[name=function] option").all_inner_texts()
    assert options == ["any", "greet", "greetings", "nightly", "pay"]  # a sink has runs too
    assert "ok" in row.inner_text()
    assert re.search(r"\d+(\.\d)? ms", row.inner_text())
    assert headers_of(page, "#runs") == ["run", "started", "function", "event type",
                                         "event id", "attempt", "outcome", "duration"]
    ui.shot("runs")

    row.get_by_role("link").first.click()
    page.get_by_role("heading", name="Payload").wait_for()
    assert '"name": "Ada"' in page.locator("h2:has-text('Payload') + pre").inner_text()
    assert '"greeting": "hello Ada"' in page.locator("h2:has-text('Return value') + pre"
                                                    ).inner_text()
    assert page.locator("#emitted a").count() == 1
    assert headers_of(page, "#attempts")[0] == "attempt"
    logs = page.locator("#logs")
    assert headers_of(page, "#logs") == ["time", "stream", "level", "text"]
    assert "log\tinfo\thello Ada" in logs.inner_text()
    assert "stdout\t\tprinted for Ada" in logs.inner_text()
    trace = page.locator("#trace")
    assert trace.get_by_text("greet.requested").count() == 1
    assert trace.get_by_text("greet.sent").count() == 1  # emitted, under greet's attempt
    ui.shot("run")

    page.locator("#emitted a").click()
    page.get_by_role("heading", name=re.compile("Trace of")).wait_for()
    page.locator("#trace").wait_for()
    assert page.locator("#trace").get_by_text("greet.sent").count() == 1
    page.locator("#parent").get_by_role("link", name=event_id).wait_for()
    ui.shot("trace")



def test_dead_letters_replay_as_they_were_or_with_an_edited_payload(
    ui: Page, served: Project
) -> None:
    bad = served.publish([{"type": "pay.requested", "data": {"card": "bad", "n": n}}
                          for n in (1, 2)])
    wait_until(lambda: len(httpx.get(served.url("/_/dead-letters")).json()) == 2)
    page = ui.open("/_/ui#/dead-letters")
    table = page.locator("#dead-letters")
    table.wait_for()
    assert headers_of(page, "#dead-letters") == ["function", "event type", "event id", "attempts",
                                                 "failed", "error", "actions"]
    assert "card declined" in table.inner_text()
    ui.shot("dead-letters")

    first = page.locator("tr[data-letter]", has_text=bad[0])
    first.get_by_role("button", name="Edit and replay").click()
    editor = page.locator("tr.editor:visible")
    editor.get_by_label("Data").fill('{"card": "good", "n": 1}')
    ui.shot("dead-letters-edit")
    editor.get_by_role("button", name="Replay with this data").click()
    page.get_by_text(f"Replayed pay.requested {bad[0]} to pay with the edited data").wait_for()
    assert page.locator("tr[data-letter]").count() == 1

    (served.root / "fixed").touch()  # the bug is fixed: a plain Replay now succeeds
    second = page.locator("tr[data-letter]", has_text=bad[1])
    second.get_by_role("button", name="Replay", exact=True).click()
    page.get_by_text(f"Replayed pay.requested {bad[1]} to pay.").wait_for()
    assert page.locator("tr[data-letter]").count() == 0

    page.get_by_role("link", name="See the runs of pay").click()
    wait_until(lambda: page.locator("#runs .outcome.ok").count() == 2, timeout=20)
    ui.shot("runs-after-replay")  # the Runs list, before a failed run is opened
    failed = page.locator("#runs tbody tr", has_text=bad[1]).filter(has=page.locator(
        ".outcome.error"))
    failed.get_by_role("link").first.click()
    page.get_by_role("heading", name="Error", exact=True).wait_for()
    error = page.locator("h2:has-text('Error') ~ pre").all_inner_texts()
    assert error[0] == "RuntimeError: card declined"
    assert "Traceback (most recent call last)" in error[1] and "in pay" in error[1]
    ui.shot("run-failed")
    replayed = served.calls()
    assert [c["attempt"] for c in replayed if c["id"] == bad[1]] == [1, 1]  # a fresh attempt
    assert httpx.get(served.url("/_/dead-letters")).json() == []


class _Attacker(BaseHTTPRequestHandler):
    """Serves a page from another origin (another port of the same host: the same site)
    that tries every way a page can POST to the dashboard."""

    page = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args: Any) -> None:
        pass


ATTACK = """<!doctype html><body><iframe name="sink"></iframe>
<form id="f" method="post" target="sink" action="{base}/_/ui/api/events" enctype="text/plain">
<input name='{{"type":"evil.form","data":1,"x":"' value='"}}'></form>
<script>
const base = "{base}";
const body = JSON.stringify({{type: "evil.sent", data: {{}}}});
const tries = [
  fetch(base + "/_/ui/api/events", {{method: "POST", mode: "no-cors", body}}),
  fetch(base + "/_/ui/api/dead-letters/x/replay",
        {{method: "POST", mode: "no-cors", body: "{{}}"}}),
  fetch(base + "/_/ui/api/events", {{method: "POST", body,
    headers: {{"content-type": "application/json", "x-fnrun-csrf": "guess"}}}}),
  fetch(base + "/_/events", {{method: "POST", mode: "no-cors", body: JSON.stringify(
    {{specversion: "1.0", id: "evil", source: "evil", type: "evil.sent"}})}}),
];
document.getElementById("f").submit();
Promise.allSettled(tries).then((r) => {{ window.outcomes = r.map((x) => x.status); }});
</script></body>"""


def test_a_page_from_another_origin_cannot_post(browser: Any, served: Project) -> None:
    _Attacker.page = ATTACK.format(base=served.url("")).encode()
    attacker = ThreadingHTTPServer(("127.0.0.1", free_port()), _Attacker)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    page = Page(browser, f"http://127.0.0.1:{attacker.server_address[1]}")
    answers: list[tuple[str, str, int]] = []
    page.page.on("response", lambda r: answers.append((r.request.method, r.url, r.status)))
    try:
        page.open("/").wait_for_function("window.outcomes !== undefined")
        wait_until(lambda: sum(1 for a in answers if a[0] == "POST") >= 4, timeout=20)
        posts = sorted((url.removeprefix(served.url("")), status)
                       for method, url, status in answers if method == "POST")
        # A page can send only text/plain, form or multipart bodies without asking: the
        # API's own POST /_/events takes none of them (and needs the token once one is set).
        assert posts == [("/_/events", 415), ("/_/ui/api/dead-letters/x/replay", 403),
                         ("/_/ui/api/events", 403), ("/_/ui/api/events", 403)]
        # The JSON one needs a CORS preflight, which fnrun does not grant: never sent.
        assert page.page.evaluate("window.outcomes") == [
            "fulfilled", "fulfilled", "rejected", "fulfilled"]
    finally:
        page.close()
        attacker.shutdown()
        attacker.server_close()
    listed = httpx.get(served.url("/_/ui/api/runs"), params={"type": "evil.*"}).json()
    assert listed["runs"] == []


def test_the_live_stream_resumes_after_the_last_event_id(served: Project) -> None:
    # Five of its own: under xdist the module's other tests may have run in another process.
    ids = served.publish([{"type": "greet.requested", "data": {"name": n}} for n in "vwxyz"])
    def listed() -> list[dict[str, Any]]:
        return [r for r in httpx.get(served.url("/_/ui/api/runs?function=greet")).json()["runs"]
                if r["event_id"] in ids]
    runs = wait_until(lambda: len(listed()) == 5 and listed())
    oldest = min(r["seq"] for r in runs)
    with httpx.stream("GET", served.url("/_/ui/stream?function=greet"), timeout=10,
                      headers={"last-event-id": str(oldest)}) as stream:
        lines = stream.iter_lines()
        data = next(line for line in lines if line.startswith("data: "))
    resumed = json.loads(data.removeprefix("data: "))
    assert {r["event_id"] for r in resumed} == set(ids) - {r["event_id"] for r in runs
                                                           if r["seq"] == oldest}
    assert [r["seq"] for r in resumed] == sorted(r["seq"] for r in resumed)

    pages, query = [], "/_/ui/api/runs?function=greet&limit=2"
    while query:
        answer = httpx.get(served.url(query)).json()
        pages.append([r["seq"] for r in answer["runs"]])
        query = answer["next"] and f"/_/ui/api/runs?function=greet&limit=2&before={answer['next']}"
    seqs = [seq for page in pages for seq in page]
    assert len(seqs) >= 5 and seqs == sorted(seqs, reverse=True) == sorted(set(seqs), reverse=True)
    assert all(len(page) == 2 for page in pages[:-1])


@pytest.mark.slow  # a second supervisor, `fnrun dev` this time, for its banner
def test_with_a_token_the_one_time_login_link_opens_a_session(
    browser: Any, tmp_path: Path
) -> None:
    project = Project(tmp_path / "proj")
    project.functions.mkdir(parents=True)
    project.add("dash", YAML, CODE)
    out = tmp_path / "dev.log"
    with open(out, "wb") as log:
        dev = subprocess.Popen(
            [sys.executable, "-m", "runtime", "dev", "--project", str(project.root),
             "--port", str(project.port)], env={**os.environ, "FNRUN_TOKEN": TOKEN},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    project.procs.append(dev)
    try:
        link = wait_until(lambda: re.search(r"  ui     (http://\S+/_/ui/login\?code=\S+)",
                                            out.read_text()), timeout=30)[1]
        assert TOKEN not in link
        page = Page(browser, project.url(""))
        page.open("/_/ui").get_by_role("heading", name="Log in", exact=True).wait_for()
        ui_shot = page.shot
        ui_shot("login")
        assert page.errors == [f"401 GET {project.url('/_/ui/api/session')}"]
        page.errors.clear()

        page.page.goto(link)
        page.page.get_by_role("heading", name="Runs", exact=True).wait_for()
        assert page.page.url == project.url("/_/ui")
        [cookie] = page.context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert TOKEN not in cookie["value"]
        page.page.get_by_role("link", name="Functions", exact=True).click()
        page.page.locator("#functions tbody tr").first.wait_for()
        assert page.errors == []
        page.close()

        again = httpx.get(link, follow_redirects=False)
        assert again.status_code == 401 and "used, expired or wrong" in again.json()["error"]
        assert httpx.get(project.url("/_/ui/api/runs")).status_code == 401

        pasted = Page(browser, project.url(""))
        pasted.open("/_/ui").get_by_label("Token").fill(TOKEN)
        pasted.page.get_by_role("button", name="Log in").click()
        pasted.page.get_by_role("heading", name="Runs", exact=True).wait_for()
        pasted.close()

        # An open live stream ends as soon as the supervisor stops (within a poll), well
        # before uvicorn's 5 s shutdown grace would cut it: it holds nothing up.
        with httpx.stream("GET", project.url("/_/ui/stream"), timeout=10,
                          headers={"authorization": f"Bearer {TOKEN}"}) as stream:
            lines = stream.iter_lines()
            assert next(lines) == "retry: 1000"
            began = time.monotonic()
            dev.send_signal(signal.SIGTERM)
            for _ in lines:
                pass
            assert time.monotonic() - began < 2.5
        assert dev.wait(timeout=10) == 0
    finally:
        project.close()


def test_the_static_files_ship_in_the_package() -> None:
    """Every file the page loads is package data (pyproject), so an install serves it."""
    import tomllib

    import runtime.dashboard

    root = Path(__file__).parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["runtime.dashboard"]
    static = Path(runtime.dashboard.__file__).parent / "static"
    files = sorted(p.relative_to(static.parent) for p in static.iterdir())
    assert files and all(any(f.match(p) for p in patterns) for f in files)
