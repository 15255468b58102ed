"""The console (CONTRACT §9) in a real headless Chromium, against a real edge and worker on a
database and vhost of this module's own: the superuser the test makes is the only one.

Every page a test opens is watched: a request to any origin but the edge's, or a
Content-Security-Policy violation, fails the test. With WARDEN_SCREENSHOTS=DIR set, the tests
also save screenshots of the pages they visit there (`make screenshots` writes docs/console/).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, Page, Request, async_playwright, expect
from sqlalchemy import text

from contract.catalog import RPC
from contract.wire import UserOut
from domain.errors import InvalidCredentials, LastSuperuser, WrongPassword
from domain.model import NewUser
from tests.conftest import PASSWORD, fresh_ip, make_settings, own_world, unique
from tests.support.infra import Urls
from tests.support.waiting import eventually
from warden.bootstrap import build_edge, running_worker
from web.app import RPC_CLIENT

API = "/api/v1"
CHROMIUM = os.environ.get("WARDEN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
SHOTS = os.environ.get("WARDEN_SCREENSHOTS")
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 360, "height": 740}
WAIT_MS = 15_000  # a loaded two-core machine: a page and its API calls within this


@dataclass
class World:
    base: str
    worker: Any

    async def user(self, name: str | None = None, superuser: bool = False, **extra: Any) -> Any:
        name = name or unique("con")
        hashed = await self.worker.hasher.hash(PASSWORD)
        new = NewUser(f"{name}@example.com", name, hashed, is_superuser=superuser, **extra)
        return await self.worker.accounts.create(new)


@dataclass
class Watch:
    """What a browser context did that it must not: other origins, CSP violations."""

    origin: str
    foreign: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def request(self, request: Request) -> None:
        url = request.url
        if not (url.startswith(self.origin + "/") or url.startswith(("data:", "blob:"))):
            self.foreign.append(url)

    def console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            self.violations.append(message.text)

    def check(self) -> None:
        assert self.foreign == [], f"requests to another origin: {self.foreign}"
        assert self.violations == [], f"CSP violations: {self.violations}"


@pytest_asyncio.fixture(scope="module")
async def world(urls: Urls) -> AsyncIterator[World]:
    async with own_world(urls, "console") as own:
        settings = make_settings(own)
        async with running_worker(settings) as worker:
            server = TestServer(build_edge(settings), host="127.0.0.1")
            await server.start_server()
            assert server.app is not None
            await server.app[RPC_CLIENT].wait_connected(10)
            try:
                yield World(str(server.make_url("")).rstrip("/"), worker)
            finally:
                await server.close()


@pytest_asyncio.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.fail(f"no Chromium at {CHROMIUM}: `make browser` installs Debian's package")
    async with async_playwright() as playwright:
        # As root (CI) Chromium's sandbox cannot start (the pages are our own); a small
        # /dev/shm in a container must not crash it.
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
            headless=True,
        )
        yield chromium
        await chromium.close()


async def open_context(
    browser: Browser, world: World, viewport: dict[str, int] = DESKTOP
) -> tuple[BrowserContext, Watch]:
    # An address of its own (the edge trusts 127.0.0.1's X-Forwarded-For), as every test's
    # client has: the session's Redis counts failed logins per address across all modules.
    context = await browser.new_context(
        viewport=viewport,  # type: ignore[arg-type]
        extra_http_headers={"X-Forwarded-For": fresh_ip()},
    )
    context.set_default_timeout(WAIT_MS)
    watch = Watch(world.base)
    context.on("request", watch.request)
    context.on("console", watch.console)
    return context, watch


@pytest_asyncio.fixture
async def page(browser: Browser, world: World) -> AsyncIterator[Page]:
    """A desktop-sized tab of its own (its own sessionStorage); checked when the test ends."""
    context, watch = await open_context(browser, world)
    yield await context.new_page()
    await context.close()
    watch.check()


async def shot(page: Page, name: str, full_page: bool = True) -> None:
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=full_page)


async def sign_in(page: Page, url: str, username: str, password: str = PASSWORD) -> None:
    await page.goto(url)
    await page.get_by_label("Username or email").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def stored(world: World, user_id: int) -> dict[str, Any] | None:
    """The user's row as the database has it now (None once deleted)."""
    async with world.worker.engine.connect() as conn:
        row = await conn.execute(
            text("SELECT is_active, is_superuser, full_name FROM users WHERE id = :id"),
            {"id": user_id},
        )
        found = row.mappings().first()
    return dict(found) if found is not None else None


