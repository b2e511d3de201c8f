"""A connect timeout to middleware, from the active checks' raw results to the report's root
causes: the node connects and its pod does not (the pod's way out on that node), neither does
while the other nodes connect (that node's own way out, or the endpoint turning its address
away), nobody does (the endpoint). One root cause, on the right node, and a cause found on the
node (IP forwarding off, a DROP rule) explains the failure rather than standing beside it."""

from __future__ import annotations

from kubenetdiag.engine import infer, load_ruleset
from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.facts.vantage import vantage_facts

DB = "203.0.113.10:3306"
NODES = ("n1", "n2", "n3")
ALARM = ("critical", "error", "warning")


def base() -> list[Fact]:
    out = []
    for i, n in enumerate(NODES, 1):
        out.append(Fact("node_status", n, {"reachable": True, "address": f"198.18.0.1{i}",
                                           "reason": None}))
        out.append(Fact("sysctl", n, {"key": "net.ipv4.ip_forward", "value": "1", "number": 1,
                                      "present": True}, Source("sysctl")))
    return out


def tcp(node: str, ok: bool, detail: str = "timeout", pod: bool = False) -> Fact:
    return Fact("tcp_check", node, {"target": DB, "address": DB.split(":")[0], "by": "ip",
                                    "ok": ok, "detail": None if ok else detail, "rtt_ms": None,
                                    "vantage": f"cni-{node}" if pod else None})


def connects(failing: dict[tuple[str, bool], str]) -> list[Fact]:
    """Every node and a pod on it connect to the database, except (node, from_pod) -> detail."""
    return [tcp(n, (n, pod) not in failing, failing.get((n, pod), ""), pod)
            for n in NODES for pod in (False, True)]


def roots(facts: list[Fact]) -> list[tuple[str, str, tuple[str, ...]]]:
    found = infer(load_ruleset(), [*facts, *vantage_facts(facts)])
    return sorted((f["rule"], f["fault"], tuple(f["nodes"])) for f in found
                  if f["root_cause"] and f["severity"] in ALARM)


def drop(node: str, flow: str, rule: str) -> Fact:
    return Fact("path", node, {
        "flow": flow, "peer": None, "target": DB, "toward": DB, "state": "new", "src": "10.244.2.2",
        "dst": "203.0.113.10", "proto": "tcp", "dport": 3306, "verdict": "drop",
        "stage": "netfilter", "at": "filter FORWARD rule 1", "hook": "forward",
        "table": "filter", "chain": "FORWARD", "position": 1, "rule": rule, "owner": "unknown",
        "backend": "nf_tables", "altered_by": None, "undo": f"iptables -t filter -D {rule[3:]}",
        "matched": "unknown", "detail": f"{flow} | drop at filter FORWARD rule 1"})


def test_pod_times_out_where_its_node_connects_is_that_nodes_pod_egress() -> None:
    facts = base() + connects({("n2", True): "timeout"})
    assert roots(facts) == [("pod-egress-broken", "pod_egress_broken", ("n2",))]


def test_node_and_pod_time_out_while_others_connect_is_that_node_alone() -> None:
    facts = base() + connects({("n3", False): "timeout", ("n3", True): "timeout"})
    assert roots(facts) == [("node-and-pod-cannot-reach-endpoint", "endpoint_unreachable",
                             ("n3",))]


def test_nobody_connecting_is_the_endpoint_not_every_node() -> None:
    facts = base() + connects({(n, pod): "timeout" for n in NODES for pod in (False, True)})
    assert roots(facts) == [("endpoint-unreachable", "endpoint_unreachable", ())]


def test_a_drop_of_pod_traffic_to_the_endpoint_is_named_and_its_rule_finding_follows() -> None:
    rule = "-A FORWARD -s 10.244.2.0/24 -d 203.0.113.10/32 -p tcp --dport 3306 -j DROP"
    facts = base() + connects({("n2", True): "timeout"}) + [drop("n2", "endpoint_pod", rule)]
    found = infer(load_ruleset(), [*facts, *vantage_facts(facts)])
    assert sorted((f["rule"], tuple(f["nodes"])) for f in found if f["root_cause"]
                  and f["severity"] in ALARM) == [("pod-egress-blocked-on-path", ("n2",))]
    dropped = [f for f in found if f["rule"] == "iptables-drop-rule"]
    assert dropped and not dropped[0]["root_cause"]
    assert dropped[0]["explained_by"] == ["pod-egress-blocked-on-path"]


def test_ip_forwarding_off_explains_the_pods_timeout_instead_of_a_second_root_cause() -> None:
    facts = [f for f in base() if not (f.kind == "sysctl" and f.node == "n2")] + [
        Fact("sysctl", "n2", {"key": "net.ipv4.ip_forward", "value": "0", "number": 0,
                              "present": True}, Source("sysctl"))] + connects(
        {("n2", True): "timeout"})
    assert [r[0] for r in roots(facts)] == ["ip-forward-disabled"]


def test_the_healthy_nodes_are_never_named() -> None:
    for failing in ({("n1", True): "timeout"}, {("n1", False): "timeout", ("n1", True): "timeout"}):
        named = {n for _, _, nodes in roots(base() + connects(failing)) for n in nodes}
        assert named == {"n1"}


def test_a_node_without_a_route_to_the_endpoint_is_named_for_it_once() -> None:
    no_route = Fact("path", "n3", {
        "flow": "endpoint", "peer": None, "target": DB, "toward": DB, "state": "new",
        "src": "198.18.0.13", "dst": "203.0.113.10", "proto": "tcp", "dport": 3306,
        "verdict": "reject",
        "stage": "route", "at": "no route to 203.0.113.10", "hook": None, "table": None,
        "chain": None, "position": None, "rule": None, "owner": "kernel", "backend": None,
        "altered_by": None, "undo": None, "matched": "unknown",
        "detail": "endpoint | reject at no route"})
    facts = base() + connects({("n3", False): "unreachable", ("n3", True): "unreachable"})
    assert roots([*facts, no_route]) == [("node-has-no-route-to-endpoint", "endpoint_unreachable",
                                         ("n3",))]


def test_a_pod_connection_the_walk_saw_leave_unmasqueraded_is_named_so() -> None:
    kept = Fact("egress_untranslated", "n2", {
        "target": DB, "src": "10.244.2.2", "dst": "203.0.113.10", "dport": 3306,
        "at": "nat POSTROUTING: no rule masquerades it", "rule": None, "owner": "unknown"})
    facts = base() + connects({("n2", True): "timeout"}) + [kept]
    assert roots(facts) == [("pod-egress-not-masqueraded", "pod_egress_broken", ("n2",))]
    # where the pod connects, leaving untranslated is a routed pod network, not a fault
    assert roots(base() + connects({}) + [kept]) == []
