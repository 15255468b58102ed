"""What the edge serves for the console (CONTRACT §9), over plain HTTP: the security headers
on every response, the QR route's answers and refusals, the console's files and nothing
else, and the wheel that ships them. The pages themselves are tested in a browser, in
tests/e2e/test_console.py."""

from __future__ import annotations

import subprocess
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

API = "/api/v1"


@pytest.mark.parametrize(
    "path",
    ["/admin/", "/account/", "/api/v1/docs", "/api/v1/docs/messaging", "/console/admin.js"],
)
async def test_every_console_page_has_a_strict_policy(edge_url: str, path: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(edge_url + path) as r:
        assert r.status == 200
        policy = {
            part.split()[0]: part.split()[1:]
            for part in r.headers["Content-Security-Policy"].split("; ")
        }
        headers = dict(r.headers)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert not any("unsafe" in v or "http" in v for values in policy.values() for v in values)
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


async def test_api_replies_and_errors_carry_the_headers_too(edge_url: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(edge_url + API + "/users") as r:
        assert r.status == 401
        assert r.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]


async def test_the_qr_code_of_an_otpauth_uri_is_an_svg_never_cached(edge_url: str) -> None:
    uri = "otpauth://totp/Warden:alice?secret=JBSWY3DPEHPK3PXP&issuer=Warden"
    async with aiohttp.ClientSession() as http:
        async with http.post(edge_url + "/account/qr", json={"uri": uri}) as r:
            assert r.status == 200, await r.text()
            assert r.content_type == "image/svg+xml"
            assert r.headers["Cache-Control"] == "no-store"
            svg = await r.text()
        assert svg.startswith("<svg")
        assert "<path" in svg
        assert 'viewBox="0 0 ' in svg  # scales with the page, never clipped
        assert "JBSWY3DP" not in svg
        async with http.get(edge_url + "/account/qr", params={"uri": uri}) as r:
            assert r.status == 405  # never a secret in a URL
        for body, status, code in [
            ({"uri": "https://evil.example/"}, 422, "validation_error"),
            ({"uri": "otpauth://totp/" + "a" * 600}, 422, "validation_error"),
            ({"uri": "otpauth://totp/a\x00b"}, 422, "validation_error"),
            (["not", "an", "object"], 422, "validation_error"),
        ]:
            async with http.post(edge_url + "/account/qr", json=body) as r:
                assert (r.status, (await r.json())["code"]) == (status, code), body
        async with http.post(
            edge_url + "/account/qr", data=b"{" * 10, headers={"Content-Type": "application/json"}
        ) as r:
            assert (r.status, (await r.json())["code"]) == (400, "malformed_json")
        async with http.post(
            edge_url + "/account/qr",
            data=b'{"uri": "' + b"x" * 2000 + b'"}',
            headers={"Content-Type": "application/json"},
        ) as r:
            assert (r.status, (await r.json())["code"]) == (413, "payload_too_large")


async def test_the_qr_route_refuses_other_media_and_a_long_streamed_body(edge_url: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"uri": "otpauth://totp/'
        for _ in range(40):
            yield b"x" * 64
        yield b'"}'

    async with aiohttp.ClientSession() as http:
        async with http.post(edge_url + "/account/qr", data=b"otpauth://totp/a") as r:
            assert (r.status, (await r.json())["code"]) == (415, "unsupported_media_type")
        headers = {"Content-Type": "application/json"}
        async with http.post(edge_url + "/account/qr", data=chunks(), headers=headers) as r:
            assert r.request_info.headers.get("Transfer-Encoding") == "chunked"
            assert (r.status, (await r.json())["code"]) == (413, "payload_too_large")


@pytest.mark.parametrize(
    "path",
    ["/console/", "/console/vendor/", "/console/nothing.js", "/console/..%2fconsole.py"],
)
async def test_a_file_the_console_does_not_have_is_a_plain_404(edge_url: str, path: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(edge_url + path) as r:
        assert r.status == 404
        assert r.content_type == "application/problem+json"
        assert (await r.json())["code"] == "not_found"


@pytest.mark.parametrize("path", ["/admin", "/account"])
async def test_a_console_without_its_slash_redirects_to_it(edge_url: str, path: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(edge_url + path, allow_redirects=False) as r,
    ):
        assert (r.status, r.headers["Location"]) == (308, path + "/")


def test_the_wheel_ships_every_console_file(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [str(root / "scripts" / "uv"), "build", "--wheel", "-q", "-o", str(tmp_path)],
        cwd=root,
        check=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("warden-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    static = root / "web" / "console" / "static"
    files = {p.relative_to(root).as_posix() for p in static.rglob("*") if p.is_file()}
    assert len(files) > 10
    assert files <= shipped, sorted(files - shipped)
