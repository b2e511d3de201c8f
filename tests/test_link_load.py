"""A link at capacity (facts/link_load.py): each interface's throughput from the counters
probe's two samples of /proc/net/dev, its capacity from a tbf's rate (tc) or the speed a real
link reports (links), recorded on a lab node whose eth0 was shaped to 8 Mbit/s and kept full
(link_saturated via=uplink), and made by hand for what the lab cannot hold (a NIC's speed)."""

from __future__ import annotations

from kubenetdiag.facts.link_load import link_saturation_facts
from kubenetdiag.facts.model import Fact
from kubenetdiag.probes import BY_NAME
from kubenetdiag.probes.counters import read_dev
from probe_sections import FIX, section

NODE = "node2"


def parsed(probe: str, name: str = "lab-uplink-saturated") -> list[Fact]:
    return BY_NAME[probe].parse(section(probe, name), NODE)


def by_name(facts: list[Fact], kind: str, key: str = "name") -> dict[str, dict]:
    return {f.attrs[key]: f.attrs for f in facts if f.kind == kind}


def test_the_counters_probe_gives_each_busy_interface_its_throughput():
    load = by_name(parsed("counters"), "interface_load")
    eth0 = load["eth0"]
    # 8 Mbit/s out through the tbf; the replies that come back are a trickle
    assert 7_000_000 <= eth0["tx_bps"] <= 8_400_000, eth0
    assert eth0["rx_bps"] < 1_000_000 and eth0["tx_drops"] == 0
    assert eth0["interval_s"] > 2
    # lo and the idle pod's veth moved less than the floor and dropped nothing: no fact
    assert "lo" not in load and "veth-pod2" not in load
    # the snmp counters are read as before, beside the devices' lines
    assert any(f.kind == "net_counter" and f.attrs["name"] == "TcpRetransSegs"
               for f in parsed("counters"))


def test_dev_lines_of_every_width():
    assert read_dev(["Inter-|   Receive", " face |bytes    packets",
                     "  eth0:123456789012 5 0 7 0 0 0 0 42 3 0 1 0 0 0 0",
                     "bond0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
                     "  cut: 1 2 3"]) == {
        "eth0": (123456789012, 5, 7, 42, 3, 1), "bond0": (1, 2, 4, 9, 10, 12)}


def test_a_tbf_on_the_device_is_its_sending_capacity():
    hooks = {f.attrs["dev"]: f.attrs for f in parsed("tc") if f.kind == "tc_hook"}
    assert hooks["eth0"]["qdisc"] == "tbf" and hooks["eth0"]["rate_bps"] == 8_000_000


def test_virtual_devices_report_no_speed_that_bounds_them():
    links = by_name(parsed("links"), "interface")
    # the kernel says 10000 for each of them; none is a wire
    assert {name: a["speed_mbps"] for name, a in links.items()} == dict.fromkeys(links)


def test_the_recorded_node_is_saturated_on_eth0_only():
    facts = parsed("counters") + parsed("links") + parsed("tc")
    [full] = [f.attrs for f in link_saturation_facts(facts)]
    assert (full["name"], full["direction"], full["limit"], full["capacity_mbps"]) == (
        "eth0", "send", "tbf rate", 8.0)
    assert full["used_pct"] >= 90


def nic(name: str, speed: int | None, kind: str = "device") -> Fact:
    return Fact("interface", "n1", {"name": name, "kind": kind, "speed_mbps": speed})


def load(name: str, rx: int, tx: int, rx_drops: int = 0) -> Fact:
    return Fact("interface_load", "n1", {"name": name, "rx_bps": rx, "tx_bps": tx,
                                         "rx_pps": 1, "tx_pps": 1, "rx_drops": rx_drops,
                                         "tx_drops": 0, "interval_s": 2.5})


