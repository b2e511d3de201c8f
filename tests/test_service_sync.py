"""Each node's kube-proxy rules against the API's Services (facts/services.py).

The iptables fixtures and the API answers were recorded in this project's lab with the real
kube-proxy v1.36.3 and kube-apiserver (tests/fixtures/services/README.md): node1's kube-proxy
was frozen before the canary Service's targetPort moved from 8080 to 8081, node2's followed.
"""

from __future__ import annotations

import json
from pathlib import Path

from kubenetdiag.facts.cluster import cluster_facts
from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.facts.services import service_sync_facts
from kubenetdiag.probes import iptables, ipvs, nftables
from kubenetdiag.probes.base import Section

FIXTURES = Path(__file__).parent / "fixtures" / "services"
CANARY = "default/web-canary:http"


def api_facts() -> list[Fact]:
    doc = json.loads((FIXTURES / "cluster-moved.json").read_text())
    return [f for f in cluster_facts(doc) if f.kind == "service_port"]


def ipt(node: str, name: str) -> list[Fact]:
    out = (FIXTURES / name).read_text()
    return iptables.parse(Section("iptables", iptables.COMMAND, 0, 0.1, out, ""), node)


def by(facts: list[Fact], kind: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in facts:
        if f.kind == kind:
            out.setdefault(f.node, []).append(f.attrs)
    return out


def test_the_api_side_lists_each_port_with_its_resolved_endpoints():
    ports = {(f.attrs["namespace"], f.attrs["name"], f.attrs["port_name"]): f.attrs
             for f in api_facts()}
    canary = ports[("default", "web-canary", "http")]
    assert canary["endpoints"] == "10.244.2.3:8081" and canary["target_port"] == "8081"
    assert canary["selector"] == "app=web" and canary["selected_pods"] == 1
    assert canary["endpoint_nodes"] == "node2"  # the slice's nodeName
    dns = ports[("kube-system", "kube-dns", "dns")]
    assert (dns["protocol"], dns["endpoints"]) == ("UDP", "10.244.1.3:53")
    # the apiserver's own Service has no selector: its endpoints are the apiserver's
    assert ports[("default", "kubernetes", "https")]["selector"] is None


def test_a_frozen_kube_proxy_is_named_and_the_one_that_followed_is_not():
    facts = api_facts() + ipt("node1", "iptables-save-stale-node1.txt") + \
        ipt("node2", "iptables-save-synced-node2.txt")
    derived = service_sync_facts(facts)
    sync = {n: a[0] for n, a in by(derived, "kube_proxy_sync").items()}
    assert sync["node1"]["differing"] == 1 and sync["node1"]["peers_in_sync"] == 1
    assert sync["node1"]["peer_in_sync"] == "node2"
    assert sync["node2"]["differing"] == 0 and sync["node2"]["peers_in_sync"] == 0
    [diff] = by(derived, "service_sync")["node1"]
    assert diff == {"service": CANARY, "backend": "iptables", "state": "endpoints_differ",
                    "missing": "10.244.2.3:8081", "stale": "10.244.2.3:8080",
                    "settling": False}
    assert "node2" not in by(derived, "service_sync")


def _port(name: str, vip: str, endpoints: str, ready: int, **extra) -> Fact:
    attrs = {"namespace": "default", "name": name, "port_name": "http", "port": 80,
             "protocol": "TCP", "cluster_ip": vip, "type": "ClusterIP", "node_port": None,
             "target_port": "8080", "external_traffic_policy": None, "selector": f"app={name}",
             "selected_pods": ready, "target_port_unresolved": 0, "endpoints": endpoints,
             "ready_endpoints": ready, "not_ready_endpoints": "", "per_node_endpoints": False,
             "changed_s": None, "endpoint_nodes": ""}
    return Fact("service_port", "cluster", {**attrs, **extra}, Source("api:services", "", None))


def test_a_service_created_since_is_missing_and_a_deleted_one_is_stale():
    synced = ipt("node2", "iptables-save-synced-node2.txt")
    api = [f for f in api_facts() if f.attrs["name"] != "web-canary"]
    api.append(_port("web-new", "10.96.0.22", "10.244.2.3:8080", 1))
    states = {(f.node, f.attrs["service"]): f.attrs["state"]
              for f in service_sync_facts(api + synced) if f.kind == "service_sync"}
    assert states == {("node2", "default/web-new:http"): "missing",
                      ("node2", CANARY): "stale_service"}


def test_a_change_made_seconds_before_the_api_was_read_is_settling_not_counted():
    # a busy cluster's rollouts change endpoints every few seconds; a healthy kube-proxy
    # writes them a moment later, so a node collected in between is not out of sync
    stale = ipt("node1", "iptables-save-stale-node1.txt")
    api = [f for f in api_facts() if f.attrs["name"] != "web-canary"]
    for age, counted in ((3, 0), (60, 1)):
        fresh = _port("web-canary", "10.96.0.21", "10.244.2.3:8081", 1, changed_s=age)
        derived = service_sync_facts([*api, fresh, *stale])
        [sync] = [f.attrs for f in derived if f.kind == "kube_proxy_sync"]
        assert (sync["differing"], sync["settling"]) == (counted, 1 - counted)
        [diff] = [f.attrs for f in derived if f.kind == "service_sync"]
        assert diff["settling"] is (age == 3)


def test_the_collector_says_when_the_change_was_and_when_it_read_it():
    doc = json.loads((FIXTURES / "cluster-moved.json").read_text())
    for call in doc["calls"]:
        call["read_at"] = "2026-12-02T19:50:30+00:00"
    for call in doc["calls"]:
        for item in call["items"] if call["name"] == "endpointslices" else []:
            if item["metadata"]["labels"].get("kubernetes.io/service-name") == "web-canary":
                item["metadata"].setdefault("annotations", {})[
                    "endpoints.kubernetes.io/last-change-trigger-time"] = "2026-12-02T19:50:21Z"
    [canary] = [f for f in cluster_facts(doc) if f.kind == "service_port"
                and f.attrs["name"] == "web-canary"]
    assert canary.attrs["changed_s"] == 9


def test_a_flushed_chain_is_left_to_its_own_rule():
    flushed = [f for f in ipt("node1", "iptables-save-stale-node1.txt")
               if not (f.attrs.get("table") == "nat" and f.attrs.get("chain") == "KUBE-SERVICES"
                       and f.kind == "iptables_rule")]
    assert service_sync_facts(api_facts() + flushed) == []


def test_no_api_no_comparison():
    assert service_sync_facts(ipt("node2", "iptables-save-synced-node2.txt")) == []


def test_endpoints_a_node_is_given_only_some_of_are_not_missing():
    # internalTrafficPolicy Local or zone hints: the node programs its own share
    synced = ipt("node2", "iptables-save-synced-node2.txt")
    api = [f for f in api_facts() if f.attrs["name"] != "web-canary"]
    api.append(_port("web-canary", "10.96.0.21", "10.244.1.9:8081,10.244.2.3:8081", 2,
                     per_node_endpoints=True))
    assert [f for f in service_sync_facts(api + synced) if f.kind == "service_sync"] == []


def test_a_terminating_endpoint_still_programmed_is_not_stale():
    synced = ipt("node2", "iptables-save-synced-node2.txt")
    api = [f for f in api_facts() if f.attrs["name"] != "web-canary"]
    api.append(_port("web-canary", "10.96.0.21", "", 0,
                     not_ready_endpoints="10.244.2.3:8081"))
    assert [f for f in service_sync_facts(api + synced) if f.kind == "service_sync"] == []


# ipvsadm -Ln as kube-proxy's ipvs mode leaves it (virtual servers for the VIPs, real servers
# the endpoints; weight 0 a terminating endpoint), written in the format ipvsadm 1.31 prints.
IPVSADM_HEAD = """##knd:table ipvsadm
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
"""
IPVSADM = IPVSADM_HEAD + """TCP  10.96.0.1:443 rr
  -> 198.18.0.3:6443              Masq    1      3          0
TCP  10.96.0.10:53 rr
  -> 10.244.1.3:53                Masq    1      0          0
TCP  10.96.0.10:9153 rr
  -> 10.244.1.3:9153              Masq    1      0          0
TCP  10.96.0.20:80 rr
  -> 10.244.2.3:8080              Masq    1      0          2
  -> 10.244.3.7:8080              Masq    0      1          0
TCP  10.96.0.21:80 rr
  -> 10.244.2.3:8080              Masq    1      0          0
TCP  198.18.0.12:30080 rr
  -> 10.244.2.3:8080              Masq    1      0          0
UDP  10.96.0.10:53 rr
  -> 10.244.1.3:53                Masq    1      0          0
"""


def ipvs_facts(node: str, out: str) -> list[Fact]:
    return ipvs.parse(Section("ipvs", ipvs.COMMAND, 0, 0.1, out, ""), node)


def test_ipvs_mode_a_stale_real_server_and_a_missing_virtual_server():
    api = [f for f in api_facts() if f.attrs["name"] != "web-canary"]
    api.append(_port("web-canary", "10.96.0.21", "10.244.2.3:8081", 1))
    in_sync = IPVSADM.replace("10.244.2.3:8080              Masq    1      0          0\nTCP  198",
                              "10.244.2.3:8081              Masq    1      0          0\nTCP  198")
    no_dns_udp = in_sync.replace("UDP  10.96.0.10:53 rr\n  -> 10.244.1.3:53                "
                                 "Masq    1      0          0\n", "")
    derived = service_sync_facts(api + ipvs_facts("node1", IPVSADM)
                                 + ipvs_facts("node2", in_sync)
                                 + ipvs_facts("node3", no_dns_udp))
    diffs = {(f.node, f.attrs["service"]): (f.attrs["state"], f.attrs["stale"])
             for f in derived if f.kind == "service_sync"}
    # the weight-0 real server terminates (kube-proxy keeps it for open connections) and the
    # NodePort virtual server on the node's own address is not a Service VIP: neither counts
    assert diffs == {("node1", CANARY): ("endpoints_differ", "10.244.2.3:8080"),
                     ("node3", "kube-system/kube-dns:dns"): ("missing", "")}
    sync = {f.node: f.attrs for f in derived if f.kind == "kube_proxy_sync"}
    assert sync["node2"]["backend"] == "ipvs" and sync["node2"]["differing"] == 0
    assert sync["node1"]["peers_in_sync"] == 1 and sync["node1"]["peer_in_sync"] == "node2"


# kube-proxy's ipvs mode, web-local (externalTrafficPolicy Local, NodePort 30080) with its one
# endpoint on node2: node1 holds the NodePort at each of its addresses (underlay, flannel.1,
# cni0) and, without an endpoint of its own, sends it to node2's pod; a client outside kept
# connecting to 198.18.0.11:30080 and its connections never opened (InActConn).
LOCAL_NODE1 = IPVSADM_HEAD + """TCP  10.96.0.22:80 rr
  -> 10.244.2.3:8080              Masq    1      0          0
TCP  10.244.1.0:30080 rr
  -> 10.244.2.3:8080              Masq    1      0          0
TCP  10.244.1.1:30080 rr
  -> 10.244.2.3:8080              Masq    1      0          0
TCP  198.18.0.11:30080 rr
  -> 10.244.2.3:8080              Masq    1      0          4
"""


def test_ipvs_mode_a_local_nodeport_on_a_node_without_an_endpoint():
    local = _port("web-local", "10.96.0.22", "10.244.2.3:8080", 1, type="NodePort",
                  node_port=30080, external_traffic_policy="Local", endpoint_nodes="node2")
    node2 = LOCAL_NODE1.replace("198.18.0.11", "198.18.0.12").replace("10.244.1.", "10.244.2.")
    node2 = node2.replace("0          4", "2          0")
    derived = service_sync_facts([local, *ipvs_facts("node1", LOCAL_NODE1),
                                  *ipvs_facts("node2", node2)])
    held = {f.node: f.attrs for f in derived if f.kind == "ipvs_local_nodeport"}
    assert held["node1"] == {
        "service": "default/web-local:http", "node_port": 30080, "protocol": "TCP",
        "local_endpoint": False, "backends": "10.244.2.3:8080", "active_conns": 0,
        "inactive_conns": 4, "addresses": "198.18.0.11"}
    assert held["node2"]["local_endpoint"] is True and held["node2"]["active_conns"] == 2
    # in sync with the API: the virtual servers at node addresses are no stale Services
    assert [f for f in derived if f.kind == "service_sync"] == []
    # a Service with externalTrafficPolicy Cluster gives no such fact
    cluster = _port("web-local", "10.96.0.22", "10.244.2.3:8080", 1, type="NodePort",
                    node_port=30080, external_traffic_policy="Cluster", endpoint_nodes="node2")
    assert not [f for f in service_sync_facts([cluster, *ipvs_facts("node1", LOCAL_NODE1)])
                if f.kind == "ipvs_local_nodeport"]


# ---- nftables mode ------------------------------------------------------------------------
# Recorded in the lab with kube-proxy v1.36.3 in nftables mode (`lab up --proxy-mode
# nftables`, nft 1.0.6): node1's kube-proxy frozen, then the canary Service's targetPort moved
# (moved), the canary created (new) or deleted (deleted); node2 followed
# (tests/fixtures/services/README.md).


def nft(node: str, name: str) -> list[Fact]:
    out = (FIXTURES / name).read_text()
    return nftables.parse(Section("nftables", nftables.COMMAND, 0, 0.1, out, ""), node)


def nft_api(case: str) -> list[Fact]:
    doc = json.loads((FIXTURES / f"cluster-nft-{case}.json").read_text())
    return [f for f in cluster_facts(doc) if f.kind == "service_port"]


def nft_case(case: str) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    derived = service_sync_facts(nft_api(case) + nft("node1", f"nft-{case}-node1.txt")
                                 + nft("node2", f"nft-{case}-node2.txt"))
    sync = {n: a[0] for n, a in by(derived, "kube_proxy_sync").items()}
    return sync, by(derived, "service_sync")


def test_nft_mode_the_table_is_read_as_iptables_mode_is():
    facts = nft("node2", "nft-moved-node2.txt")
    svc = {(f.attrs["key"], f.attrs["value"]) for f in facts
           if f.kind == "nft_element" and f.attrs["set"] == "service-ips"
           and f.attrs["family"] == "ip"}
    assert ("10.96.0.21 . tcp . 80", "goto service-ASQDEXGY-default/web-canary/tcp/http") in svc
    assert len(svc) == 6  # kubernetes, kube-dns x3, web, the canary
    [chain] = [f.attrs["text"] for f in facts if f.kind == "nft_rule"
               and f.attrs["chain"] == "service-ASQDEXGY-default/web-canary/tcp/http"]
    assert chain == "meta l4proto tcp dnat ip to numgen random mod 1 map { 0 : 10.244.2.3 . 8081 }"


def test_nft_mode_a_frozen_kube_proxy_sends_to_the_old_port():
    sync, diffs = nft_case("moved")
    assert sync["node1"]["backend"] == "nftables" and sync["node1"]["differing"] == 1
    assert sync["node1"]["peer_in_sync"] == "node2" and sync["node2"]["differing"] == 0
    assert sync["node1"]["service_ports"] == 6
    assert diffs == {"node1": [{"service": CANARY, "backend": "nftables",
                                "state": "endpoints_differ", "missing": "10.244.2.3:8081",
                                "stale": "10.244.2.3:8080", "settling": False}]}


def test_nft_mode_a_service_created_since_is_missing():
    # node1's table still has the canary's chain from an earlier run, flushed and not yet
    # deleted (kube-proxy deletes stale chains later): no service-ips element leads to it
    sync, diffs = nft_case("new")
    assert [(d["service"], d["state"]) for d in diffs["node1"]] == [(CANARY, "missing")]
    assert "node2" not in diffs and sync["node1"]["peers_in_sync"] == 1


def test_nft_mode_a_deleted_service_is_stale():
    # node2 keeps the deleted canary's chain, flushed, until kube-proxy deletes it: not stale
    sync, diffs = nft_case("deleted")
    assert diffs == {"node1": [{"service": CANARY, "backend": "nftables",
                                "state": "stale_service", "missing": "",
                                "stale": "10.244.2.3:8080", "settling": False}]}
    assert sync["node1"]["stale_services"] == 1 and sync["node2"]["differing"] == 0


def test_nft_mode_a_missing_endpoint_and_a_stale_one():
    # the API moves web to two pods, node2 still sends to the old one only
    api = [f for f in nft_api("moved") if f.attrs["name"] != "web"]
    api.append(_port("web", "10.96.0.20", "10.244.2.3:8080,10.244.3.4:8080", 2))
    synced = nft("node2", "nft-moved-node2.txt")
    for f in synced:
        if f.kind == "nft_rule" and f.attrs["chain"].endswith("-default/web/tcp/http"):
            f.attrs["text"] = f.attrs["text"].replace("10.244.2.3 . 8080", "10.244.9.9 . 8080")
    diffs = by(service_sync_facts(api + synced), "service_sync")
    assert [(d["service"], d["state"], d["missing"], d["stale"]) for d in diffs["node2"]] == [
        ("default/web:http", "endpoints_differ", "10.244.2.3:8080,10.244.3.4:8080",
         "10.244.9.9:8080")]


def test_nft_mode_session_affinity_endpoint_chains_are_followed():
    # with sessionAffinity ClientIP kube-proxy writes a numgen vmap to one endpoint chain per
    # endpoint, each a plain dnat
    text = (FIXTURES / "nft-moved-node2.txt").read_text().replace(
        "meta l4proto tcp dnat ip to numgen random mod 1 map { 0 : 10.244.2.3 . 8081 }",
        "numgen random mod 1 vmap { 0 : goto endpoint-ABCDEFGH-default/web-canary/tcp/http"
        "__10.244.2.3/8081 }\n\t}\n\tchain endpoint-ABCDEFGH-default/web-canary/tcp/http"
        "__10.244.2.3/8081 {\n\t\tmeta l4proto tcp dnat ip to 10.244.2.3:8081")
    facts = nftables.parse(Section("nftables", "", 0, 0.1, text, ""), "node2")
    derived = service_sync_facts(nft_api("moved") + facts)
    assert by(derived, "service_sync") == {}


def test_nft_mode_odd_output_does_not_crash_and_compares_nothing():
    for junk in ("table ip kube-proxy {\n\tmap service-ips {\n\t\telements = { garbage : "
                 "goto , : , 1.2.3.4 . tcp . x : goto service-\n\t}\n}\n",
                 "table ip kube-proxy {\n\tmap service-ips {\n\t\ttype x : verdict\n",
                 "}}}} table { map { elements = {"):
        facts = nftables.parse(Section("nftables", "", 0, 0.1, junk, ""), "node1")
        service_sync_facts(nft_api("moved") + facts)


def test_nft_mode_a_service_without_endpoints_is_a_no_endpoint_services_element():
    # recorded under service_no_endpoints (web's pod not Ready): kube-proxy rejects its VIP
    # through the no-endpoint-services map, the element commented with the port's name
    api = [f for f in nft_api("deleted") if f.attrs["name"] != "web"]
    api.append(_port("web", "10.96.0.20", "", 0, not_ready_endpoints="10.244.2.3:8080"))
    rejecting = nft("node1", "nft-no-endpoints-node1.txt")
    [elem] = [f.attrs for f in rejecting if f.kind == "nft_element"
              and f.attrs["set"] == "no-endpoint-services" and f.attrs["family"] == "ip"]
    assert (elem["key"], elem["value"], elem["comment"]) == (
        "10.96.0.20 . tcp . 80", "goto reject-chain", "default/web:http")
    synced = nft("node2", "nft-deleted-node2.txt")  # still DNATs web to its pod
    derived = service_sync_facts(api + rejecting + synced)
    assert "node1" not in by(derived, "service_sync")
    sync = {n: a[0] for n, a in by(derived, "kube_proxy_sync").items()}
    assert sync["node1"]["differing"] == 0
    # the pod only terminates: a node still sending to it is not stale
    assert sync["node2"]["differing"] == 0
