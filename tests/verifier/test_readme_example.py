"""The consumer service of verifier/README.md, run as written (only its URLs replaced)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from contract.protocol import broker_user
from tests.support.verifier import KeySetServer, SigningKey
from tests.verifier.test_follower import cloud_event, publish, rfc3339

README = Path(__file__).resolve().parents[2] / "verifier" / "README.md"


def the_example(warden_url: str, amqp_url: str, warden_user: str) -> dict[str, Any]:
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    code = code.replace("web.run_app(app())", "")  # the test runs the app itself
    code = code.replace('"http://127.0.0.1:8080"', repr(warden_url))
    code = code.replace('"amqp://orders:secret@127.0.0.1/"', repr(amqp_url))
    code = code.replace('trusted_publisher="warden"', f"trusted_publisher={warden_user!r}")
    namespace: dict[str, Any] = {}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


async def test_the_readme_consumer_serves_verified_users_and_refuses_revoked_sessions(
    amqp: str,
) -> None:
    key = SigningKey("EdDSA")
    keys = await KeySetServer(key).start()
    try:
        example = the_example(keys.url, amqp, broker_user(amqp))
        app: web.Application = await example["app"]()
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            url = str(server.make_url("/orders"))
            sid = uuid.uuid4().hex
            token = key.sign(sub="7", sid=sid)
            async with aiohttp.ClientSession() as http:
                async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
                    assert (r.status, await r.json()) == (200, {"user": "7"})
                async with http.get(url) as r:
                    assert (r.status, (await r.json())["code"]) == (401, "missing_token")
                # The follower binds its queue as the app starts: until then an event is
                # routed nowhere, so the test says it again until the app refuses the token.
                for _ in range(200):
                    event = cloud_event(sid, rfc3339(time.time() + 60))
                    await publish(amqp, json.dumps(event).encode())
                    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
                        if r.status == 401:
                            assert (await r.json())["code"] == "token_revoked"
                            break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the revoked session was still served")
        finally:
            await server.close()
    finally:
        await keys.close()
