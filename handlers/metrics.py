"""Prometheus metrics of the worker."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "warden_worker_messages_total",
    "RPC messages handled, by queue and outcome (status)",
    ["queue", "status"],
)
REFUSED = Counter(
    "warden_worker_messages_refused_total",
    "Messages refused unworked at the broker boundary, by queue and reason"
    " (reply_to_reserved: a request's reply_to named a Warden queue;"
    " foreign_publisher: an event not published by Warden's broker user;"
    " redelivered_too_often: a request back on a classic RPC queue more often than the limit,"
    " dead-lettered)",
    ["queue", "reason"],
)
HANDLING = Histogram(
    "warden_worker_handling_seconds",
    "Time to handle one RPC message, by queue",
    ["queue"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BCRYPT_QUEUE = Gauge("warden_bcrypt_pool_waiting", "bcrypt calls queued or running in the pool")
OUTBOX_BACKLOG = Gauge("warden_outbox_backlog", "Events committed but not yet published")
OUTBOX_OLDEST = Gauge("warden_outbox_oldest_age_seconds", "Age of the oldest unpublished event")
EVENTS_PUBLISHED = Counter("warden_events_published_total", "Events the relay published")
DEAD_LETTERED = Gauge(
    "warden_dead_lettered_messages",
    "Messages waiting in the dead-letter queue warden.dlq (dead-lettered, not yet replayed)",
)
MAILS = Counter(
    "warden_mails_total",
    "Mail attempts by outcome (sent; failed: a temporary failure, retried unless it was the"
    " last attempt; dead_lettered: to warden.dlq) and kind",
    ["outcome", "kind"],
)
