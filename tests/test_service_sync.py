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
from kubenetdiag.probes import iptables, ipvs
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
             "changed_s": None}
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
IPVSADM = """##knd:table ipvsadm
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.1:443 rr
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
