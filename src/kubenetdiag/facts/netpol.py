"""Kubernetes NetworkPolicy semantics (networking.k8s.io/v1), as pure functions over plain dicts.

Given the policies as the API returns them, the two ends of a flow and its port, say whether
the flow is allowed, which side denies it and which policies decide. The semantics:

* A pod is isolated for ingress (egress) when some policy of its namespace selects it
  (`spec.podSelector`, `{}` = every pod there) and has Ingress (Egress) in its policyTypes.
  policyTypes, when not given, is Ingress, plus Egress when the policy has egress rules (the
  API server writes that default on create; hand-made bundles may lack it).
* An isolated side allows exactly what the union of the rules of the policies isolating it
  allows. No rules (`ingress: []`, or no `ingress` at all) = deny all; a rule `{}`, or one
  without `from`/`to`, matches every peer; a rule without `ports` matches every port.
* A peer is a podSelector (pods of the policy's namespace), a namespaceSelector (every pod of
  the namespaces it selects), both in one peer (pods matching the podSelector inside the
  namespaces matching the namespaceSelector: AND, not OR), or an ipBlock (cidr minus except).
  Selectors: matchLabels AND matchExpressions with In, NotIn (a missing key passes),
  Exists, DoesNotExist.
* Ports: protocol (default TCP), port (a number, or a name resolved against the destination
  pod's container ports of that protocol: a name matches nothing outside the cluster), and
  endPort for a range. A flow without a port (ICMP ping) matches only rules without ports.
* A flow is allowed only if the source's egress AND the destination's ingress allow it.
  hostNetwork pods and addresses outside the pod network (nodes, the diagnoser's client, an
  endpoint) are never isolated, and are matched by ipBlock only. Traffic from the node a pod
  runs on to the pod is always allowed, and so is a pod's traffic to itself; the pod's own
  traffic to its node is its egress like any other.

ipBlock against pod addresses is left open by the specification (it says to use it for
addresses outside the cluster); most implementations (iptables-based ones, Calico) match a
pod's address like any other, and so does this evaluator.

A node's own traffic to a pod on another node leaves with an address this code cannot know
(the node's, or its tunnel device's after encapsulation): pass `ip=None`, and a verdict that
would depend on an ipBlock is `unknown` rather than guessed.

Malformed input (a wrong type, an unknown operator) raises `PolicyError` from `check_policy`;
callers check every policy first and leave out, and name, the ones that fail.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["ingress", "egress"]
PROTOCOLS = ("TCP", "UDP", "SCTP")
# Set by the API server on every namespace (Kubernetes >= 1.21) and immutable: when the
# namespaces could not be listed, a namespaceSelector on it still answers.
NAME_LABEL = "kubernetes.io/metadata.name"


class PolicyError(ValueError):
    """A policy whose shape the API would not have accepted: it cannot be evaluated."""


@dataclass(frozen=True)
class Peer:
    """One end of a flow. `namespace` is None for anything that is not a pod subject to
    policies (a node, a hostNetwork pod, an address outside the cluster)."""

    ip: str | None
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    ns_labels: Mapping[str, str] = field(default_factory=dict)
    # container ports: (name, number, protocol), for named ports on the destination
    ports: tuple[tuple[str, int, str], ...] = ()
    node: str | None = None  # the node a pod runs on, or the node a node address belongs to
    name: str | None = None  # the pod's or node's name, for identity (a pod to itself)

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None


@dataclass(frozen=True)
class Side:
    """What one side (the source's egress or the destination's ingress) says."""

    isolated: bool
    allowed: bool | None  # None: it depends on an address that is not known
    isolating: tuple[str, ...] = ()  # ns/name of the policies that select this side
    allowing: tuple[str, ...] = ()  # of those, the ones with a rule matching the flow


@dataclass(frozen=True)
class Verdict:
    allowed: bool | None  # None: unknown (an ipBlock decides and the address is not known)
    egress: Side
    ingress: Side

    @property
    def denied_on(self) -> str:
        """ingress, egress, both, or "" when nothing denies."""
        sides = [d for d, s in (("egress", self.egress), ("ingress", self.ingress))
                 if s.allowed is False]
        return "both" if len(sides) == 2 else (sides[0] if sides else "")

    @property
    def isolating(self) -> tuple[str, ...]:
        """The policies selecting the side(s) that deny, or every isolating one if none."""
        denying = [s for s in (self.egress, self.ingress) if s.allowed is False]
        sides = denying or [self.egress, self.ingress]
        return tuple(sorted({p for s in sides for p in s.isolating}))

    @property
    def allowing(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.egress.allowing) | set(self.ingress.allowing)))


OPEN = Side(False, True)


# ---------------------------------------------------------------- validation


def _need(cond: bool, why: str) -> None:
    if not cond:
        raise PolicyError(why)


def _check_selector(sel: Any, where: str) -> None:
    _need(isinstance(sel, dict), f"{where} is not an object")
    labels = sel.get("matchLabels")
    _need(labels is None or (isinstance(labels, dict)
                             and all(isinstance(v, str | int | bool) for v in labels.values())),
          f"{where}.matchLabels is not a map of strings")
    exprs = sel.get("matchExpressions")
    _need(exprs is None or isinstance(exprs, list), f"{where}.matchExpressions is not a list")
    for e in exprs or []:
        _need(isinstance(e, dict) and isinstance(e.get("key"), str),
              f"{where}.matchExpressions has an entry without a key")
        op = e.get("operator")
        _need(op in ("In", "NotIn", "Exists", "DoesNotExist"),
              f"{where}.matchExpressions operator {op!r} is not In, NotIn, Exists or "
              "DoesNotExist")
        values = e.get("values")
        if op in ("In", "NotIn"):
            _need(isinstance(values, list) and values != [],
                  f"{where}.matchExpressions {op} needs a list of values")


def _check_peer(peer: Any, where: str) -> None:
    _need(isinstance(peer, dict), f"{where} is not an object")
    block = peer.get("ipBlock")
    for key in ("podSelector", "namespaceSelector"):
        if peer.get(key) is not None:
            _need(block is None, f"{where} has ipBlock together with {key}")
            _check_selector(peer[key], f"{where}.{key}")
    if block is not None:
        _need(isinstance(block, dict), f"{where}.ipBlock is not an object")
        try:
            ipaddress.ip_network(str(block.get("cidr")), strict=False)
            for e in block.get("except") or []:
                ipaddress.ip_network(str(e), strict=False)
        except (ValueError, TypeError) as exc:
            raise PolicyError(f"{where}.ipBlock: {exc}") from None
        _need(isinstance(block.get("except") or [], list), f"{where}.ipBlock.except is not a list")


def _check_port(port: Any, where: str) -> None:
    _need(isinstance(port, dict), f"{where} is not an object")
    proto = port.get("protocol")
    _need(proto is None or proto in PROTOCOLS, f"{where}.protocol {proto!r} is not TCP/UDP/SCTP")
    number = port.get("port")
    _need(number is None or (isinstance(number, str) and number != "")
          or (isinstance(number, int) and not isinstance(number, bool)),
          f"{where}.port is neither a number nor a name")
    end = port.get("endPort")
    _need(end is None or (isinstance(end, int) and isinstance(number, int) and end >= number),
          f"{where}.endPort needs a numeric port no greater than it")


def check_policy(policy: Any) -> None:
    """Raise PolicyError when `policy` cannot be evaluated as the API defines it."""
    _need(isinstance(policy, dict), "the policy is not an object")
    spec = policy.get("spec")
    _need(isinstance(spec, dict), "spec is missing or not an object")
    if spec.get("podSelector") is not None:
        _check_selector(spec["podSelector"], "spec.podSelector")
    types = spec.get("policyTypes")
    _need(types is None or (isinstance(types, list) and all(t in ("Ingress", "Egress")
                                                            for t in types)),
          "spec.policyTypes is not a list of Ingress/Egress")
    for key, peers in (("ingress", "from"), ("egress", "to")):
        rules = spec.get(key)
        _need(rules is None or isinstance(rules, list), f"spec.{key} is not a list")
        for i, rule in enumerate(rules or []):
            where = f"spec.{key}[{i}]"
            _need(isinstance(rule, dict), f"{where} is not an object")
            _need(isinstance(rule.get(peers) or [], list), f"{where}.{peers} is not a list")
            _need(isinstance(rule.get("ports") or [], list), f"{where}.ports is not a list")
            for j, peer in enumerate(rule.get(peers) or []):
                _check_peer(peer, f"{where}.{peers}[{j}]")
            for j, port in enumerate(rule.get("ports") or []):
                _check_port(port, f"{where}.ports[{j}]")


# ---------------------------------------------------------------- matching


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector against a label map; `{}` matches everything. (A missing selector is
    the caller's business: its meaning depends on where it stands.)"""
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if k not in labels or str(labels[k]) != str(v):
            return False
    for e in selector.get("matchExpressions") or []:
        key, op = e["key"], e["operator"]
        values = {str(v) for v in e.get("values") or []}
        present = key in labels
        if op == "In" and not (present and str(labels[key]) in values):
            return False
        if op == "NotIn" and present and str(labels[key]) in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def policy_types(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The directions a policy isolates, with the API's defaulting applied."""
    given = spec.get("policyTypes")
    if given:
        return tuple(str(t) for t in given)
    return ("Ingress", "Egress") if spec.get("egress") else ("Ingress",)


def _policy_id(policy: Mapping[str, Any]) -> str:
    meta = policy.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or '?'}"


