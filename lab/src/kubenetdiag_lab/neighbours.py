"""Fixed link-layer addresses and permanent neighbour entries, for light (large) labs.

The kernel keeps one ARP table for every network namespace, bounded by the root namespace's
net.ipv4.neigh.default.gc_thresh3 (1,024 by default), which the lab never changes: it does not
touch the root namespace. Hundreds of lab nodes, each resolving the client, its peers and its
pods, overflow it: new entries fail ("neighbor table overflow", sendmsg ENOBUFS), and SSH
sessions and pings then fail at random, which a diagnosis would rightly report as faults.
Permanent entries do not count against that bound (Linux 5.1 and later), so a light lab gives
every underlay, bridge and pod interface a fixed address and writes the entries itself, as a
static ARP table would.

    >>> node_mac(7), cni_mac(300), CLIENT_MAC
    ('02:6b:6e:00:00:07', '02:6b:6e:01:01:2c', '02:6b:6e:ff:00:02')
"""

from __future__ import annotations

from kubenetdiag_lab.topology import LabNode, LabPod, Topology

CLIENT_MAC = "02:6b:6e:ff:00:02"  # locally administered, "kn"


def _mac(kind: int, index: int) -> str:
    return f"02:6b:6e:{kind:02x}:{index >> 8:02x}:{index & 0xFF:02x}"


def node_mac(index: int) -> str:
    return _mac(0x00, index)


def cni_mac(index: int) -> str:
    return _mac(0x01, index)


def pod_mac(node_index: int, slot: int) -> str:
    return _mac(0x10 + slot, node_index)


def _permanent(address: str, mac: str, dev: str) -> str:
    return f"neigh replace {address} lladdr {mac} dev {dev} nud permanent"


def client_lines(topology: Topology) -> list[str]:
    """ip-batch lines for the client: its own address, and every node's."""
    return ["link set eth0 address " + CLIENT_MAC,
            *(_permanent(n.address, node_mac(n.index), "eth0") for n in topology.nodes)]


def node_lines(topology: Topology, node: LabNode) -> list[str]:
    """ip-batch lines for a node, after its links exist: its own addresses, and the client,
    every peer and each of its pods."""
    return [
        "link set eth0 address " + node_mac(node.index),
        "link set cni0 address " + cni_mac(node.index),
        _permanent(topology.client_address, CLIENT_MAC, "eth0"),
        *(_permanent(p.address, node_mac(p.index), "eth0") for p in topology.peers(node)),
        *(_permanent(pod.ip, pod_mac(node.index, pod.slot), "cni0")
          for pod in topology.pods_on(node.name)),
    ]


def pod_lines(node: LabNode, pod: LabPod) -> list[str]:
    """ip-batch lines for a pod: its own address, and its gateway's (the node's cni0)."""
    return ["link set eth0 address " + pod_mac(node.index, pod.slot),
            _permanent(node.pod_gateway, cni_mac(node.index), "eth0")]