async def only_superuser(world: World, keep: int) -> None:
    """Demote every other active superuser this module made: `keep` is the last one."""
    async with world.worker.engine.begin() as conn:
        await conn.execute(
            text("UPDATE users SET is_superuser = false WHERE id <> :keep AND is_superuser"),
            {"keep": keep},
        )


# --- admin ------------------------------------------------------------------------------------


async def test_a_superuser_finds_a_user_by_search_and_deactivates_them(
    page: Page, world: World
) -> None:
    root = await world.user(superuser=True)
    target = await world.user(unique("findme"), full_name="Target Person")
    await sign_in(page, world.base + "/admin/", root.username)
    await expect(page.get_by_role("heading", name="Users")).to_be_visible()

    await page.get_by_label("Search").fill(target.username)
    await page.get_by_role("button", name="Search").click()
    link = page.get_by_role("link", name=target.username)
    await expect(link).to_be_visible()
    await expect(page.locator("table.users tbody tr:not(.filler)")).to_have_count(1)
    await shot(page, "admin-users-search")
    await link.click()

    await expect(page.get_by_role("heading", name=target.username, exact=True)).to_be_visible()
    await page.get_by_role("button", name="Deactivate").click()
    await expect(page.get_by_role("status").filter(has_text="Deactivated")).to_be_visible()
    await expect(page.get_by_role("button", name="Activate", exact=True)).to_be_visible()
    await shot(page, "admin-user")
    assert await stored(world, target.id) == {
        "is_active": False,
        "is_superuser": False,
        "full_name": "Target Person",
    }


async def test_the_last_superuser_demoting_themselves_reads_why_not(
    page: Page, world: World
) -> None:
    root = await world.user(superuser=True)
    await only_superuser(world, root.id)
    await sign_in(page, world.base + f"/admin/#/users/{root.id}", root.username)

    await page.get_by_role("button", name="Revoke superuser").click()

    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text(LastSuperuser.default_detail)
    assert (await stored(world, root.id) or {}).get("is_superuser") is True


async def test_a_wrong_password_at_sign_in_reads_as_the_api_says(page: Page, world: World) -> None:
    root = await world.user(superuser=True)
    await sign_in(page, world.base + "/admin/", root.username, "not the password")
    await expect(page.get_by_role("alert")).to_contain_text(InvalidCredentials.default_detail)


async def test_signing_in_by_keyboard_alone(page: Page, world: World) -> None:
    root = await world.user(superuser=True)
    await page.goto(world.base + "/admin/")
    await expect(page.get_by_label("Username or email")).to_be_focused()
    await page.keyboard.type(root.username)
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Users")).to_be_visible()
    await shot(page, "admin-users")


async def test_keyset_pages_walk_forward_and_back_without_a_jump(page: Page, world: World) -> None:
    root = await world.user(superuser=True)
    prefix = unique("walk")
    names = {(await world.user(f"{prefix}{i:02d}")).username for i in range(23)}
    await sign_in(
        page, world.base + f"/admin/#/users?q={prefix}&sort=username&limit=10", root.username
    )
    rows = page.locator("table.users tbody tr:not(.filler) td:first-child")
    table = page.locator("table.users")
    pages: list[list[str]] = []
    heights: list[float] = []
    for number in (1, 2, 3):
        await expect(page.get_by_text(f"Page {number}", exact=True)).to_be_visible()
        await expect(table).not_to_have_attribute("aria-busy", "true")
        pages.append(await rows.all_inner_texts())
        box = await table.bounding_box()
        assert box is not None
        heights.append(box["height"])
        if number < 3:
            await page.get_by_role("button", name="Next →").click()
    await expect(page.get_by_role("button", name="Next →")).to_be_disabled()

    assert [len(p) for p in pages] == [10, 10, 3]
    assert [n for p in pages for n in p] == sorted(names)
    assert len(set(heights)) == 1, f"the table's height changed between pages: {heights}"

    await page.get_by_role("button", name="← Previous").click()
    await expect(page.get_by_text("Page 2", exact=True)).to_be_visible()
    await expect(table).not_to_have_attribute("aria-busy", "true")
    assert await rows.all_inner_texts() == pages[1]


