"""The narrow interface cni, services and faults use to run commands in a lab namespace.

A runner stands for one place: a node (its network namespace, and for `shell` its own mount
and PID namespaces too), a pod, or the client, switch or outside namespace. Callers get one
from `Runners` and never see the Lab object, its processes or its lifecycle.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from kubenetdiag_lab import nodehost
from kubenetdiag_lab.errors import LabError
from kubenetdiag_lab.netns import exec_argv, run
from kubenetdiag_lab.topology import LabNode, Topology

Completed = subprocess.CompletedProcess[str]


class CommandRunner(Protocol):
    def run(self, argv: Sequence[str], *, check: bool = True, input: str | None = None,
            timeout: float | None = 30.0, env: dict[str, str] | None = None) -> Completed:
        """Run argv in this place's network namespace, output captured as text."""
        ...


class NodeCommandRunner(CommandRunner, Protocol):
    def shell(self, script: str, *, check: bool = True, timeout: float = 30.0) -> Completed:
        """Run a bash script inside the node: what an SSH session on it would see."""
        ...


@dataclass(frozen=True)
class NetnsRunner:
    """Commands in one named network namespace (`ip netns exec`)."""

    netns: str

    def argv(self, argv: Sequence[str]) -> list[str]:
        """argv wrapped to run in the namespace, for callers that start it themselves."""
        return exec_argv(self.netns, argv)

    def run(self, argv: Sequence[str], *, check: bool = True, input: str | None = None,
            timeout: float | None = 30.0, env: dict[str, str] | None = None) -> Completed:
        return run(self.argv(argv), check=check, input=input, timeout=timeout, env=env)


@dataclass(frozen=True)
class NodeRunner(NetnsRunner):
    """A node: `run` in its network namespace, `shell` inside its init's namespaces."""

    node: str
    # The Lab's live table of node inits (node name -> PID 1 of its PID namespace), read at
    # call time: the inits start after the runners are handed out and die at `down`.
    init_pids: Mapping[str, int]

    def init_pid(self) -> int:
        pid = self.init_pids.get(self.node)
        if pid is None or not nodehost.is_init(pid):
            raise LabError(f"{self.node}'s node init is not running (was the lab torn down?)")
        return pid

    def shell(self, script: str, *, check: bool = True, timeout: float = 30.0) -> Completed:
        return nodehost.node_sh(self.init_pid(), script, check=check, timeout=timeout)


@dataclass(frozen=True)
class Runners:
    """Hands out a runner per place of one lab."""

    topology: Topology
    init_pids: Mapping[str, int]

    def node(self, node: LabNode | str) -> NodeRunner:
        target = self.topology.node(node if isinstance(node, str) else node.name)
        return NodeRunner(target.netns, target.name, self.init_pids)

    def pod(self, pod: str) -> NetnsRunner:
        """A pod by name, netns or IP."""
        return NetnsRunner(self.topology.pod(pod).netns)

    @property
    def client(self) -> NetnsRunner:
        return NetnsRunner(self.topology.client_netns)

    @property
    def switch(self) -> NetnsRunner:
        return NetnsRunner(self.topology.switch_netns)

    @property
    def outside(self) -> NetnsRunner:
        return NetnsRunner(self.topology.outside_netns)
