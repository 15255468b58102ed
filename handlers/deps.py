"""What the subscribers of every area are built from: the use cases, the probes, the worker's
settings for its queues."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from faststream.rabbit import RabbitRouter

from contract.catalog import RPC
from domain.accounts import Accounts
from domain.auth import Auth
from domain.listing import CursorCodec
from domain.mfa import SecondFactor
from domain.recovery import Recovery
from domain.sessions import Sessions
from handlers.background import Background
from handlers.envelope import RequestUnits, UseCase
from handlers.idempotency import Idempotency, Replay
from handlers.queues import RpcQueueType
from handlers.rpc import RedeliveryCounter, rpc

Probe = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class WorkerDeps:
    """What the subscribers call: the use cases and the health probes."""

    auth: Auth
    accounts: Accounts
    mfa: SecondFactor
    recovery: Recovery
    sessions: Sessions
    cursors: CursorCodec
    probes: dict[str, Probe]
    prefetch: int
    login_prefetch: int
    edge_user: str  # the broker user whose x-client-ip is believed
    units: RequestUnits  # opens units of work; each request binds its own (see Call)
    idempotency: Idempotency | None = None
    jwks: Callable[[], dict[str, Any]] = lambda: {"keys": []}  # the published key set
    node: Callable[[], str | None] | None = None  # host:port of the broker node it is on
    background: Background = field(default_factory=Background)  # work after the reply
    rpc_queue_type: RpcQueueType = "quorum"
    redeliveries: RedeliveryCounter | None = None  # counts them on classic RPC queues

    def rpc(
        self,
        router: RabbitRouter,
        queue: str,
        *,
        bcrypt: bool = False,
        reply: Callable[[Any], Any] | None = None,
        changes: bool = False,
        replay: Replay | None = None,
    ) -> Callable[[UseCase], UseCase]:
        """`handlers.rpc.rpc` with this worker's prefetch and idempotency.

        `bcrypt` queues get the smaller prefetch: their messages wait for the hash pool.
        Idempotency-Keys are honoured on the queues the catalogue says.
        """
        prefetch = self.login_prefetch if bcrypt else self.prefetch
        idempotency = self.idempotency if RPC[queue].idempotent else None
        return rpc(
            router,
            queue,
            prefetch,
            self.edge_user,
            self.units,
            idempotency,
            reply,
            replay,
            changes,
            self.rpc_queue_type,
            self.redeliveries if self.rpc_queue_type == "classic" else None,
        )
