"""What the worker believes of a message on the broker, where anything connected may publish.

RabbitMQ vouches for one property only: a message's `user_id`, when set, must be the user of
the connection that published it (the broker closes the publisher's channel otherwise, unless
that user has the `impersonator` tag). Headers, `reply_to` and the body are whatever the
publisher wrote. So:

- `x-client-ip` is believed only from the edge's broker user; any other request is counted,
  for per-address limits, as its publisher (origin_of);
- only events published by Warden's own broker user become audit rows (handlers.events);
- no reply is written to one of Warden's own queues (handlers.rpc, refused_reply_to).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address

from contract import protocol
from domain.model import Origin


@dataclass(frozen=True)
class BrokerUsers:
    """The broker users Warden trusts: its own (workers; events) and its edge's (requests)."""

    warden: str
    edge: str


def header_text(value: object) -> str | None:
    """A header's value as text; None when absent.

    Bytes are read as UTF-8 (pamqp hands over a long string that is not UTF-8 as bytes, and a
    byte array as bytearray). A value of any other type (a number, a table, a list) reads as
    "", which every check refuses: it is present, so it is never mistaken for no header.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return ""


def origin_of(
    publisher: str | None, client_ip: object, edge_user: str, user_agent: object = None
) -> Origin:
    """Where a request came from: the end user's address if the edge said so, else its publisher.

    `publisher` is the message's `user_id` (checked by RabbitMQ); `client_ip` its x-client-ip
    header, which anyone could have written and is believed only from `edge_user`. A request
    without either still has an origin, so leaving the header out never escapes the limit.
    `user_agent` (x-user-agent) is taken from any publisher, cleaned: like a browser's own
    User-Agent it is only what the client says it is, shown to the user and counted nowhere.
    """
    agent = protocol.user_agent_text(header_text(user_agent))
    if publisher == edge_user:
        ip = header_text(client_ip)
        if ip and _is_ip(ip):
            return Origin(client_ip=ip, publisher=publisher, user_agent=agent)
    return Origin(publisher=publisher, user_agent=agent)


def _is_ip(text: str) -> bool:
    """The edge sends an IP address; anything else would only be a broken edge's garbage."""
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


def refused_reply_to(reply_to: str | None) -> bool:
    """Whether a request's `reply_to` names one of Warden's own queues (no reply goes there)."""
    return reply_to is not None and protocol.reserved(reply_to)
