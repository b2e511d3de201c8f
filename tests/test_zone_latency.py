"""Cross-zone round trips: which pings make the zone_latency facts (facts/zones.py), what
the baseline is when a zone has one node, and the finding they give over the shipped rules,
with the spread-over-zones finding as its consequence."""

from __future__ import annotations

from kubenetdiag.engine import infer, load_ruleset
from kubenetdiag.facts import producers, zones
from kubenetdiag.facts.model import Fact
from kubenetdiag.facts.zones import zone_latency_facts

ALARM = ("critical", "error", "warning")


def node(name: str, zone: str | None, ip: str | None = None) -> Fact:
    return Fact("k8s_node", name, {"name": name, "zone": zone, "internal_ip": ip})


def ping(src: str, dst: str, ms: float | None, *, layer: str = "underlay", ok: bool = True,
         vantage: str | None = None) -> Fact:
    return Fact("reach", src, {"src": src, "dst": dst, "layer": layer, "ok": ok, "rtt_ms": ms,
                               "detail": None if ok else "timeout", "vantage": vantage})


def service(zone_list: str, *, name: str = "payment", topology_aware: bool = False) -> Fact:
    return Fact("service_endpoints", "cluster", {
        "namespace": "pay", "name": name, "cluster_ip": "10.96.1.5", "ready_endpoints": 3,
        "endpoints": 3, "zones": len(zone_list.split(",")), "zone_list": zone_list,
        "topology_aware": topology_aware})


# Two nodes in az1, one in az2: node3's links are the cross-zone ones.
ZONES = [node("n1", "az1", "10.20.1.1"), node("n2", "az1", "10.20.1.2"),
         node("n3", "az2", "10.20.2.3")]
SAME = [ping("n1", "n2", 0.21), ping("n2", "n1", 0.25)]


def slow_cross(ms: float) -> list[Fact]:
    return [ping(a, b, ms + i) for i, (a, b) in enumerate(
        [("n1", "n3"), ("n3", "n1"), ("n2", "n3"), ("n3", "n2")])]


def test_medians_per_side_and_the_ratio() -> None:
    [f] = zone_latency_facts([*ZONES, *SAME, *slow_cross(30.0), service("az1,az2")])
    a = f.attrs
    assert (a["service"], a["zone_a"], a["zone_b"]) == ("payment", "az1", "az2")
    assert (a["cross_ms"], a["cross_pairs"], a["slowest"]) == (31.5, 4, 33.0)
    assert (a["same_ms"], a["same_pairs"], a["same_zones"]) == (0.23, 2, "az1")
    assert a["ratio"] == 137.0
    assert "n3 -> n2: 33 ms" in f.source.excerpt  # the slowest pairs are the evidence


def test_only_answered_underlay_pings_from_the_node_count() -> None:
    noise = [ping("n1", "n3", 500.0, layer="pod"),  # the overlay's own cost is not the zones'
             ping("n1", "n3", 900.0, vantage="cni-pod1"),  # measured another way
             ping("n2", "n3", None, ok=False)]  # a lost ping has no time
    [f] = zone_latency_facts([*ZONES, *SAME, *slow_cross(30.0), *noise, service("az1,az2")])
    assert f.attrs["cross_pairs"] == 4 and f.attrs["cross_ms"] == 31.5


def test_a_zone_alone_borrows_the_baseline_of_another_zone() -> None:
    zones = [node("n1", "az1"), node("n2", "az2"), node("n3", "az3"), node("n4", "az3")]
    facts = [*zones, ping("n3", "n4", 0.4), ping("n1", "n2", 20.0), ping("n2", "n1", 22.0),
             service("az1,az2")]
    [f] = zone_latency_facts(facts)
    assert (f.attrs["same_ms"], f.attrs["same_zones"], f.attrs["ratio"]) == (0.4, "az3", 52.5)


def test_no_same_zone_pair_leaves_the_ratio_unknown() -> None:
    zones = [node("n1", "az1"), node("n2", "az2")]
    [f] = zone_latency_facts([*zones, ping("n1", "n2", 20.0), service("az1,az2")])
    assert f.attrs["same_ms"] is None and f.attrs["ratio"] is None
    assert f.attrs["same_zones"] == ""


def test_nothing_without_two_zones_a_spread_service_or_a_cross_zone_measure() -> None:
    assert zone_latency_facts([node("n1", None), node("n2", None), ping("n1", "n2", 9.0),
                               service("az1,az2")]) == []
    assert zone_latency_facts([*ZONES, *SAME, *slow_cross(30.0), service("az1")]) == []
    # the two zones were never measured against each other: unknown, not fast
    assert zone_latency_facts([*ZONES, *SAME, service("az1,az2")]) == []