def selects(policy: Mapping[str, Any], pod: Peer) -> bool:
    """Whether the policy's podSelector picks this pod (a pod of its namespace)."""
    if not pod.is_pod:
        return False
    meta = policy.get("metadata") or {}
    if (meta.get("namespace") or "") != pod.namespace:
        return False
    return selector_matches(policy["spec"].get("podSelector") or {}, pod.labels)


def _in_block(block: Mapping[str, Any], ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
        if addr not in ipaddress.ip_network(str(block["cidr"]), strict=False):
            return False
        return not any(addr in ipaddress.ip_network(str(e), strict=False)
                       for e in block.get("except") or [])
    except (ValueError, TypeError):
        return False  # an IPv6 pod against an IPv4 block and the like: no match


def peer_matches(peer: Mapping[str, Any], policy_ns: str, other: Peer) -> bool | None:
    """Whether a rule's peer entry matches the other end of the flow; None when it is an
    ipBlock and the other end's address is not known."""
    block = peer.get("ipBlock")
    if block is not None:
        return None if other.ip is None else _in_block(block, other.ip)
    pods, nss = peer.get("podSelector"), peer.get("namespaceSelector")
    if pods is None and nss is None:
        return True  # an empty peer: the API rejects it; read as "any", like an empty rule
    if not other.is_pod:
        return False  # selectors select pods; nodes and outside addresses only by ipBlock
    # no namespaceSelector: the policy's own namespace; with one: the namespaces it selects
    in_ns = (other.namespace == policy_ns if nss is None
             else selector_matches(nss, other.ns_labels))
    return in_ns and selector_matches(pods or {}, other.labels)


def port_matches(port: Mapping[str, Any], dport: int | None, protocol: str,
                 dst: Peer) -> bool:
    if dport is None or protocol not in PROTOCOLS:
        return False  # ICMP and the like: only a rule without ports lets it through
    if str(port.get("protocol") or "TCP") != protocol:
        return False
    number = port.get("port")
    if number is None:
        return True  # every port of the protocol
    if isinstance(number, str) and not number.isdigit():
        # a named port means the destination pod's container port of that name and protocol
        return any(n == number and p == protocol and num == dport for n, num, p in dst.ports)
    low = int(number)
    high = port.get("endPort") or low
    return low <= dport <= int(high)


def _any3(values: Iterable[bool | None]) -> bool | None:
    """Three-valued OR: True if any is True, None if any is unknown, else False."""
    unknown = False
    for v in values:
        if v is True:
            return True
        unknown = unknown or v is None
    return None if unknown else False


def _rule_matches(rule: Mapping[str, Any], key: str, policy_ns: str, other: Peer,
                  dport: int | None, protocol: str, dst: Peer) -> bool | None:
    ports = rule.get("ports") or []
    if ports and not any(port_matches(p, dport, protocol, dst) for p in ports):
        return False
    peers = rule.get(key) or []
    if not peers:
        return True
    return _any3(peer_matches(p, policy_ns, other) for p in peers)


def side(policies: Sequence[Mapping[str, Any]], direction: Direction, pod: Peer, other: Peer,
         dport: int | None, protocol: str, dst: Peer) -> Side:
    """What the policies selecting `pod` say about the flow in one direction; `other` is the
    far end, `dst` the destination (whose container ports name ports)."""
    if not pod.is_pod:
        return OPEN
    kind = "Ingress" if direction == "ingress" else "Egress"
    key, peers = (("ingress", "from") if direction == "ingress" else ("egress", "to"))
    isolating, allowing, unknown = [], [], False
    for p in policies:
        if kind not in policy_types(p["spec"]) or not selects(p, pod):
            continue
        isolating.append(_policy_id(p))
        verdict = _any3(_rule_matches(r, peers, pod.namespace or "", other, dport, protocol, dst)
                        for r in p["spec"].get(key) or [])
        if verdict:
            allowing.append(_policy_id(p))
        unknown = unknown or verdict is None
    if not isolating:
        return OPEN
    allowed: bool | None = True if allowing else (None if unknown else False)
    return Side(True, allowed, tuple(sorted(isolating)), tuple(sorted(allowing)))


def evaluate(policies: Sequence[Mapping[str, Any]], src: Peer, dst: Peer,
             dport: int | None, protocol: str = "TCP") -> Verdict:
    """The verdict on one flow from `src` to `dst` (`dport` None for ICMP). `policies` must
    have passed check_policy."""
    protocol = protocol.upper()
    if src.is_pod and dst.is_pod and (src.namespace, src.name) == (dst.namespace, dst.name) \
            and src.name is not None:
        return Verdict(True, OPEN, OPEN)  # a pod cannot block itself
    egress = side(policies, "egress", src, dst, dport, protocol, dst)
    ingress = side(policies, "ingress", dst, src, dport, protocol, dst)
    # a pod cannot refuse its own node (the kubelet's probes come from it); the other way, a
    # pod's egress to its node is the pod's own traffic, which its egress policies govern
    # (measured with kube-router: an egress policy that lists only pods stops the pod's ping
    # to its node)
    if not src.is_pod and src.node is not None and src.node == dst.node:
        ingress = Side(ingress.isolated, True, ingress.isolating, ingress.allowing)
    if egress.allowed is False or ingress.allowed is False:
        allowed: bool | None = False
    elif egress.allowed is None or ingress.allowed is None:
        allowed = None
    else:
        allowed = True
    return Verdict(allowed, egress, ingress)


# ---------------------------------------------------------------- near misses


def selector_text(selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector as `kubectl get -l` writes one: `a=b,c in (d,e),!f`; `{}` is every."""
    if not selector:
        return "every"
    parts = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for e in selector.get("matchExpressions") or []:
        key, op = e["key"], e["operator"]
        values = ",".join(str(v) for v in e.get("values") or [])
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}.get(op, f"{key} {op}"))
    return ",".join(parts)


def _labels_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "no labels"


def _block_miss(block: Mapping[str, Any], ip: str | None) -> str | None:
    """Why an ipBlock does not hold the far end's address: outside its cidr, or inside one of
    its exceptions; None when it holds it or the address is not known."""
    if ip is None or _in_block(block, ip):
        return None
    try:
        addr = ipaddress.ip_address(ip)
        if addr in ipaddress.ip_network(str(block["cidr"]), strict=False):
            hit = next(str(e) for e in block.get("except") or []
                       if addr in ipaddress.ip_network(str(e), strict=False))
            return f"{block['cidr']} except {hit}, which holds {ip}"
    except (ValueError, TypeError, StopIteration):
        return None
    return f"{block['cidr']}, which does not hold {ip}"


def _peer_miss(peer: Mapping[str, Any], policy_ns: str, other: Peer) -> str | None:
    """Why a peer does not match the far end, or None when it does or that is not known."""
    if "ipBlock" in peer:
        return _block_miss(peer["ipBlock"], other.ip)
    if not other.is_pod:
        return None
    pods, nss = peer.get("podSelector"), peer.get("namespaceSelector")
    if pods is None and nss is None:
        return None
    ns = other.namespace or ""
    if nss is None:
        if ns != policy_ns:
            return f"pods {selector_text(pods)} of {policy_ns} only ({other.name} is in {ns})"
    elif not selector_matches(nss, other.ns_labels):
        return (f"namespaces {selector_text(nss)}, which {ns} is not "
                f"({_labels_text(other.ns_labels)})")
    if not selector_matches(pods or {}, other.labels):
        return (f"pods {selector_text(pods)}, which {other.name} is not "
                f"({_labels_text(other.labels)})")
    return None


def near_misses(policies: Sequence[Mapping[str, Any]], direction: Direction, pod: Peer,
                other: Peer, dport: int | None, protocol: str, dst: Peer) -> tuple[str, ...]:
    """The rules of the policies isolating `pod` in `direction` that name the flow's port but
    whose selectors pass the far end by: the usual way a policy that means to allow a flow
    does not (a namespace label nobody set, a pod label that changed). One text per rule,
    `<policy> <direction> rule <n>: port <port> only <to|from> <why not>`."""
    kind = "Ingress" if direction == "ingress" else "Egress"
    key, peers_key = (("ingress", "from") if direction == "ingress" else ("egress", "to"))
    toward = "from" if direction == "ingress" else "to"
    out = []
    for p in policies:
        if kind not in policy_types(p["spec"]) or not selects(p, pod):
            continue
        for i, rule in enumerate(p["spec"].get(key) or []):
            ports = rule.get("ports") or []
            # a rule for this very port: one that names no port is about everything
            if not ports or not any(port_matches(q, dport, protocol, dst) for q in ports):
                continue
            misses = [_peer_miss(peer, pod.namespace or "", other)
                      for peer in rule.get(peers_key) or []]
            why = [m for m in misses if m]
            if why and len(why) == len(misses):
                # the port, not the protocol: a finding that groups UDP and TCP says it once
                out.append(f"{_policy_id(p)} {direction} rule {i + 1}: port {dport} "
                           f"only {toward} {'; or '.join(why)}")
    return tuple(out)
