"""The sandbox dashboard at /_mock/: its JSON and HTML in process, then the page itself
in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against the
mock on a real port.

``ASTRIA_MOCK_DASHBOARD_PNG=docs/dashboard.png pytest tests/test_dashboard.py -k screenshot``
refreshes the screenshot in the docs.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import DEFAULTS, KEY, OTHER_KEY, Api, LiveServer, Receiver
from PIL import Image, ImageDraw

from mockserver.settings import Settings

CHROMIUM = (
    os.environ.get("ASTRIA_MOCK_CHROMIUM")
    or shutil.which("chromium")
    or shutil.which("chromium-browser")
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = os.environ.get("ASTRIA_MOCK_DASHBOARD_PNG")
WAIT_MS = 5000
TOKEN = "s3cret"


def tenant_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def face(size: int = 256) -> bytes:
    """A drawn face, so the thumbnails and the FaceID renders show something."""
    image = Image.new("RGB", (size, size), (214, 226, 240))
    draw = ImageDraw.Draw(image)
    s = size / 256
    draw.ellipse((58 * s, 40 * s, 198 * s, 210 * s), fill=(232, 185, 150))
    draw.pieslice((52 * s, 28 * s, 204 * s, 150 * s), 180, 360, fill=(92, 60, 40))
    for x in (98, 158):
        draw.ellipse(((x - 9) * s, 112 * s, (x + 9) * s, 128 * s), fill=(40, 40, 50))
    draw.arc((96 * s, 140 * s, 160 * s, 182 * s), 20, 160, fill=(150, 60, 60), width=int(5 * s))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def faceid_tune(api: Api, title: str, callback: str | None = None) -> dict[str, Any]:
    data = {"tune[title]": title, "tune[name]": "woman", "tune[model_type]": "faceid"}
    if callback:
        data["tune[callback]"] = callback
    files = [("tune[images][]", ("face.jpg", face(), "image/jpeg"))]
    response = api.post("/tunes", data=data, files=files)
    assert response.status_code == 201, response.text
    return dict(response.json())


def prompt(api: Api, text: str, num_images: int = 2, **extra: Any) -> dict[str, Any]:
    body = {"prompt": {"text": text, "num_images": num_images, **extra}}
    response = api.post("/tunes/690204/prompts", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


# in process ----------------------------------------------------------------------------
def test_state_is_every_tenant_in_the_apis_shapes(api: Api):
    tune = faceid_tune(api, "Jane")
    done = prompt(api, f"<faceid:{tune['id']}:1> portrait")
    api.complete(done["id"])
    other = prompt(api.as_key(OTHER_KEY), "a cat")

    state = api.client.get("/_mock/state").json()
    assert set(state["tenants"]) == {tenant_id(KEY), tenant_id(OTHER_KEY)}
    mine = state["tenants"][tenant_id(KEY)]
    assert mine["tunes"] == [api.get(f"/tunes/{tune['id']}").json()]
    assert mine["prompts"] == [api.get(f"/prompts/{done['id']}.json").json()]
    assert len(mine["prompts"][0]["images"]) == 2
    assert state["tenants"][tenant_id(OTHER_KEY)]["prompts"][0]["id"] == other["id"]
    assert set(state) == {"now", "tenants", "faults", "callbacks", "violations"}

    # With a bearer key, as every /_mock/ route: that tenant only.
    scoped = api.client.get("/_mock/state", headers={"Authorization": f"Bearer {OTHER_KEY}"})
    assert list(scoped.json()["tenants"]) == [tenant_id(OTHER_KEY)]
    assert api.client.get("/_mock/state?limit=1").json()["tenants"] != {}
    assert api.client.get("/_mock/state?limit=0").status_code == 400


def test_page_escapes_user_text_and_runs_only_its_own_script(api: Api):
    faceid_tune(api, 'Jo "<b>bold</b>"')
    prompt(api, "<script>alert(1)</script><img src=x onerror=alert(2)> a fox")
    page = api.client.get("/_mock/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    assert "Jo &quot;&lt;b&gt;bold&lt;/b&gt;&quot;" in html
    assert "<script>alert" not in html
    assert "<b>bold" not in html
    csp = page.headers["content-security-policy"]
    nonce = csp.split("'nonce-")[1].split("'")[0]
    assert html.count("<script") == 1
    assert f'<script nonce="{nonce}">' in html
    assert "img-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert page.headers["cache-control"] == "no-store"


def test_statuses_and_external_images(api: Api):
    pending = prompt(api, "waits", num_images=3)
    failed = prompt(api, "fails")
    tune = api.post(
        "/tunes",
        json={
            "tune": {
                "title": "by url",
                "name": "man",
                "model_type": "faceid",
                "image_urls": ["https://example.com/a.jpg"],
            }
        },
    ).json()
    services = api.client.app.state.services  # type: ignore[attr-defined]
    with services.store.begin() as tx:
        tx.update_prompt(failed["id"], user_error="NSFW <detected>")
    panels = api.client.get("/_mock/panels").json()["panels"]
    tenants = panels["tenants"]
    assert f'id="prompt-{pending["id"]}" data-status="pending"' in tenants
    assert tenants.count('class="thumb waiting"') == 3
    assert f'id="prompt-{failed["id"]}" data-status="failed"' in tenants
    assert "NSFW &lt;detected&gt;" in tenants
    # A client's own image URL is named, never fetched by the page.
    assert f'id="tune-{tune["id"]}"' in tenants
    assert "example.com/a.jpg" in tenants
    assert 'src="https://example.com' not in tenants
    assert "2 prompts (1 pending)" in panels["summary"]


def test_panels_answer_304_when_nothing_changed(api: Api):
    first = api.client.get("/_mock/panels")
    tag = first.headers["etag"]
    assert api.client.get("/_mock/panels", headers={"If-None-Match": tag}).status_code == 304
    prompt(api, "news")
    assert api.client.get("/_mock/panels", headers={"If-None-Match": tag}).status_code == 200


def test_admin_token_guards_the_json(make_api):
    api = make_api(admin_token=TOKEN)
    for path in ("/_mock/state", "/_mock/panels"):
        assert api.client.get(path).status_code == 401
        assert api.client.get(path, headers={"X-Admin-Token": "wrong"}).status_code == 401
        assert api.client.get(path, headers={"X-Admin-Token": TOKEN}).status_code == 200
    page = api.client.get("/_mock/", headers={"X-Admin-Token": TOKEN})
    assert page.status_code == 200
    assert 'data-locked="false"' in page.text


def guard_lets_the_page_check_its_token(api: Api) -> None:
    """The page checks ``?token=`` itself; an AdminGuard that answers for it cannot show it."""
    answer = api.client.get("/_mock/")
    if answer.headers["content-type"].startswith("application/json"):
        pytest.skip(
            "AdminGuard answers GET /_mock/ itself (JSON 401), so the page cannot take "
            "?token= nor say what is missing: exempt the exact path /_mock/ in AdminGuard"
        )


def test_admin_token_page_without_and_with_token(make_api):
    api = make_api(admin_token=TOKEN)
    guard_lets_the_page_check_its_token(api)
    faceid_tune(api, "Secret Sam")
    locked = api.client.get("/_mock/")
    assert locked.status_code == 401
    assert "needs its admin token" in locked.text
    assert "Secret Sam" not in locked.text
    assert 'data-locked="true"' in locked.text
    assert api.client.get("/_mock/?token=wrong").status_code == 401
    assert api.client.get("/_mock/?token=%C3%A9").status_code == 401
    opened = api.client.get(f"/_mock/?token={TOKEN}")
    assert opened.status_code == 200
    assert "Secret Sam" in opened.text


# in a browser ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip(
            "no chromium binary found (apt-get install -y chromium, or set "
            "ASTRIA_MOCK_CHROMIUM): the dashboard's browser tests need one"
        )
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(WAIT_MS)
        yield context
        context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    tab = browser.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on("dialog", lambda dialog: errors.append(f"a {dialog.type}: {dialog.message}"))
    yield tab
    tab.close()
    assert not errors, errors


class Sandbox:
    """The mock on a port, an API client for it, and the dashboard's URL."""

    def __init__(self, server: LiveServer, client: httpx.Client) -> None:
        self.url = server.url
        self.services = server.server.config.app.state.services
        self.api = Api(client)
        self.client = client

    def dashboard(self, query: str = "") -> str:
        return f"{self.url}/_mock/?poll=150{'&' if query else ''}{query}"


