"""The fact contract: a flat, serializable record every stage after parsing works on."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter
from typing import Any

Scalar = str | int | float | bool | None

EXCERPT_LIMIT = 2000  # characters of raw output kept with each fact as evidence


# slots: a 5,000-node cluster has about a million facts, each with a Source; without a
# per-instance __dict__ each pair is ~200 bytes smaller.
@dataclass(frozen=True, slots=True)
class Source:
    """Where a fact came from: probe, command, exit code, and the raw lines behind it."""

    probe: str
    command: str = ""
    exit_code: int | None = None
    excerpt: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "command": self.command,
            "exit_code": self.exit_code,
            "excerpt": self.excerpt,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Source:
        return cls(
            probe=str(d.get("probe", "")),
            command=str(d.get("command", "")),
            exit_code=d.get("exit_code"),
            excerpt=str(d.get("excerpt", ""))[:EXCERPT_LIMIT],
        )


@dataclass(slots=True)
class Fact:
    """`kind`, `node` (inventory name or "cluster"), typed scalar `attrs`, and `source`."""

    kind: str
    node: str
    attrs: dict[str, Scalar] = field(default_factory=dict)
    source: Source | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "node": self.node, "attrs": dict(self.attrs)}
        if self.source is not None:
            d["source"] = self.source.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fact:
        src = d.get("source")
        return cls(
            kind=str(d["kind"]),
            node=str(d["node"]),
            attrs=dict(d.get("attrs") or {}),
            source=Source.from_dict(src) if isinstance(src, dict) else None,
        )


def excerpt(text: str, limit: int = EXCERPT_LIMIT) -> str:
    """Cut raw output to a size a report can carry, saying so when it was cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... ({len(text) - limit} more characters in the bundle)"


def by_kind(facts: Sequence[Fact], kinds: Iterable[str]) -> dict[str, list[Fact]]:
    """The facts of each of these kinds, in their order, from one walk over `facts`.

    At 5,000 nodes `facts` holds a million objects and each walk over it costs about 0.2 s in
    memory traffic alone, so callers that need several kinds take them in one walk, which runs
    in C.
    """
    out: dict[str, list[Fact]] = {k: [] for k in kinds}
    for f in compress(facts, map(out.__contains__, map(attrgetter("kind"), facts))):
        out[f.kind].append(f)
    return out


def interface_ips(addresses: object) -> set[str]:
    """The bare addresses of an interface's `addresses` attribute ("10.0.0.1/24,10.0.0.9/32")."""
    if not isinstance(addresses, str):
        return set()
    return {a.strip().split("/", 1)[0] for a in addresses.split(",") if a.strip()}


def overlay_devices(ifaces: Iterable[dict], route_devs: Iterable[object]) -> list[dict]:
    """A node's VXLAN devices that carry its pods' traffic, best first: those the routes of its
    main table go out of (`route_devs`: each such route's device), most routes first; without
    any, the ones that are up. A device no route uses beside one that routes is left over (an
    old CNI's, or flannel's flannel.1 after flanneld was started on another VNI, which it
    names flannel.<VNI>).

    >>> devs = [{"name": "flannel.1", "kind": "vxlan", "admin_up": True},
    ...         {"name": "flannel.2", "kind": "vxlan", "admin_up": True}]
    >>> [d["name"] for d in overlay_devices(devs, ["flannel.2", "flannel.2", "eth0"])]
    ['flannel.2']
    >>> [d["name"] for d in overlay_devices(devs, [])]
    ['flannel.1', 'flannel.2']
    """
    vxlan = [i for i in ifaces if i.get("kind") == "vxlan"]
    uses: dict[object, int] = {}
    for dev in route_devs:
        uses[dev] = uses.get(dev, 0) + 1
    routed = sorted((i for i in vxlan if uses.get(i.get("name"))),
                    key=lambda i: -uses[i.get("name")])
    return routed or [i for i in vxlan if i.get("admin_up") is not False]
