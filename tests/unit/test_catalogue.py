"""The catalogue is the one table of queues: the edge's routes and its OpenAPI document
follow it."""

from __future__ import annotations

from typing import Any

import pytest

from contract.catalog import RPC
from contract.errors import MalformedMessage, PayloadTooLarge
from contract.routes import ID, ROUTES, SID, Route
from domain.errors import EmailTaken, Forbidden, LastSuperuser, MissingToken, UserNotFound
from web.openapi import openapi_document

DOCUMENT = openapi_document()


def operation(route: Route) -> dict[str, Any]:
    path = route.path.replace(ID, "{id}").replace(SID, "{sid}")
    op: dict[str, Any] = DOCUMENT["paths"][path][route.method.lower()]
    return op


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.queue)
def test_each_route_documents_every_error_its_queue_may_answer(route: Route) -> None:
    responses = operation(route)["responses"]
    over_http = set(RPC[route.queue].errors) - {MalformedMessage, PayloadTooLarge}

    for error in over_http:
        assert f"`{error.code}`" in responses[str(error.status)]["description"], error


def test_the_table_is_the_catalogues_not_a_guess_per_method() -> None:
    delete = next(r for r in ROUTES if r.queue == "warden.users.delete")
    me = next(r for r in ROUTES if r.queue == "warden.users.me")

    assert LastSuperuser in RPC[delete.queue].errors
    assert "409" in operation(delete)["responses"]  # not a POST, yet it may conflict
    assert "403" not in operation(me)["responses"]  # a bearer route no right is checked on
    assert {"401", "403", "404"} <= set(operation(delete)["responses"])


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.queue)
def test_a_route_asks_for_a_token_exactly_when_its_queue_does(route: Route) -> None:
    spec = RPC[route.queue]

    assert ("security" in operation(route)) == spec.bearer == (MissingToken in spec.every_error)


def test_every_queue_may_fail_as_any_request_does_and_lists_each_error_once() -> None:
    for queue, spec in RPC.items():
        assert len(set(spec.every_error)) == len(spec.every_error), queue
        assert MalformedMessage in spec.every_error
    assert Forbidden in RPC["warden.users.get"].every_error
    assert {EmailTaken, UserNotFound} <= set(RPC["warden.users.update"].every_error)