def start(settings: Settings) -> Iterator[Sandbox]:
    with LiveServer(settings) as server, httpx.Client(base_url=server.url) as client:
        yield Sandbox(server, client)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    yield from start(DEFAULTS)


def images_loaded(page: Any, selector: str, count: int) -> None:
    page.locator(selector).first.scroll_into_view_if_needed()
    page.wait_for_function(
        """([selector, count]) => {
            const images = [...document.querySelectorAll(selector + " img")];
            return images.length === count && images.every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=[selector, count],
    )


def test_page_lists_a_tenants_faceid_tune(sandbox: Sandbox, page: Any):
    tune = faceid_tune(sandbox.api, "John Doe - UUID - 1234")
    assert page.goto(sandbox.dashboard()).status == 200
    card = page.locator(f'article.tenant[data-tenant="{tenant_id(KEY)}"]')
    row = card.locator(f"#tune-{tune['id']}")
    assert row.locator(".title").inner_text() == "John Doe - UUID - 1234"
    assert "faceid" in row.inner_text()
    assert row.locator(".badge").inner_text() == "done"
    assert card.locator("code").first.inner_text() == tenant_id(KEY)[:12]
    images_loaded(page, f"#tune-{tune['id']}", 1)
    page.wait_for_selector("#live.on")


def test_a_prompt_appears_and_completes_without_a_reload(sandbox: Sandbox, page: Any):
    tune = faceid_tune(sandbox.api, "Ada")
    page.goto(sandbox.dashboard())
    page.evaluate("window.sameDocument = true")
    text = f"<faceid:{tune['id']}:1> <script>window.hacked = true</script> in the alps"
    new = prompt(sandbox.api, text)
    selector = f"#prompt-{new['id']}"
    page.wait_for_selector(f'{selector}[data-status="pending"]')
    assert page.locator(f"{selector} .text").inner_text() == text
    assert page.locator(f"{selector} .thumb.waiting").count() == 2

    sandbox.api.complete(new["id"])
    page.wait_for_selector(f'{selector}[data-status="done"]')
    images_loaded(page, selector, 2)
    assert page.evaluate("window.sameDocument") is True
    assert page.evaluate("window.hacked") is None
    assert page.locator("#tenants script").count() == 0
    assert page.locator(f"{selector} .badge").inner_text() == "done"


def test_fault_rules_are_added_and_removed_from_the_page(sandbox: Sandbox, page: Any):
    api = sandbox.api
    page.goto(sandbox.dashboard())
    form = page.locator("#fault-form")
    form.locator("button[type=submit]").click()  # no action: the mock's 400 is shown
    page.wait_for_selector("#fault-message.bad")
    assert "needs an action" in page.inner_text("#fault-message")

    form.locator("select[name=method]").select_option("GET")
    form.locator("input[name=path]").fill("/tunes")
    form.locator("select[name=status]").select_option("429")
    form.locator("button[type=submit]").click()
    rule = page.wait_for_selector("#faults li.fault")
    assert "GET /tunes" in rule.inner_text()
    assert "429" in rule.inner_text()
    assert api.get("/tunes").status_code == 429
    assert api.get("/tunes").status_code == 429
    page.wait_for_selector("#faults li.fault:has-text('fired 2')")

    page.click(f"[data-remove-fault='{rule.get_attribute('data-fault')}']")
    page.wait_for_selector("#faults li.fault", state="detached")
    assert "removed" in page.inner_text("#fault-message")
    assert api.get("/tunes").status_code == 200
    assert sandbox.client.get("/_mock/faults").json()["faults"] == []


def test_callback_log_and_violations_show_live(sandbox: Sandbox, receiver: Receiver, page: Any):
    page.goto(sandbox.dashboard())
    page.wait_for_selector("#callbacks .empty")
    tune = faceid_tune(sandbox.api, "Hooked", callback=f"{receiver.url}/hooks/tune?user=7")
    receiver.wait_for(1)
    sandbox.api.post("/tunes/690204/prompts", json={"prompt": {"text": "x", "number_of_images": 2}})
    delivered = page.wait_for_selector("#callbacks li.callback:has(.badge.delivered)")
    assert f"tune {tune['id']}" in delivered.inner_text()
    assert "/hooks/tune?user=7" in delivered.inner_text()
    assert "HTTP 204" in delivered.inner_text()
    violation = page.wait_for_selector("#violations li.violation")
    assert "createPrompt" in violation.inner_text()
    assert "number_of_images" in violation.inner_text()
    assert "POST /tunes/690204/prompts" in violation.inner_text()
    assert page.inner_text("#count-violations") == "1"

    page.click("[data-clear='violations']")
    page.wait_for_selector("#violations .empty")


def test_admin_token_in_the_browser(page: Any):
    for sandbox in start(replace(DEFAULTS, admin_token=TOKEN)):
        guard_lets_the_page_check_its_token(sandbox.api)
        faceid_tune(sandbox.api, "Guarded Gail")
        response = page.goto(sandbox.dashboard())
        assert response.status == 401
        assert page.locator("#locked").is_visible()
        assert "needs its admin token" in page.inner_text("#locked")
        assert not page.locator("#board").is_visible()

        page.fill("#token-form input[name=token]", "wrong")
        page.click("#token-form button")
        page.wait_for_selector("#locked-error:has-text('refused')")

        assert page.goto(sandbox.dashboard(f"token={TOKEN}")).status == 200
        page.wait_for_selector("#live.on")
        assert "token=" not in page.url  # kept in sessionStorage, not in the address bar
        assert page.locator("text=Guarded Gail").is_visible()
        page.reload()  # the token is no longer in the URL: the script sends the header
        page.wait_for_selector("#board .tune")
        page.wait_for_selector("#live.on")
        assert not page.locator("#locked").is_visible()
        page.locator("#fault-form select[name=status]").select_option("429")
        page.click("#fault-form button[type=submit]")
        page.wait_for_selector("#faults li.fault")
        assert sandbox.api.get("/tunes").status_code == 429


def test_screenshot_of_a_populated_sandbox(receiver: Receiver, page: Any, tmp_path: Path):
    settings = replace(DEFAULTS, clock="frozen:2025-03-14T09:26:53Z")
    for sandbox in start(settings):
        api, bob = sandbox.api, sandbox.api.as_key("sd_bob_staging_key")
        alice = faceid_tune(api, "Alice Martin - user 4821", callback=f"{receiver.url}/astria")
        for text in ("wearing a linen suit, studio light", "trekking in the alps, golden hour"):
            done = prompt(api, f"<faceid:{alice['id']}:1> {text}", callback=f"{receiver.url}/p")
            api.complete(done["id"])
        prompt(api, f"<faceid:{alice['id']}:1> as an astronaut, film grain", num_images=3)
        prompt(bob, "<script>alert('hi')</script> a red fox in the snow", num_images=1)
        api.complete(prompt(bob, "a lighthouse at dusk, oil painting", num_images=1)["id"])
        bob.post("/tunes/690204/prompts", json={"prompt": {"text": "x", "cfg_scale": "7"}})
        failed = prompt(bob, "a crowd at a concert", num_images=1)
        with sandbox.services.store.begin() as tx:
            tx.update_prompt(failed["id"], user_error="Prompt blocked: faces of minors detected")
        extra = {"number_of_images": 4}
        portrait = prompt(api, f"<faceid:{alice['id']}:1> portrait, 85mm", num_images=1, **extra)
        api.complete(portrait["id"])
        sandbox.client.post(
            "/_mock/faults", json={"method": "GET", "path": "/tunes", "status": 429, "times": 3}
        )
        sandbox.client.post(
            "/_mock/faults",
            json={"path": "/tunes/*/prompts", "latency_ms": [200, 800], "probability": 0.3},
        )
        receiver.wait_for(3)
        sandbox.client.get("/_mock/callbacks?wait=5&count=3")

        page.goto(sandbox.dashboard())
        page.wait_for_selector("#callbacks li.callback:has(.badge.delivered)")
        deadline = time.monotonic() + WAIT_MS / 1000
        while page.locator("#callbacks .badge.pending").count() and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        images_loaded(page, "#tenants", 7)
        page.evaluate("window.scrollTo(0, 0)")
        path = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "dashboard.png"
        page.screenshot(path=str(path), full_page=True)
        with Image.open(path) as shot:
            assert shot.width == 1280
            assert shot.height > 600
            assert len(shot.convert("RGB").getcolors(1 << 24) or []) > 50
