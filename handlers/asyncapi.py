"""The worker's AsyncAPI 3.0 document, generated from the RPC catalogue and the wire models.

AsyncAPI 3.0 rather than 2.6: 3.0 has request/reply (`operation.reply` with a dynamic
`reply_to` address), which is exactly the contract's RPC; 2.6 cannot say what comes back.
FastStream would emit the request side only, so the document is built here from the same
catalogue the subscribers use. `make asyncapi` rewrites asyncapi/asyncapi.json; a test
fails when the committed file differs.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from contract import protocol, wire
from contract.catalog import RPC
from contract.events import EVENT_DATA, CloudEvent
from contract.mail import MAIL_QUEUE, MAIL_RETRY_QUEUE, MailJob
from domain.events import EVENT_TYPES
from handlers.queues import RPC_REDELIVERY_LIMIT

REF = "#/components/schemas/{model}"

REQUEST_HEADERS = {
    "type": "object",
    "properties": {
        protocol.AUTHORIZATION: {"type": "string", "description": "Bearer <access token>"},
        protocol.REQUEST_ID: {
            "type": "string",
            "pattern": protocol.REQUEST_ID_PATTERN,
            "description": "Replaced by a new id when it breaks the pattern.",
        },
        protocol.CLIENT_IP: {
            "type": "string",
            "description": "The end user's address (login limits); believed only when the"
            " message's user_id is the edge's broker user, else the publisher is counted.",
        },
        protocol.IDEMPOTENCY_KEY: {"type": "string", "minLength": 1, "maxLength": 255},
        protocol.DEADLINE: {
            "type": "integer",
            "description": "Epoch ms after which the caller no longer waits (then no work).",
        },
    },
}
EVENT_HEADERS = {
    "type": "object",
    "properties": {"x-request-id": {"type": "string", "description": "As in `requestid`."}},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _reply_schema(reply: type[BaseModel] | None) -> dict[str, Any]:
    data = {"type": "null"} if reply is None else _ref(reply.__name__)
    success = {
        "type": "object",
        "required": ["ok", "data"],
        "properties": {"ok": {"const": True}, "data": data},
    }
    return {"oneOf": [success, _ref("Failure")]}


def _schemas() -> dict[str, Any]:
    models: set[type[BaseModel]] = {wire.Failure, MailJob}
    for spec in RPC.values():
        models.add(spec.request)
        if spec.reply is not None:
            models.add(spec.reply)
    envelopes: dict[type[BaseModel], type[BaseModel]] = {
        data: CloudEvent[data]  # type: ignore[valid-type]
        for data in set(EVENT_DATA.values())
    }
    pairs: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (m, "serialization")
        for m in sorted([*models, *envelopes.values()], key=lambda m: m.__name__)
    ]
    keys, defs = models_json_schema(pairs, ref_template=REF)
    schemas: dict[str, Any] = defs["$defs"]
    for event_type in EVENT_TYPES:
        envelope = envelopes[EVENT_DATA[event_type]]
        generic = keys[(envelope, "serialization")]["$ref"].rsplit("/", 1)[-1]
        schema = json.loads(json.dumps(schemas[generic]))
        schema["properties"]["type"] = {"const": event_type, "type": "string"}
        schema["title"] = f"CloudEvent {event_type}"
        schemas[f"CloudEvent_{event_type.replace('.', '_')}"] = schema
    for envelope in envelopes.values():
        schemas.pop(keys[(envelope, "serialization")]["$ref"].rsplit("/", 1)[-1], None)
    return schemas


def document() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for queue, spec in RPC.items():
        key = queue.replace(".", "_")
        messages[f"{key}_request"] = {
            "name": f"{queue} request",
            "contentType": "application/json",
            "headers": REQUEST_HEADERS,
            "payload": _ref(spec.request.__name__),
            "correlationId": {"location": "$message.header#/correlation_id"},
        }
        messages[f"{key}_reply"] = {
            "name": f"{queue} reply",
            "contentType": "application/json",
            "payload": _reply_schema(spec.reply),
            "correlationId": {"location": "$message.header#/correlation_id"},
        }
        channels[key] = {
            "address": queue,
            "description": (
                f"RPC queue; caller: {spec.caller}. Publish to the default exchange. A"
                " request whose worker dies holding it is worked on at most"
                f" {RPC_REDELIVERY_LIMIT + 1} times, then dead-lettered to warden.dlq, as is"
                " one that expired waiting (counted by the broker's x-delivery-limit on a"
                " quorum queue, the default; by the workers on a classic one,"
                " WARDEN_RPC_QUEUE_TYPE)."
                " A body over"
                f" {protocol.MAX_BODY_BYTES // 1024} KiB is answered 413 unparsed."
            ),
            "messages": {"request": {"$ref": f"#/components/messages/{key}_request"}},
            "bindings": {
                "amqp": {
                    "is": "queue",
                    "queue": {
                        "name": queue,
                        "durable": True,
                        "exclusive": False,
                        "autoDelete": False,
                        "vhost": "/",
                    },
                    "bindingVersion": "0.3.0",
                }
            },
        }
        channels[f"{key}_reply"] = {
            "address": None,
            "description": (
                "The caller's reply_to (direct reply-to or a queue of its own). A request"
                f" whose reply_to names a queue of Warden's own ({protocol.RESERVED_PREFIX}*)"
                " is acknowledged unworked, and no reply is written."
            ),
            "messages": {"reply": {"$ref": f"#/components/messages/{key}_reply"}},
        }
        operations[key] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/request"}],
            "reply": {
                "address": {"location": "$message.header#/reply_to"},
                "channel": {"$ref": f"#/channels/{key}_reply"},
                "messages": [{"$ref": f"#/channels/{key}_reply/messages/reply"}],
            },
        }
    event_messages = {}
    for event_type in EVENT_TYPES:
        key = event_type.replace(".", "_")
        messages[key] = {
            "name": event_type,
            "contentType": "application/cloudevents+json",
            "headers": EVENT_HEADERS,
            "payload": _ref(f"CloudEvent_{key}"),
        }
        event_messages[key] = {"$ref": f"#/components/messages/{key}"}
    channels["warden_events"] = {
        "address": "warden.events",
        "description": (
            "Domain events; the routing key is the event type. At least once. Each names"
            " Warden's broker user as its user_id, which RabbitMQ checks: believe no other."
        ),
        "messages": event_messages,
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": {
                    "name": "warden.events",
                    "type": "topic",
                    "durable": True,
                    "autoDelete": False,
                    "vhost": "/",
                },
                "bindingVersion": "0.3.0",
            }
        },
    }
    for event_type in EVENT_TYPES:
        key = event_type.replace(".", "_")
        operations[f"publish_{key}"] = {
            "action": "send",
            "channel": {"$ref": "#/channels/warden_events"},
            "messages": [{"$ref": f"#/channels/warden_events/messages/{key}"}],
            # Persistent (2): in AMQP bindings 0.3.0 the delivery mode is the operation's.
            "bindings": {
                "amqp": {"cc": [event_type], "deliveryMode": 2, "bindingVersion": "0.3.0"}
            },
        }
    _mail_channel(channels, operations, messages)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Warden",
            "version": "1.0.0",
            "description": "Authentication and user service: RPC queues and domain events.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "development": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": _schemas()},
    }


def _mail_channel(
    channels: dict[str, Any], operations: dict[str, Any], messages: dict[str, Any]
) -> None:
    """warden.mail: private to Warden (the outbox relay publishes, the mailer consumes)."""
    messages["mail_job"] = {
        "name": "mail job",
        "contentType": "application/json",
        "payload": _ref("MailJob"),
    }
    channels["warden_mail"] = {
        "address": MAIL_QUEUE,
        "description": (
            "Private to Warden: mail jobs from the outbox relay to the mailer (CONTRACT §7)."
            " Each job's token is sealed with a key only Warden has; no other service should"
            " be granted read or write on this queue. A job is sent once (de-duplicated on"
            " its id); a temporary SMTP failure waits in"
            f" {MAIL_RETRY_QUEUE} (per-message TTL, doubling backoff) and comes back; after"
            " the last attempt, or at once on a 5xx, it is dead-lettered to warden.dlq. Only"
            " jobs published by Warden's own broker user are worked on."
        ),
        "messages": {"job": {"$ref": "#/components/messages/mail_job"}},
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {
                    "name": MAIL_QUEUE,
                    "durable": True,
                    "exclusive": False,
                    "autoDelete": False,
                    "vhost": "/",
                },
                "bindingVersion": "0.3.0",
            }
        },
    }
    operations["send_mail"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/warden_mail"},
        "messages": [{"$ref": "#/channels/warden_mail/messages/job"}],
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
