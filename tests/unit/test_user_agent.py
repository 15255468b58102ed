"""The user agent a session keeps: from the edge's User-Agent, as x-user-agent, cleaned."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from contract import protocol
from handlers.trust import origin_of
from web.translate import rpc_headers


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("Firefox/140", "Firefox/140"),
        ("  padded  ", "padded"),
        ("nul\x00and\x1bescape\x7f\x85", "nulandescape"),
        ("lone \udc80 surrogate", "lone ? surrogate"),
        ("x" * 300, "x" * protocol.MAX_USER_AGENT),
        ("", None),
        ("\x00\x01 ", None),
        (None, None),
    ],
)
def test_a_user_agent_is_kept_printable_and_bounded(sent: str | None, kept: str | None) -> None:
    assert protocol.user_agent_text(sent) == kept


def test_the_edge_forwards_the_user_agent_and_nothing_when_there_is_none() -> None:
    with_agent = make_mocked_request("GET", "/", headers={"User-Agent": "Phone/1.0\x7f"})
    without = make_mocked_request("GET", "/", headers={})

    assert rpc_headers(with_agent, "rid", ())[protocol.USER_AGENT] == "Phone/1.0"
    assert protocol.USER_AGENT not in rpc_headers(without, "rid", ())


@pytest.mark.parametrize("publisher", ["edge", "some-service"])
def test_any_publishers_user_agent_is_taken_but_only_the_edges_address(publisher: str) -> None:
    origin = origin_of(publisher, "192.0.2.1", "edge", bytearray(b"Agent\xff\x00/1"))

    assert origin.user_agent == "Agent\ufffd/1"
    assert origin.client_ip == ("192.0.2.1" if publisher == "edge" else None)
    assert origin_of(publisher, None, "edge").user_agent is None