def test_a_nic_is_measured_both_ways_against_its_speed_and_a_half_full_one_is_left_out():
    facts = [nic("ens5", 10_000), load("ens5", 9_600_000_000, 4_000_000_000, rx_drops=310),
             nic("ens6", 1_000), load("ens6", 200_000_000, 100_000_000),
             nic("bond0", 20_000, kind="bond"), load("bond0", 12_000_000_000, 1_000_000)]
    got = {(f.attrs["name"], f.attrs["direction"]): f.attrs for f in link_saturation_facts(facts)}
    assert sorted(got) == [("bond0", "receive"), ("ens5", "receive")]
    assert (got["ens5", "receive"]["used_pct"], got["ens5", "receive"]["drops"]) == (96, 310)
    assert got["bond0", "receive"]["used_pct"] == 60  # shown, below the rule's 90


def test_without_a_known_capacity_nothing_is_judged():
    # a veth at 9 Gbit/s, a NIC that reports no speed (down, or a driver without one)
    facts = [nic("veth1", None, kind="veth"), load("veth1", 9_000_000_000, 9_000_000_000),
             nic("ens7", None), load("ens7", 9_000_000_000, 0)]
    assert link_saturation_facts(facts) == []


def test_a_tbf_under_a_class_bounds_that_class_not_the_device():
    from kubenetdiag.probes.base import Section

    out = ("##knd:qdisc\n"
           "qdisc htb 1: dev eth0 root refcnt 2 r2q 10 default 0x10\n"
           "qdisc tbf 10: dev eth0 parent 1:10 rate 1Mbit burst 8Kb lat 50ms\n"
           "##knd:hooks eth0:1:\n##knd:filters json\n[]\n")
    [hook] = [f for f in BY_NAME["tc"].parse(Section("tc", "", 0, 0.0, out, ""), "n1")
              if f.kind == "tc_hook"]
    assert (hook.attrs["qdisc"], hook.attrs["rate_bps"]) == ("htb,tbf", None)
    facts = [hook, nic("eth0", None, kind="veth"), load("eth0", 0, 40_000_000)]
    assert link_saturation_facts(facts) == []


# ---- whose link: the pod at the far end of a veth ----------------------------------------

def links_of(out: str) -> dict[str, dict]:
    from kubenetdiag.probes.base import Section

    return by_name(BY_NAME["links"].parse(Section("links", "", 0, 0.0, out, ""), "n1"),
                   "interface")


# A bridged node (flannel's cni0), iproute2's one-line text form, as old nodes print it: the
# pod's MAC is learned on its port, the bridge's and the ports' own MACs are `permanent`.
BRIDGED_TEXT = (
    "##knd:link text\n"
    "4: cni0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UP \\"
    "    link/ether 6e:00:00:00:00:01 brd ff:ff:ff:ff:ff:ff \\    bridge \n"
    "5: vethaa11@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 master cni0 state UP \\"
    "    link/ether 6e:00:00:00:00:a1 brd ff:ff:ff:ff:ff:ff link-netnsid 0 \\    veth \\"
    "    bridge_slave state forwarding hairpin on \n"
    "6: vethbb22@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 master cni0 state UP \\"
    "    link/ether 6e:00:00:00:00:b2 brd ff:ff:ff:ff:ff:ff link-netnsid 1 \\    veth \\"
    "    bridge_slave state forwarding hairpin on \n"
    "##knd:addr text\n"
    "4: cni0    inet 10.244.2.1/24 brd 10.244.2.255 scope global cni0\n"
    "##knd:neighbours text\n"
    "10.244.2.5 dev cni0 lladdr 0a:58:0a:f4:02:05 REACHABLE\n"
    "10.244.2.6 dev cni0 lladdr 0a:58:0a:f4:02:06 STALE\n"
    "10.244.2.9 dev cni0 FAILED\n"
    "198.18.0.1 dev eth0 lladdr 02:00:00:00:00:01 REACHABLE\n"
    "##knd:speed\n"
    "##knd:fdb cni0\n"
    "0a:58:0a:f4:02:05 dev vethaa11 master cni0 \n"
    "6e:00:00:00:00:a1 dev vethaa11 vlan 1 master cni0 permanent\n"
    "33:33:00:00:00:01 dev vethaa11 self permanent\n"
    "6e:00:00:00:00:b2 dev vethbb22 master cni0 permanent\n"
    "0A:58:0A:F4:02:06 dev vethbb22 master cni0 \n"
    "33:33:00:00:00:01 dev cni0 self permanent\n"
)


