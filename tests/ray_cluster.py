"""A real multi-node Ray cluster on this machine, in its own process, driven line by line on stdin. The tests start
it with :class:`ClusterProcess`; each node is a separate raylet with its own resources, as on separate machines.

Protocol (one JSON object per line on stdout, answering each command):
  start            -> {"address": "127.0.0.1:PORT", "head": NODE_ID}   (printed on start-up)
  add CPUS         -> {"node": NODE_ID}       a worker node with CPUS logical CPUs, alive when answered
  remove NODE_ID   -> {"removed": NODE_ID}    the node's processes killed at once, as when a machine is lost
  quit             -> the cluster shuts down and the process exits
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile


def serve() -> None:
    from ray.cluster_utils import Cluster

    # Node loss is noticed within about a second (Ray's default takes ~30 s of missed health checks).
    system_config = {"health_check_period_ms": 200, "health_check_failure_threshold": 5, "health_check_timeout_ms": 500}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": system_config},
    )
    nodes = {}
    reply({"address": cluster.address, "head": cluster.head_node.node_id})
    for line in sys.stdin:
        command, *args = line.split()
        if command == "add":
            node = cluster.add_node(num_cpus=int(args[0]))
            cluster.wait_for_nodes()
            nodes[node.node_id] = node
            reply({"node": node.node_id})
        elif command == "remove":
            cluster.remove_node(nodes.pop(args[0]), allow_graceful=False)
            reply({"removed": args[0]})
        elif command == "quit":
            break
    cluster.shutdown()


def reply(message: dict) -> None:
    print(json.dumps(message), flush=True)


class ClusterProcess:
    """Start the cluster (a head with no CPUs, so every task and actor runs on a worker node) in a subprocess.

    Its Ray temp folder is private, so the "current cluster" file Ray leaves for ``ray.init()`` does not point other
    tests' Ray at it."""

    def __init__(self) -> None:
        self.temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths have a length limit
        env = {**os.environ, "RAY_TMPDIR": self.temp}
        self.proc = subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        started = self.read()
        self.address, self.head = started["address"], started["head"]

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Ray cluster process ended (exit code {self.proc.wait()})")
        return json.loads(line)

    def send(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def add_node(self, cpus: int) -> str:
        return self.send(f"add {cpus}")["node"]

    def remove_node(self, node_id: str) -> None:
        self.send(f"remove {node_id}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        subprocess.run(["rm", "-rf", self.temp], check=False)


if __name__ == "__main__":
    serve()
