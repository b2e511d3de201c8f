"""Fault injectors: each breaks one node the way a real incident would, and heals it.

The injected state is exactly what an operator or a buggy component would leave behind (no lab
markers such as iptables comments), so the diagnoser cannot tell a lab fault from a real one.
Every heal is idempotent: healing a healthy node is a no-op, so `heal()` can be called blindly
from a test's finally block.

Add a fault by writing two functions and calling `register` below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubenetdiag.lab.lab import Lab, LabNode

Action = Callable[["Lab", "LabNode"], None]


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    inject: Action
    heal: Action


FAULTS: dict[str, Fault] = {}


def register(fault: Fault) -> Fault:
    FAULTS[fault.name] = fault
    return fault


def _set_ip_forward(value: int) -> Action:
    def action(lab: Lab, node: LabNode) -> None:
        lab.node_exec(node.name, ["sysctl", "-qw", f"net.ipv4.ip_forward={value}"])

    return action


def _insert_reject(lab: Lab, node: LabNode) -> None:
    lab.node_exec(node.name, ["iptables", "-I", "FORWARD", "1", "-j", "REJECT"])


def _delete_rejects(lab: Lab, node: LabNode) -> None:
    # Remove every bare REJECT, not just one: a test may have injected twice. Bounded so a
    # misbehaving iptables cannot loop forever.
    for _ in range(100):
        cp = lab.node_exec(node.name, ["iptables", "-D", "FORWARD", "-j", "REJECT"], check=False)
        if cp.returncode != 0:
            return


register(Fault(
    "ip_forward_disabled",
    "net.ipv4.ip_forward=0: the node stops routing pod traffic to and from other nodes",
    _set_ip_forward(0),
    _set_ip_forward(1),
))
register(Fault(
    "forward_chain_reject",
    "iptables -I FORWARD 1 -j REJECT: forwarded pod traffic is refused with ICMP errors",
    _insert_reject,
    _delete_rejects,
))
register(Fault(
    "node_unreachable",
    "the node's sshd is stopped: ssh to it is refused, the node's network stays healthy",
    lambda lab, node: lab.stop_sshd(node.name),
    lambda lab, node: lab.start_sshd(node.name),
))
