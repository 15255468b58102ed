"""Rules of the RPC wire that the edge writes requests by and the worker reads them by.

Each is written here once: the edge (web/) imports this module as it imports the wire models.
Plain values and pure functions; nothing here does I/O.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import unquote, urlsplit

# A request's body, over HTTP or AMQP; a larger one is a 413 payload_too_large.
MAX_BODY_BYTES = 64 * 1024

# Headers of a request message.
AUTHORIZATION = "authorization"
REQUEST_ID = "x-request-id"
CLIENT_IP = "x-client-ip"  # believed only from the edge's broker user (see handlers.trust)
IDEMPOTENCY_KEY = "idempotency-key"
DEADLINE = "x-deadline"  # epoch milliseconds after which the caller no longer waits
USER_AGENT = "x-user-agent"  # the end user's User-Agent, shown in their session list

# The same headers over HTTP, as the edge reads them (and writes X-Request-ID back).
HTTP_AUTHORIZATION = "Authorization"
HTTP_REQUEST_ID = "X-Request-ID"
HTTP_IDEMPOTENCY_KEY = "Idempotency-Key"
HTTP_USER_AGENT = "User-Agent"
# A request header -> its HTTP name: where an error the worker located is shown over HTTP.
HTTP_NAMES = {
    AUTHORIZATION: HTTP_AUTHORIZATION,
    REQUEST_ID: HTTP_REQUEST_ID,
    IDEMPOTENCY_KEY: HTTP_IDEMPOTENCY_KEY,
}

# A user agent is kept with its session and shown to its user: at most this many characters,
# printable ones only (a NUL, a control character or a lone surrogate is dropped or replaced).
MAX_USER_AGENT = 256
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
IDEMPOTENCY_KEY_PATTERN = r"^[\x20-\x7e]{1,255}$"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
# Every queue and exchange Warden declares is named with this prefix, and no reply is ever
# written to one of them: a caller cannot use the worker to publish into Warden's own queues.
RESERVED_PREFIX = "warden."

# What RabbitMQ clients log in as when the URL names no user.
DEFAULT_BROKER_USER = "guest"


def request_id_or_new(given: object) -> str:
    """The caller's request id if it keeps the contract's pattern, else a new one."""
    if isinstance(given, str) and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def user_agent_text(value: str | None) -> str | None:
    """A user agent as a session keeps it: printable UTF-8, at most MAX_USER_AGENT characters;
    None for none (or nothing printable)."""
    if value is None:
        return None
    text = value.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate becomes "?"
    text = _UNPRINTABLE.sub("", text).strip()[:MAX_USER_AGENT].strip()
    return text or None


def valid_idempotency_key(key: str) -> bool:
    """1-255 printable ASCII characters, as the contract says."""
    return _IDEMPOTENCY_KEY.fullmatch(key) is not None


def reserved(queue: str) -> bool:
    """Whether `queue` is one of Warden's own (a request, audit or dead-letter queue)."""
    return queue.startswith(RESERVED_PREFIX)


def broker_user(amqp_url: str) -> str:
    """The user an AMQP URL logs in as: the one RabbitMQ checks a message's `user_id` against."""
    return unquote(urlsplit(amqp_url).username or "") or DEFAULT_BROKER_USER


def split_nodes(amqp_url: str) -> tuple[str, ...]:
    """The node URLs of a comma-separated WARDEN_AMQP_URL, checked to be one cluster's.

    Every node must be an amqp:// or amqps:// URL with a host, and all must log in alike (same
    scheme, user, password, virtual host and query): a process moves between them as if they
    were one broker. The error names the node by position, never by its URL (it holds the
    password).
    """
    nodes = tuple(part.strip() for part in amqp_url.split(","))
    if not all(nodes):
        raise ValueError("WARDEN_AMQP_URL: an empty node between commas")
    first = None
    for position, node in enumerate(nodes, 1):
        try:
            parts = urlsplit(node)
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            raise ValueError(f"WARDEN_AMQP_URL: node {position} is not a URL") from None
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ValueError(f"WARDEN_AMQP_URL: node {position} is not an amqp:// URL with a host")
        login = (parts.scheme, parts.username, parts.password, parts.path or "/", parts.query)
        if first is None:
            first = login
        elif login != first:
            raise ValueError(
                f"WARDEN_AMQP_URL: node {position} differs from node 1 in scheme, user, password,"
                " virtual host or query; every node must be one cluster's, logged in to alike"
            )
    return nodes


def node_address(node_url: str) -> str:
    """A node's host:port, for logs and readiness (no credentials)."""
    parts = urlsplit(node_url)
    default = 5671 if parts.scheme == "amqps" else 5672
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port or default}"