async def test_the_audit_log_globally_and_for_one_user(page: Page, world: World) -> None:
    root = await world.user(superuser=True)
    target = await world.user()
    await sign_in(page, world.base + f"/admin/#/users/{target.id}", root.username)
    await page.get_by_role("button", name="Grant superuser").click()
    await expect(page.get_by_role("status").filter(has_text="Now a superuser")).to_be_visible()

    await page.get_by_role("link", name="Audit log", exact=True).click()
    await expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    await expect(page.locator("table.audit tbody tr:not(.filler)").first).to_be_visible()
    await shot(page, "admin-audit")

    await page.goto(world.base + f"/admin/#/users/{target.id}")
    await page.get_by_role("link", name="This user's audit log →").click()
    await expect(
        page.get_by_role("heading", name=f"Audit log of user #{target.id}")
    ).to_be_visible()
    users = page.locator("table.audit tbody tr:not(.filler) td:nth-child(3)")
    await expect(users.first).to_be_visible()
    assert set(await users.all_inner_texts()) == {target.username}
    types = await page.locator(
        "table.audit tbody tr:not(.filler) td:nth-child(2)"
    ).all_inner_texts()
    assert "user.updated" in types

    await page.get_by_label("Event type").fill("user.registered")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_text("Page 1", exact=True)).to_be_visible()
    types = await page.locator(
        "table.audit tbody tr:not(.filler) td:nth-child(2)"
    ).all_inner_texts()
    assert types == ["user.registered"]


async def test_deleting_a_user_needs_their_name_typed(page: Page, world: World) -> None:
    root = await world.user(superuser=True)
    target = await world.user()
    await sign_in(page, world.base + f"/admin/#/users/{target.id}", root.username)
    delete = page.get_by_role("button", name="Delete user")
    await expect(delete).to_be_disabled()
    await page.get_by_label(f"Type {target.username} to confirm").fill(target.username + "x")
    await expect(delete).to_be_disabled()
    await page.get_by_label(f"Type {target.username} to confirm").fill(target.username)
    await delete.click()
    await expect(page.get_by_role("status").filter(has_text="was deleted")).to_be_visible()
    assert await stored(world, target.id) is None


async def test_a_user_who_is_not_a_superuser_is_sent_to_their_account(
    page: Page, world: World
) -> None:
    plain = await world.user()
    await sign_in(page, world.base + "/admin/", plain.username)
    await expect(page.get_by_role("heading", name="Superusers only")).to_be_visible()


# --- account ----------------------------------------------------------------------------------


async def test_a_user_edits_their_profile_and_changes_their_password(
    page: Page, world: World
) -> None:
    user = await world.user()
    await sign_in(page, world.base + "/account/", user.username)
    await expect(page.get_by_role("heading", name=f"Hello, {user.username}")).to_be_visible()
    await shot(page, "account")

    await page.get_by_label("Full name").fill("Ada Lovelace")
    await page.get_by_role("button", name="Save profile").click()
    await expect(page.get_by_role("status").filter(has_text="Profile saved")).to_be_visible()
    assert (await stored(world, user.id) or {}).get("full_name") == "Ada Lovelace"

    await page.get_by_label("Current password").fill("not my password")
    await page.get_by_label("New password", exact=True).fill("a brand new secret")
    await page.get_by_label("New password, again").fill("a brand new secret")
    await page.get_by_role("button", name="Change password").click()
    alert = page.locator("#password").get_by_role("alert")
    await expect(alert).to_contain_text(WrongPassword.default_detail)

    await page.get_by_label("Current password").fill(PASSWORD)
    await page.get_by_role("button", name="Change password").click()
    await expect(page.get_by_role("status").filter(has_text="Password changed")).to_be_visible()
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            world.base + API + "/auth/login",
            json={"username": user.username, "password": "a brand new secret"},
        ) as r,
    ):
        assert r.status == 200