def test_a_bridge_port_leads_to_the_address_whose_mac_the_bridge_learned_there():
    links = links_of(BRIDGED_TEXT)
    assert links["vethaa11"]["peer_addresses"] == "10.244.2.5"
    # the fdb's MAC in capitals still matches the neighbour's
    assert links["vethbb22"]["peer_addresses"] == "10.244.2.6"
    assert links["cni0"]["peer_addresses"] is None  # not a veth


def test_without_the_bridge_table_a_port_leads_nowhere_known():
    # `bridge` missing on the node: no fdb section, so no guess from the neighbours alone
    links = links_of(BRIDGED_TEXT.split("##knd:fdb cni0\n")[0])
    assert links["vethaa11"]["peer_addresses"] is None


def test_a_routed_veth_leads_to_its_own_neighbours():
    # Calico: the pod's address is a neighbour on its cali device, which has no bridge
    out = (
        "##knd:link json\n"
        '[{"ifindex":7,"ifname":"cali1b2c3d4e5f6","flags":["BROADCAST","MULTICAST","UP",'
        '"LOWER_UP"],"mtu":1500,"operstate":"UP","address":"ee:ee:ee:ee:ee:ee",'
        '"linkinfo":{"info_kind":"veth"}},'
        '{"ifindex":8,"ifname":"califfff0000111","flags":["UP"],"mtu":1500,'
        '"operstate":"UP","linkinfo":{"info_kind":"veth"}}]\n'
        "##knd:addr json\n[]\n"
        "##knd:neighbours json\n"
        '[{"dst":"10.244.1.7","dev":"cali1b2c3d4e5f6","lladdr":"6a:1c:00:00:00:07",'
        '"state":["REACHABLE"]},{"dst":"10.244.1.8","dev":"califfff0000111",'
        '"state":["INCOMPLETE"]},{"dst":"198.18.0.12","dev":"eth0",'
        '"lladdr":"02:00:00:00:00:12","state":["PERMANENT"]}]\n'
    )
    links = links_of(out)
    assert links["cali1b2c3d4e5f6"]["peer_addresses"] == "10.244.1.7"
    assert links["califfff0000111"]["peer_addresses"] is None  # unresolved: no MAC, no pod


def api_pods(*pods: dict) -> dict:
    return {"queried": True, "calls": [{"name": "pods", "status": "ok", "items": list(pods)}]}


def pod(ns: str, name: str, ip: str, **extra: object) -> dict:
    spec = {"nodeName": "n1", **({"hostNetwork": True} if extra.get("host") else {})}
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec,
            "status": {"phase": extra.get("phase", "Running"), "podIP": ip,
                       "podIPs": [{"ip": ip}]}}


def shaped_veth(peers: str | None) -> list[Fact]:
    return [Fact("interface", "n1", {"name": "vethaa11", "kind": "veth", "speed_mbps": None,
                                     "peer_addresses": peers}),
            Fact("tc_hook", "n1", {"dev": "vethaa11", "direction": "root", "rate_bps": 8_000_000}),
            load("vethaa11", 0, 7_900_000)]


def test_a_saturated_pod_veth_names_its_pod_from_the_api():
    cluster = api_pods(pod("default", "web-1", "10.244.2.5"),
                       pod("kube-system", "kube-proxy-x", "198.18.0.11", host=True),
                       pod("default", "job-old", "10.244.2.6", phase="Succeeded"))
    [full] = [f.attrs for f in link_saturation_facts(shaped_veth("10.244.2.5"), cluster)]
    assert (full["namespace"], full["pod"], full["direction"]) == ("default", "web-1", "send")


