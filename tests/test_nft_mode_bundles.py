"""kube-proxy in nftables mode, as recorded from the lab (`lab up --proxy-mode nftables`,
tests/fixtures/bundles/README.md): its table `ip kube-proxy` is walked (named sets, verdict
maps, the numgen dnat) without a false verdict, and a node whose kube-proxy stopped following
the API is the one root cause."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kubenetdiag.bundle import Bundle
from kubenetdiag.engine import load_ruleset
from kubenetdiag.facts.model import Fact
from kubenetdiag.facts.paths import nft, path_facts
from kubenetdiag.facts.paths.packet import Packet, addr
from kubenetdiag.facts.paths.ruleset import Context
from kubenetdiag.pipeline import analyze

BUNDLES = Path(__file__).parent / "fixtures" / "bundles"
ALARM = ("warning", "error", "critical")


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset()


def _analyze(name: str, tmp: Path, ruleset) -> dict:
    out = tmp / name
    shutil.copytree(BUNDLES / name, out)
    return analyze(Bundle.read(out), ruleset, save=False).report


def test_a_healthy_nft_mode_cluster_raises_nothing(tmp_path, ruleset):
    report = _analyze("lab-nft-healthy", tmp_path, ruleset)
    assert [(f["rule"], f["nodes"]) for f in report["findings"]
            if f["severity"] in ALARM] == []
    # nothing undecidable either: every set and map kube-proxy looks up was read
    assert [f["rule"] for f in report["findings"]] == []


def test_a_frozen_nft_mode_kube_proxy_is_the_one_root_cause(tmp_path, ruleset):
    report = _analyze("lab-nft-kube-proxy-out-of-sync", tmp_path, ruleset)
    causes = [(f["rule"], f["nodes"]) for f in report["findings"] if f["root_cause"]]
    assert causes == [("kube-proxy-out-of-sync", ["node1"])]
    [finding] = [f for f in report["findings"] if f["root_cause"]]
    assert "nftables" in finding["explain"]


@pytest.fixture(scope="module")
def healthy(ruleset) -> list[Fact]:
    facts = analyze(Bundle.read(BUNDLES / "lab-nft-healthy"), ruleset, save=False).facts
    return [f for f in facts if f.kind not in ("path", "path_walk")]


def _paths(facts: list[Fact]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in path_facts(facts):
        out.setdefault(f.node, []).append(f.attrs)
    return out


def test_every_node_walks_the_services_through_kube_proxys_maps(healthy):
    walked = _paths(healthy)
    for node in ("node1", "node2", "node3"):
        [w] = [a for a in walked[node] if "flows" in a]
        assert w["passed"] == w["flows"] and w["unknown"] == 0
        assert "service" in w["kinds"].split(",")


def test_a_service_missing_from_service_ips_is_not_translated(healthy):
    # the walk reads the map: take kube-dns's UDP element out of node2's, and the DNS VIP
    # keeps an address nothing answers there (and only there)
    facts = [f for f in healthy if not (
        f.node == "node2" and f.kind == "nft_element" and f.attrs["set"] == "service-ips"
        and f.attrs["key"] == "10.96.0.10 . udp . 53")]
    stopped = {n: [(a["flow"], a["dst"], a["proto"], a["verdict"]) for a in paths
                   if "verdict" in a] for n, paths in _paths(facts).items()}
    assert stopped["node2"] == [("service", "10.96.0.10", "udp", "drop")]
    assert stopped["node1"] == stopped["node3"] == []


def test_an_unreadable_map_is_undecidable_not_a_verdict(healthy):
    # a bundle from before the probe read sets and maps: kube-proxy's lookups cannot be
    # decided, and nothing is called dropped
    facts = [f for f in healthy if f.kind not in ("nft_set", "nft_element")]
    verdicts = {a["verdict"] for paths in _paths(facts).values() for a in paths
                if "verdict" in a}
    assert verdicts == {"unknown"}


# kube-proxy's rules as nft 1.0.6 prints them (the recorded bundles), one by one
T = "ip kube-proxy"
SETS = {
    (T, "cluster-ips"): nft.set_of([("10.96.0.1", None), ("10.96.0.10", None)]),
    (T, "service-ips"): nft.set_of([
        ("10.96.0.10 . udp . 53", "goto service-FY5PMXPG-kube-system/kube-dns/udp/dns")]),
    (T, "partial"): nft.set_of([("10.96.0.1", None)], False),
}
CTX = Context(frozenset({addr("198.18.0.11")}), SETS)


def _pkt(dst: str = "10.96.0.10", proto: str = "udp", dport: int | None = 53, **kw) -> Packet:
    return Packet(addr("10.244.1.2"), addr(dst), proto, None, dport, "cni0", **kw)


@pytest.mark.parametrize(("text", "pkt", "expected"), [
    ("ip daddr @cluster-ips reject", _pkt(), True),
    ("ip daddr @cluster-ips reject", _pkt("10.244.2.3"), False),
    ("ip daddr != @cluster-ips reject", _pkt("10.244.2.3"), True),
    ("ip daddr @partial reject", _pkt("10.96.0.10"), None),  # not every element was read
    ("ip daddr @partial reject", _pkt("10.96.0.1"), True),
    ("ip daddr @unlisted reject", _pkt(), None),
    ("meta mark & 0x00004000 != 0x00000000 masquerade", _pkt(mark=0x4000), True),
    ("meta mark & 0x00004000 != 0x00000000 masquerade", _pkt(mark=0x2000), False),
    ("ip saddr . ip daddr . meta l4proto . th dport { 10.244.1.2 . 10.96.0.10 . udp . 53 } "
     "accept", _pkt(), True),
])
def test_kube_proxy_set_matches(text, pkt, expected):
    assert nft.compile_rule("c", 1, text, T).matches(pkt, CTX) is expected


def test_the_service_ips_map_sends_a_vip_to_its_chain_and_others_on():
    rule = nft.compile_rule("services", 2, "ip daddr . meta l4proto . th dport vmap "
                            "@service-ips", T)
    assert rule.dispatch is not None
    assert rule.dispatch(_pkt(), CTX).chain == "service-FY5PMXPG-kube-system/kube-dns/udp/dns"
    assert rule.dispatch(_pkt(proto="tcp"), CTX) is None  # no element: the rule does not apply
    assert rule.dispatch(_pkt(dport=None), CTX).kind == "unknown"  # the port is not known


def test_the_numgen_dnat_walks_every_endpoint_and_the_mark_is_or_ed():
    rule = nft.compile_rule("service-x", 1, "meta l4proto tcp dnat ip to numgen random mod 2 "
                            "map { 0 : 10.244.2.3 . 8080, 1 : 10.244.3.4 . 8081 }", T)
    assert rule.action.kind == "dnat" and rule.action.to == (addr("10.244.2.3"), 8080)
    assert rule.action.alternatives == ((addr("10.244.3.4"), 8081),)
    one = nft.compile_rule("endpoint-x", 1, "meta l4proto tcp dnat ip to 10.244.2.3:8080", T)
    assert one.action.to == (addr("10.244.2.3"), 8080) and not one.action.alternatives
    mark = nft.compile_rule("services", 1, "ip daddr @cluster-ips ip saddr != 10.244.0.0/16 "
                            "meta mark set meta mark | 0x00004000 comment \"masquerade\"", T)
    assert mark.action.mark == ("or", 0x4000, 0)
    assert mark.matches(_pkt(), CTX) is False  # from a pod: not marked