async def test_signing_out_ends_the_session_and_shows_the_form(page: Page, world: World) -> None:
    user = await world.user()
    await sign_in(page, world.base + "/account/", user.username)
    await expect(page.get_by_role("heading", name=f"Hello, {user.username}")).to_be_visible()
    token = await page.evaluate(
        "JSON.parse(sessionStorage.getItem('warden.console.tokens')).access_token"
    )
    await page.get_by_role("button", name="Sign out", exact=True).click()
    await expect(page.get_by_label("Username or email")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0
    async with (
        aiohttp.ClientSession() as http,
        http.get(world.base + API + "/users/me", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert (r.status, (await r.json())["code"]) == (401, "token_revoked")


async def test_an_expired_access_token_is_refreshed_without_a_new_sign_in(
    page: Page, world: World
) -> None:
    user = await world.user()
    await sign_in(page, world.base + "/account/", user.username)
    await expect(page.get_by_role("heading", name=f"Hello, {user.username}")).to_be_visible()
    before = await held_tokens(page)
    # As if the access token's life had run out while the tab slept.
    await page.evaluate(
        "(() => { const t = JSON.parse(sessionStorage.getItem('warden.console.tokens'));"
        " t.expires_at = Date.now() - 1000;"
        " sessionStorage.setItem('warden.console.tokens', JSON.stringify(t)); })()"
    )
    await page.reload()
    await expect(page.get_by_role("heading", name=f"Hello, {user.username}")).to_be_visible()

    async def refreshed() -> bool:
        return bool((await held_tokens(page))["refresh_token"] != before["refresh_token"])

    await eventually(refreshed, WAIT_MS / 1000, "the console refreshed its tokens")
    after = await held_tokens(page)
    assert after["expires_at"] > before["expires_at"]
    bearer = {"Authorization": f"Bearer {after['access_token']}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(world.base + API + "/users/me", headers=bearer) as r,
    ):
        assert r.status == 200


async def test_the_pair_is_refreshed_before_it_expires_without_redrawing_the_page(
    page: Page, world: World
) -> None:
    user = await world.user()
    await page.clock.install()
    await sign_in(page, world.base + "/account/", user.username)
    await expect(page.get_by_role("heading", name=f"Hello, {user.username}")).to_be_visible()
    before = await held_tokens(page)
    await page.get_by_label("Full name").fill("typed, not saved")

    # The access token lives 1800 s (WARDEN_ACCESS_TOKEN_TTL): the tab wakes before its end.
    await page.clock.run_for(before["life"] * 1000 - 30_000)

    async def refreshed() -> bool:
        return bool((await held_tokens(page))["refresh_token"] != before["refresh_token"])

    await eventually(refreshed, WAIT_MS / 1000, "the console refreshed its tokens in time")
    await expect(page.get_by_label("Full name")).to_have_value("typed, not saved")


async def test_a_duplicated_tab_takes_the_pair_its_twin_refreshed(
    browser: Browser, world: World
) -> None:
    user = await world.user()
    context, watch = await open_context(browser, world)
    first = await context.new_page()
    await sign_in(first, world.base + "/account/", user.username)
    await expect(first.get_by_role("heading", name=f"Hello, {user.username}")).to_be_visible()
    held = await held_tokens(first)
    spent = held["refresh_token"]
    # What "Duplicate tab" does: a second tab starts with a copy of the first's sessionStorage.
    twin = await context.new_page()
    key, copy = "'warden.console.tokens'", json.dumps(json.dumps(held))
    await twin.add_init_script(
        f"if (!sessionStorage.getItem({key})) sessionStorage.setItem({key}, {copy})"
    )
    await twin.goto(world.base + "/account/")
    await expect(twin.get_by_role("heading", name=f"Hello, {user.username}")).to_be_visible()

    await first.evaluate(
        "(() => { const t = JSON.parse(sessionStorage.getItem('warden.console.tokens'));"
        " t.expires_at = Date.now() - 1000;"
        " sessionStorage.setItem('warden.console.tokens', JSON.stringify(t)); })()"
    )
    await first.reload()

    async def twin_took_it() -> bool:
        fresh = (await held_tokens(first))["refresh_token"]
        return bool(fresh != spent and (await held_tokens(twin))["refresh_token"] == fresh)

    await eventually(twin_took_it, WAIT_MS / 1000, "the twin tab took the refreshed pair")
    await twin.reload()
    await expect(twin.get_by_role("heading", name=f"Hello, {user.username}")).to_be_visible()
    assert await me_status(world, (await held_tokens(first))["access_token"]) == 200
    await context.close()
    watch.check()


async def held_tokens(page: Page) -> dict[str, Any]:
    held = await page.evaluate("JSON.parse(sessionStorage.getItem('warden.console.tokens'))")
    assert isinstance(held, dict)
    return held


# --- small screens and the API docs ---------------------------------------------------------


async def test_the_consoles_fit_a_360_pixel_screen(browser: Browser, world: World) -> None:
    root = await world.user(superuser=True)
    for i in range(3):
        await world.user(f"{unique('phone')}{i}", full_name="Someone With A Long Full Name")
    context, watch = await open_context(browser, world, PHONE)
    page = await context.new_page()
    await sign_in(page, world.base + "/admin/", root.username)
    await expect(page.get_by_role("heading", name="Users")).to_be_visible()
    await expect(page.locator("table.users tbody tr:not(.filler)").first).to_be_visible()
    widths = [await page.evaluate("document.documentElement.scrollWidth")]
    await shot(page, "admin-users-360px")
    await page.goto(world.base + f"/admin/#/users/{root.id}")
    await expect(page.get_by_role("heading", name=root.username, exact=True)).to_be_visible()
    widths.append(await page.evaluate("document.documentElement.scrollWidth"))
    await page.goto(world.base + "/admin/#/audit")
    await expect(page.locator("table.audit tbody tr:not(.filler)").first).to_be_visible()
    widths.append(await page.evaluate("document.documentElement.scrollWidth"))
    await page.goto(world.base + "/account/")
    await expect(page.get_by_role("heading", name=re.compile("^Hello"))).to_be_visible()
    widths.append(await page.evaluate("document.documentElement.scrollWidth"))
    await shot(page, "account-360px")
    picture = await page.screenshot()
    await context.close()
    watch.check()
    assert widths == [PHONE["width"]] * 4, f"wider than the screen: {widths}"
    assert picture[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(picture) > 5_000


async def test_swagger_ui_renders_the_openapi_document_from_warden_alone(
    page: Page, world: World
) -> None:
    await page.goto(world.base + "/api/v1/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("Warden")
    await expect(page.locator(".opblock-summary-path").first).to_be_visible()
    paths = await page.locator(".opblock-summary-path").all_inner_texts()
    assert "/api/v1/users/{id}" in [p.replace("\u200b", "") for p in paths]
    await shot(page, "api-docs", full_page=False)


async def test_the_companion_page_lists_the_queues_and_the_events(page: Page, world: World) -> None:
    await page.goto(world.base + "/api/v1/docs/messaging")
    await expect(page.get_by_role("cell", name="warden.users.register")).to_be_visible()
    await expect(page.get_by_role("cell", name="user.registered")).to_be_visible()
    await expect(page.get_by_role("cell", name="warden.ping")).to_have_count(0)
    await shot(page, "api-messaging", full_page=False)


# --- v2 (CONTRACT §7, §8): these run once the routes are in the catalogue ----------------------

SESSIONS = "warden.sessions.list" in RPC
TOTP = "warden.mfa.enroll" in RPC
VERIFIED = "is_verified" in UserOut.model_fields
needs_sessions = pytest.mark.skipif(not SESSIONS, reason="no warden.sessions.* queue yet (§8)")
needs_totp = pytest.mark.skipif(not TOTP, reason="no warden.mfa.* queue yet (§8)")
needs_verified = pytest.mark.skipif(not VERIFIED, reason="User has no is_verified yet (§7)")


def totp(secret: str, at: float | None = None) -> str:
    """RFC 6238's code (SHA-1, 6 digits, 30 s) for a base32 secret, as an authenticator app."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // 30)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{number % 1_000_000:06d}"


def test_the_totp_helper_matches_rfc_6238() -> None:
    # RFC 6238, appendix B: the SHA-1 secret "12345678901234567890", 8 digits there, 6 here.
    secret = base64.b32encode(b"12345678901234567890").decode()
    assert totp(secret, 59) == "287082"
    assert totp(secret, 1111111109) == "081804"


async def api_login(world: World, username: str, agent: str) -> str:
    body = {"username": username, "password": PASSWORD}
    async with (
        aiohttp.ClientSession(headers={"User-Agent": agent}) as http,
        http.post(world.base + API + "/auth/login", json=body) as r,
    ):
        assert r.status == 200, await r.text()
        return str((await r.json())["access_token"])


async def me_status(world: World, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(world.base + API + "/users/me", headers=headers) as r,
    ):
        return r.status


@needs_sessions
async def test_a_user_signs_out_one_session_then_all_others(page: Page, world: World) -> None:
    user = await world.user()
    phone = await api_login(world, user.username, "Phone agent")
    laptop = await api_login(world, user.username, "Laptop agent")
    await sign_in(page, world.base + "/account/#sessions", user.username)
    sessions = page.locator("#sessions li")
    await expect(sessions).to_have_count(3)
    await expect(page.locator("#sessions li.current")).to_have_count(1)
    # Each session's button says which one it ends: only the header's is just "Sign out".
    await expect(page.get_by_role("button", name="Sign out", exact=True)).to_have_count(1)
    await expect(
        page.get_by_role("button", name=re.compile("^Sign out Laptop agent"))
    ).to_be_visible()

    await page.get_by_role("button", name=re.compile("^Sign out Phone agent")).click()
    await expect(page.get_by_role("status").filter(has_text="signed out")).to_be_visible()
    await expect(sessions).to_have_count(2)
    assert await me_status(world, phone) == 401
    assert await me_status(world, laptop) == 200

    await page.get_by_role("button", name="Sign out all other sessions").click()
    await expect(sessions).to_have_count(1)
    assert await me_status(world, laptop) == 401
    await expect(page.get_by_role("heading", name=re.compile("^Hello"))).to_be_visible()


@needs_sessions
async def test_a_superuser_ends_every_session_of_a_user(page: Page, world: World) -> None:
    root = await world.user(superuser=True)
    user = await world.user()
    token = await api_login(world, user.username, "Victim agent")
    await sign_in(page, world.base + f"/admin/#/users/{user.id}", root.username)
    await page.get_by_role("button", name="Sign out of every session").click()
    await expect(page.get_by_role("status").filter(has_text="has ended")).to_be_visible()
    assert await me_status(world, token) == 401


@needs_verified
async def test_a_superuser_marks_an_email_verified(page: Page, world: World) -> None:
    root = await world.user(superuser=True)
    user = await world.user()
    await sign_in(page, world.base + f"/admin/#/users/{user.id}", root.username)
    await page.get_by_role("button", name="Mark email verified").click()
    await expect(page.get_by_role("button", name="Mark email unverified")).to_be_visible()
    async with world.worker.engine.connect() as conn:
        verified = await conn.scalar(
            text("SELECT is_verified FROM users WHERE id = :id"), {"id": user.id}
        )
    assert verified is True


@needs_totp
async def test_a_user_enrols_totp_then_signs_in_with_a_code_and_a_recovery_code(
    page: Page, world: World
) -> None:
    user = await world.user()
    await sign_in(page, world.base + "/account/#mfa", user.username)
    await page.get_by_role("button", name="Set up an authenticator app").click()
    await expect(page.get_by_role("img", name="QR code for your authenticator app")).to_be_visible()
    secret = (await page.locator("code.secret").inner_text()).strip()
    await shot(page, "account-totp")

    await page.get_by_label("Code from the app").fill(
        "000000" if totp(secret) != "000000" else "111111"
    )
    await page.get_by_role("button", name="Turn on").click()
    await expect(page.locator("#mfa").get_by_role("alert")).to_be_visible()
    await page.get_by_label("Code from the app").fill(totp(secret))
    await page.get_by_role("button", name="Turn on").click()
    codes = page.locator(".recovery .codes li")
    await expect(codes).to_have_count(10)
    recovery = (await codes.all_inner_texts())[0].strip()
    await page.get_by_role("button", name="I have saved them").click()
    await expect(codes).to_have_count(0)

    # The code that confirmed spent its time-step: an app shows the next one 30 s later, and
    # one step of drift lets it in now.
    await page.get_by_role("button", name="Sign out", exact=True).click()
    await sign_in(page, world.base + "/account/", user.username)
    await page.get_by_label("Authentication code").fill(totp(secret, time.time() + 30))
    await page.get_by_role("button", name="Verify").click()
    await expect(page.get_by_role("heading", name=re.compile("^Hello"))).to_be_visible()

    await page.get_by_role("button", name="Sign out", exact=True).click()
    await sign_in(page, world.base + "/account/", user.username)
    await page.get_by_label("Authentication code").fill(recovery)
    await page.get_by_role("button", name="Verify").click()
    await expect(page.get_by_role("heading", name=re.compile("^Hello"))).to_be_visible()

    await page.get_by_text("Turn off two-factor authentication").click()
    await page.get_by_label("Your password, to confirm").fill(PASSWORD)
    await page.get_by_role("button", name="Turn off two-factor").click()
    await expect(page.get_by_role("status").filter(has_text="is off")).to_be_visible()
