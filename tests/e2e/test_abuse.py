"""Cheap abuse is bounded: the client address is read from every X-Forwarded-For line."""

from __future__ import annotations

import aiohttp
from multidict import CIMultiDict

from tests.conftest import PASSWORD, fresh_ip, unique
from tests.e2e.test_request_id import event_about, events_of
from warden.settings import Settings


def registration(name: str) -> dict[str, str]:
    return {"email": f"{name}@example.com", "username": name, "password": PASSWORD}


async def new_user(http: aiohttp.ClientSession) -> tuple[int, str]:
    name = unique()
    async with http.post("/api/v1/users", json=registration(name)) as r:
        assert r.status == 201, await r.text()
        return int((await r.json())["id"]), name


# --- X-Forwarded-For across header lines ---------------------------------------------------


async def test_forwarded_for_is_read_across_all_its_header_lines(
    http: aiohttp.ClientSession, edge_url: str, settings: Settings
) -> None:
    _, name = await new_user(http)
    real = fresh_ip()
    # What the client wrote itself, then a line a proxy added: "<client's peer>, <a proxy>".
    headers = CIMultiDict(
        [("X-Forwarded-For", "203.0.113.66"), ("X-Forwarded-For", f"{real}, 127.0.0.1")]
    )
    async with events_of(settings, "user.logged_in") as received:
        async with aiohttp.ClientSession(edge_url) as client:  # no default X-Forwarded-For
            login = {"username": name, "password": PASSWORD}
            async with client.post("/api/v1/auth/login", json=login, headers=headers) as r:
                assert r.status == 200, await r.text()
        delivered = await event_about(received, name)

    assert delivered.event["data"]["client_ip"] == real
