"""The verifier library's tests: a RabbitMQ vhost of their own (the library needs no Warden)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.infra import base_urls, own_vhost


@pytest.fixture(scope="session")
def amqp() -> Iterator[str]:
    with base_urls() as base, own_vhost(base.amqp, prefix="verifier_test") as url:
        yield url
