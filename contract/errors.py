"""Transport errors: refusals of a request's form, raised by the edge or the worker, never by
a use case.

Business facts (a taken email, a wrong password, a revoked token) and the failures of a
dependency stay in domain/errors.py; these are about how a request was sent: its encoding,
size, media type, route, or Idempotency-Key. Each carries its contract code and status once,
as the domain's do.
"""

from __future__ import annotations

from contract import protocol
from contract.protocol import MAX_BODY_BYTES
from domain.errors import FieldError, ValidationFailed, WardenError


class MalformedJson(WardenError):
    """An HTTP body that is not JSON."""

    status = 400
    code = "malformed_json"
    title = "Malformed JSON"
    default_detail = "The request body is not valid UTF-8 JSON."


class MalformedMessage(ValidationFailed):
    """An AMQP message whose body is not JSON."""

    code = "malformed_message"
    title = "Malformed message"
    default_detail = "The message body is not valid UTF-8 JSON."

    def __init__(self, detail: str | None = None) -> None:
        detail = detail or self.default_detail
        super().__init__([FieldError(("body",), detail, "json_invalid")], detail)


class UnsupportedMediaType(WardenError):
    """The HTTP body has a content type the route does not take."""

    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"
    default_detail = "The request body must be application/json."


class UnsupportedGrantType(WardenError):
    """An OAuth 2.0 form with a grant type the endpoint does not take."""

    status = 400
    code = "unsupported_grant_type"
    title = "Unsupported grant type"
    default_detail = "This endpoint does not take this grant_type."


class PayloadTooLarge(WardenError):
    """The request body is over the limit."""

    status = 413
    code = "payload_too_large"
    title = "Payload too large"
    default_detail = f"The request body is larger than {MAX_BODY_BYTES // 1024} KiB."


class NotFound(WardenError):
    """No such route."""

    status = 404
    code = "not_found"
    title = "Not found"
    default_detail = "There is nothing at this path."


class MethodNotAllowed(WardenError):
    """The route exists but not with this method."""

    status = 405
    code = "method_not_allowed"
    title = "Method not allowed"
    default_detail = "This method is not allowed on this path."


class InvalidIdempotencyKey(ValidationFailed):
    """An Idempotency-Key that is not 1-255 printable ASCII characters (a 422 like any)."""

    def __init__(self, header: str = protocol.IDEMPOTENCY_KEY) -> None:
        msg = "Idempotency-Key must be 1-255 printable ASCII characters"
        super().__init__([FieldError(("header", header), msg, "value_error")])


class IdempotencyKeyReused(ValidationFailed):
    """The idempotency key was used before with a different body."""

    code = "idempotency_key_reused"
    title = "Idempotency key reused"
    default_detail = "This Idempotency-Key was used with a different request body."

    def __init__(self, detail: str | None = None) -> None:
        detail = detail or self.default_detail
        # The header as an RPC caller names it; the edge says Idempotency-Key over HTTP.
        super().__init__(
            [FieldError(("header", protocol.IDEMPOTENCY_KEY), detail, self.code)], detail
        )


class IdempotencyKeyInUse(WardenError):
    """A request with this idempotency key is still being worked on."""

    status = 409
    code = "idempotency_key_in_use"
    title = "Idempotency key in use"
    default_detail = "A request with this Idempotency-Key is still in progress."


def every_error() -> list[type[WardenError]]:
    """Every error Warden can answer with, the domain's and these, each class once."""
    found: list[type[WardenError]] = []
    pending: list[type[WardenError]] = [WardenError]
    while pending:
        error = pending.pop(0)
        found.append(error)
        pending.extend(e for e in error.__subclasses__() if e not in found)
    return found