def run(facts: list[Fact], alarms_only: bool = True) -> list[dict]:
    facts = [*facts, *zone_latency_facts(facts)]
    return [f for f in infer(load_ruleset(), facts)
            if f["severity"] in ALARM or not alarms_only]


def test_slow_zones_are_the_root_cause_and_the_spread_its_consequence() -> None:
    found = run([*ZONES, *SAME, *slow_cross(30.0), service("az1,az2")], alarms_only=False)
    roots = [f for f in found if f["root_cause"]]
    assert [(f["fault"], f["nodes"]) for f in roots] == [("cross_zone_latency", [])]
    assert "pay/payment" in roots[0]["title"] and "az1" in roots[0]["title"]
    spread = [f for f in found if f["fault"] == "cross_zone_endpoints"]
    assert spread and not spread[0]["root_cause"]
    assert spread[0]["explained_by"] == ["cross-zone-latency-high"]
    # the measuring command targets the slowest pair's far node by its own address
    commands = [step.get("command") for step in roots[0]["remediation"]]
    assert "ping -c 20 -i 0.2 10.20.1.2" in commands, commands


def test_jitter_of_a_healthy_cluster_leaves_the_spread_as_information() -> None:
    """Sub-millisecond round trips with a tenfold spread between samples: the ratio may be
    high, the floor keeps it quiet, and the spread over fast zones is information only."""
    jitter = [ping("n1", "n3", 0.9), ping("n3", "n1", 1.1), ping("n2", "n3", 0.08),
              ping("n3", "n2", 1.2)]
    facts = [*ZONES, ping("n1", "n2", 0.05), ping("n2", "n1", 0.06), *jitter,
             service("az1,az2")]
    assert run(facts) == []
    assert [(f["fault"], f["severity"]) for f in run(facts, alarms_only=False)] == [
        ("cross_zone_endpoints", "info")]


def test_made_from_the_kinds_it_declares_and_a_rule_on_it_needs_them() -> None:
    """What the not-evaluated list relies on: without the matrix, the API's nodes or its
    Services, a Service over slow zones has no zone_latency fact, so the rule's silence there
    is not "fast"."""
    noise = [Fact("interface", "n1", {"name": "eth0", "mtu": 1500}),
             Fact("dns_check", "n1", {"server": "10.96.0.10", "ok": True})]
    facts = [*ZONES, *SAME, *slow_cross(30.0), service("az1,az2"), *noise]
    declared = [f for f in facts if f.kind in zones.INPUTS]
    assert zone_latency_facts(facts) == zone_latency_facts(declared) != []
    assert producers.observed(["zone_latency"]) == {"reach", "k8s_node", "service_endpoints"}


def load(name: str, node_name: str, tx_bps: int, drops: int = 0) -> Fact:
    return Fact("interface_load", node_name, {
        "name": name, "rx_bps": 400_000, "tx_bps": tx_bps, "rx_pps": 300, "tx_pps": 700,
        "rx_drops": 0, "tx_drops": drops, "interval_s": 3.1})


def shaped(dev: str, node_name: str, rate_bps: int) -> Fact:
    return Fact("tc_hook", node_name, {
        "dev": dev, "direction": "root", "qdisc": "tbf", "filters": 0, "actions": None,
        "text": f"qdisc tbf 8001: dev {dev} root rate 8Mbit burst 8Kb lat 60ms",
        "rate_bps": rate_bps})


def test_a_full_uplink_on_a_node_of_the_slow_zones_is_the_root_cause_they_pay_for() -> None:
    from kubenetdiag.facts.link_load import link_saturation_facts

    link = [load("eth0", "n3", 7_800_000), shaped("eth0", "n3", 8_000_000)]
    facts = [*ZONES, *SAME, *slow_cross(30.0), service("az1,az2"), *link]
    facts += [*zone_latency_facts(facts), *link_saturation_facts(facts)]
    found = infer(load_ruleset(), facts)
    roots = {f["fault"]: f for f in found if f["root_cause"] and f["severity"] in ALARM}
    # the spread without topology-aware routing stays information of its own, as without
    # latency: the slow zones have a cause of their own here
    assert sorted(roots) == ["link_saturated"]
    assert [(f["severity"], f["root_cause"]) for f in found
            if f["fault"] == "cross_zone_endpoints"] == [("info", True)]
    assert roots["link_saturated"]["nodes"] == ["n3"]
    assert roots["link_saturated"]["title"].startswith(
        "eth0 on n3 carries 7.8 Mbit/s (send), 98% of its 8")
    # the zones' latency is still reported, as what that link costs the calls between them
    zone = [f for f in found if f["fault"] == "cross_zone_latency"]
    assert [(f["rule"], f["root_cause"], f["explained_by"]) for f in zone] == [
        ("cross-zone-latency-explained", False, ["link-saturated"])]