def test_no_pod_is_named_unless_exactly_one_holds_the_address():
    pods = api_pods(pod("default", "web-1", "10.244.2.5"), pod("default", "web-2", "10.244.2.8"),
                    pod("default", "web-3", "10.244.2.7"), pod("other", "dup", "10.244.2.7"),
                    pod("default", "job-old", "10.244.2.6", phase="Succeeded"))
    for peers, cluster in (("10.244.2.5", None),            # no API answer
                           ("10.244.2.5,10.244.2.8", pods),  # two pods behind one veth
                           ("10.244.2.5,10.244.2.7", pods),  # an address two pods claim
                           ("10.244.2.7", pods),
                           ("10.244.2.6", pods),             # its pod ended: the address is free
                           (None, pods)):                    # nothing known behind the veth
        [full] = [f.attrs for f in link_saturation_facts(shaped_veth(peers), cluster)]
        assert (full["namespace"], full["pod"]) == (None, None), peers


def test_hostile_pod_listings_name_no_pod_and_never_raise():
    from kubenetdiag.facts.pod_addresses import pods_by_address

    odd = [{"metadata": "x", "spec": [], "status": {"podIP": ["10.244.2.5"], "podIPs": 5}},
           {"metadata": {"namespace": "default", "name": "web-1"},
            "status": {"podIP": "10.244.2.5", "podIPs": [{"ip": {"nested": 1}}, "10.0.0.1"]}}]
    assert pods_by_address(api_pods(*odd)) == {"10.244.2.5": ("default", "web-1")}
    assert pods_by_address({"queried": False}) == {} == pods_by_address("garbage")


def test_the_recorded_pod_link_names_the_pod_the_api_has_at_its_far_end():
    # node2 of the lab with the web pod's veth shaped to 8 Mbit/s and kept full toward it
    # (link_saturated via=pod); the API's pods as that lab listed them
    name = "lab-pod-link-saturated"
    facts = parsed("counters", name) + parsed("links", name) + parsed("tc", name)
    links = by_name(facts, "interface")
    # the web pod's MAC learned on its port, its address a neighbour of cni0; the client pod
    # had not talked to the node lately: nothing known behind its port
    assert (links["veth-pod2"]["peer_addresses"], links["veth-pod1"]["peer_addresses"]) == (
        "10.244.2.3", None)
    cluster = api_pods(pod("default", "web-0", "10.244.2.3"),
                       pod("default", "client-node2-1", "10.244.2.2"),
                       pod("kube-system", "kube-proxy-tmr6h", "198.18.0.12", host=True))
    [full] = [f.attrs for f in link_saturation_facts(facts, cluster)]
    assert (full["name"], full["direction"], full["namespace"], full["pod"]) == (
        "veth-pod2", "send", "default", "web-0")


def test_a_recorded_calico_veth_leads_to_its_pod_and_the_uplink_to_no_pod():
    # node2 of a calico-bgp lab under link_saturated via=pod: the web pod's address is a
    # neighbour on its cali device. The lab's eth0 is a veth to its switch: behind it are node
    # addresses, which only host-network pods hold, and those name no pod.
    links = by_name(parsed("links", "lab-calico-bgp-pod-link-saturated"), "interface")
    assert links["cali0d7763386da"]["peer_addresses"] == "10.244.2.3"
    assert links["calid0244d9bc21"]["peer_addresses"] is None
    from kubenetdiag.facts.pod_addresses import pod_behind, pods_by_address

    pods = pods_by_address(api_pods(pod("default", "web-0", "10.244.2.3"),
                                    pod("kube-system", "calico-node-x", "198.18.0.11", host=True)))
    assert pod_behind(links["cali0d7763386da"]["peer_addresses"], pods) == ("default", "web-0")
    assert pod_behind(links["eth0"]["peer_addresses"], pods) is None


def test_a_neighbour_listing_nested_past_reason_loses_only_the_pods_names():
    fixture = (FIX / "links" / "lab-pod-link-saturated.txt").read_text()
    deep = "[" * 100_000 + "]" * 100_000
    head = "##knd:neighbours json\n"
    out = fixture.replace(head, f"{head}{deep}\n##knd:x json\n")
    links = links_of(out)
    assert links["veth-pod2"]["peer_addresses"] is None
    assert links["veth-pod2"]["master"] == "cni0" and "flannel.1" in links
