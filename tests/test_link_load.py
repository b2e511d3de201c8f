"""A link at capacity (facts/link_load.py): each interface's throughput from the counters
probe's two samples of /proc/net/dev, its capacity from a tbf's rate (tc) or the speed a real
link reports (links), recorded on a lab node whose eth0 was shaped to 8 Mbit/s and kept full
(link_saturated via=uplink), and made by hand for what the lab cannot hold (a NIC's speed)."""

from __future__ import annotations

from kubenetdiag.facts.link_load import link_saturation_facts
from kubenetdiag.facts.model import Fact
from kubenetdiag.probes import BY_NAME
from kubenetdiag.probes.counters import read_dev
from probe_sections import section

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
