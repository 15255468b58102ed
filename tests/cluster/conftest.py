"""A real three-node RabbitMQ cluster for this session (scripts/rabbit-cluster.sh).

Started once per run if it is not up already, and taken down at the end only if this session
started it (WARDEN_CLUSTER_KEEP=1 leaves it up for the next run: an up/down is about 45 s).
Needs root and the machine's rabbitmq-server, as the script does. The suite is marked
`cluster`: `make test-cluster` runs it, the default `make test` does not.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "rabbit-cluster.sh"
NODES = (1, 2, 3)
PORT_BASE = 5680  # node N listens on 5680 + N


def script(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def ctl(node: int, *args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", "-n", f"rc{node}@localhost", *args],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout


@dataclass(frozen=True)
class Cluster:
    """The running cluster: its nodes' URLs on one vhost of this session's."""

    vhost: str

    def url(self, node: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{PORT_BASE + node}/{self.vhost}"

    @property
    def amqp_url(self) -> str:
        """WARDEN_AMQP_URL naming all three nodes."""
        return ",".join(self.url(n) for n in NODES)

    def pid(self, node: int) -> int:
        return int(script("pid", str(node)).stdout.strip())

    def kill(self, node: int) -> None:
        os.kill(self.pid(node), 9)

    def start(self, node: int) -> None:
        done = script("start", str(node))
        assert done.returncode == 0, f"node rc{node} did not start again: {done.stderr}"

    def all_running(self) -> bool:
        return script("status", timeout=60).returncode == 0

    def leader(self, queue: str, ask: int) -> int:
        """The number of the node that leads quorum queue `queue` (asking node `ask`)."""
        out = ctl(ask, "list_queues", "-p", self.vhost, "name", "leader", "--formatter", "json")
        for row in json.loads(out):
            if row["name"] == queue:
                return int(str(row["leader"]).removeprefix("rc").partition("@")[0])
        raise AssertionError(f"no queue {queue} on the cluster")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.fail("the cluster suite needs root: scripts/rabbit-cluster.sh runs the nodes")
    started = False
    if script("status", timeout=60).returncode != 0:
        script("down")  # whatever is left of an earlier run
        up = script("up", timeout=300)
        assert up.returncode == 0, f"the cluster did not come up:\n{up.stdout}\n{up.stderr}"
        started = True
    vhost = f"warden_cluster_{uuid.uuid4().hex[:8]}"
    ctl(1, "add_vhost", vhost)
    ctl(1, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield Cluster(vhost)
    finally:
        if started and os.environ.get("WARDEN_CLUSTER_KEEP") != "1":
            script("down")
        else:
            for node in NODES:  # any live node will do
                try:
                    ctl(node, "delete_vhost", vhost)
                    break
                except subprocess.CalledProcessError:
                    continue
