"""Refuse to build the lab on a machine whose own networks overlap the lab's.

The lab lives entirely in its own namespaces, so an overlap would not break the machine; the
check exists because an overlap means the machine is (or sits next to) something real using
those ranges, e.g. an actual Kubernetes node with 10.244.0.0/16 pods. A lab mistake there would
send test traffic to real hosts, and diagnoser output would be ambiguous.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kubenetdiag_lab.netns import LabError, run

IPv4Net = ipaddress.IPv4Network


@dataclass(frozen=True)
class Overlap:
    lab_network: IPv4Net
    root_network: IPv4Net
    source: str  # human description of where the root network came from

    def __str__(self) -> str:
        return f"lab network {self.lab_network} overlaps {self.source}"


def _v4(text: str) -> IPv4Net | None:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    return net if isinstance(net, ipaddress.IPv4Network) else None


def find_overlaps(
    lab_networks: Sequence[IPv4Net],
    addrs: Iterable[dict[str, Any]],
    routes: Iterable[dict[str, Any]],
) -> list[Overlap]:
    """Compare lab networks with `ip -j addr` and `ip -j route show table all` output.

    Pure: takes the parsed JSON so it can be tested with any machine's data. Default routes are
    ignored (they cover everything and say nothing about who uses the lab ranges); IPv6 is
    ignored because the lab is IPv4-only.
    """
    candidates: list[tuple[IPv4Net, str]] = []
    for link in addrs:
        ifname = link.get("ifname", "?")
        for info in link.get("addr_info", []):
            if info.get("family") != "inet" or "local" not in info:
                continue
            net = _v4(f"{info['local']}/{info.get('prefixlen', 32)}")
            if net is not None:
                candidates.append((net, f"address {info['local']}/{net.prefixlen} on {ifname}"))
    for route in routes:
        dst = route.get("dst", "")
        if dst in ("", "default"):
            continue
        net = _v4(dst)
        if net is None or net.prefixlen == 0:
            continue
        where = f" dev {route['dev']}" if route.get("dev") else ""
        table = f" table {route['table']}" if route.get("table") else ""
        kind = f"{route['type']} " if route.get("type") not in (None, "unicast") else ""
        candidates.append((net, f"{kind}route {dst}{where}{table}"))
    return [
        Overlap(lab, net, source)
        for lab in lab_networks
        for net, source in candidates
        if lab.overlaps(net)
    ]


def overlap_message(overlaps: Sequence[Overlap]) -> str:
    lines = [
        "refusing to build the lab: the root network namespace already uses its ranges",
        *(f"  - {o}" for o in overlaps),
        "the lab adds nothing to the root namespace, but an overlap means real hosts may use "
        "these ranges; run the lab on a machine (or VM) without them",
    ]
    return "\n".join(lines)


def read_root_state() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read-only snapshot of the root namespace's addresses and routes."""
    addrs = json.loads(run(["ip", "-j", "addr"]).stdout or "[]")
    routes = json.loads(run(["ip", "-j", "route", "show", "table", "all"]).stdout or "[]")
    return addrs, routes


def check_root_namespace(lab_networks: Sequence[IPv4Net]) -> None:
    addrs, routes = read_root_state()
    overlaps = find_overlaps(lab_networks, addrs, routes)
    if overlaps:
        raise LabError(overlap_message(overlaps))
