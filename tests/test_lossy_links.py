"""A link that loses packets at random is named, and the checks that failed across it by chance
are not blamed on what they aimed at (facts/lossy_links.py)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from kubenetdiag.facts.lossy_links import lossy_link_facts
from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active import ping
from kubenetdiag.probes.active.common import LOSS_PING, example, section
from kubenetdiag.probes.base import Section

FIX = Path(__file__).parent / "fixtures" / "active"


def loss(src: str, dst: str, received: int, *, sent: int = 20, rtt: float = 0.1,
         limited: bool = False) -> Fact:
    return Fact("ping_loss", src, {"dst": dst, "sent": sent, "received": received, "errors": 0,
                                   "loss_pct": round(100 * (sent - received) / sent, 1),
                                   "rtt_ms": rtt, "limited": limited})


def cluster(*facts: Fact) -> list[Fact]:
    base = [Fact("node_status", f"node{i}", {"reachable": True, "address": f"198.18.0.1{i}"})
            for i in (1, 2, 3)]
    base += [Fact("dns_pod", "node1", {"pod": "coredns-0", "ip": "10.244.1.3", "ready": True}),
             Fact("dns_service", "cluster", {"name": "kube-dns", "cluster_ip": "10.96.0.10"})]
    return base + list(facts)


def node1_lossy() -> list[Fact]:
    return [loss("node1", "node2", 17), loss("node2", "node1", 16),
            loss("node1", "node3", 18), loss("node3", "node1", 15),
            loss("node2", "node3", 20), loss("node3", "node2", 20)]


def test_the_node_whose_pairs_lose_is_named_and_its_chance_failures_set_aside() -> None:
    dns_timeout = Fact("dns_check", "node2", {"server": "10.244.1.3", "ok": False,
                                              "detail": "timeout"})
    vip_timeout = Fact("dns_check", "node3", {"server": "10.96.0.10", "ok": False,
                                              "detail": "timeout"})
    refused = Fact("tcp_check", "node2", {"address": "198.18.0.11", "ok": False,
                                          "detail": "refused"})
    elsewhere = Fact("reach", "node2", {"src": "node2", "dst": "node3", "layer": "pod",
                                        "ok": False, "detail": "timeout"})
    facts = cluster(*node1_lossy(), dns_timeout, vip_timeout, refused, elsewhere)
    found, aside = lossy_link_facts(facts)
    [link] = found
    assert (link.kind, link.node) == ("link_loss", "node1")
    assert link.attrs["peers"] == 2 and link.attrs["lost"] == 14 and link.attrs["sent"] == 80
    assert link.attrs["per_peer"] == "node2 17.5%, node3 17.5%"
    assert link.attrs["witnesses"] == "node2, node3" and link.attrs["set_aside"] == 2
    # the DNS timeouts towards CoreDNS on node1 crossed the link; a refusal is an answer, and
    # node2 -> node3 does not cross node1 at all
    assert aside == {id(dns_timeout), id(vip_timeout)}
    assert "dns_check node2 -> 10.244.1.3: timeout" in link.source.excerpt


def test_only_the_declared_kinds_are_read() -> None:
    from kubenetdiag.facts import lossy_links
    from kubenetdiag.facts.producers import COLLECTION

    facts = cluster(*node1_lossy(), Fact("route", "node1", {"dst": "10.244.2.0/24"}))
    allowed = set(lossy_links.INPUTS) | set(lossy_links.CONTEXT) | COLLECTION
    full, _ = lossy_link_facts(facts)
    declared, _ = lossy_link_facts([f for f in facts if f.kind in allowed])
    assert [(f.kind, f.node, f.attrs) for f in full] == \
        [(f.kind, f.node, f.attrs) for f in declared] != []


def test_a_healthy_network_and_a_single_lost_echo_name_nothing() -> None:
    healthy = [loss(a, b, 20) for a in ("node1", "node2", "node3")
               for b in ("node1", "node2", "node3") if a != b]
    assert lossy_link_facts(cluster(*healthy)) == ([], set())
    one = [loss("node1", "node2", 19), *healthy[1:]]
    assert lossy_link_facts(cluster(*one)) == ([], set())


def test_a_rate_limit_or_a_full_queue_is_not_a_lossy_link() -> None:
    limited = [f if f.node != "node2" or f.attrs["dst"] != "node1" else
               loss("node2", "node1", 7, limited=True) for f in node1_lossy()]
    limited = [f if f.node != "node3" or f.attrs["dst"] != "node1" else
               loss("node3", "node1", 6, limited=True) for f in limited]
    assert lossy_link_facts(cluster(*limited))[0] == []
    # a shaper's queue that a bulk transfer keeps full: the lost echoes come with 60 ms
    queued = [loss(f.node, f.attrs["dst"], f.attrs["received"],
                   rtt=61.0 if "node1" in (f.node, f.attrs["dst"]) else 0.1)
              for f in node1_lossy()]
    assert lossy_link_facts(cluster(*queued))[0] == []


def test_a_slow_zone_whose_queue_fills_is_no_lossy_pair() -> None:
    # node2 alone in a zone behind a full 60 ms queue: its pair with node1 lost nothing, the
    # one with node3 a few; node1 and node3 answer each other in 0.03 ms
    bursts = [loss("node1", "node2", 20, rtt=64.3), loss("node2", "node1", 20, rtt=64.5),
              loss("node2", "node3", 18, rtt=64.8), loss("node3", "node2", 18, rtt=59.0),
              loss("node1", "node3", 20, rtt=0.03), loss("node3", "node1", 20, rtt=0.03)]
    assert lossy_link_facts(cluster(*bursts)) == ([], set())


def test_two_nodes_whose_queue_fills_are_no_lossy_pair() -> None:
    # a saturated uplink between two nodes: the lost echoes come with a 60 ms queue, and there
    # is no clean pair to compare with
    two = [loss("node1", "node2", 16, rtt=62.0), loss("node2", "node1", 17, rtt=58.5)]
    assert lossy_link_facts(cluster(*two)) == ([], set())


def test_two_nodes_alone_are_a_pair_and_loss_everywhere_blames_no_node() -> None:
    two = [loss("node1", "node2", 16), loss("node2", "node1", 17)]
    [pair], _ = lossy_link_facts(cluster(*two))
    assert (pair.kind, pair.node, pair.attrs["dst"], pair.attrs["lost"]) == \
        ("loss_pair", "node1", "node2", 7)
    everywhere = [loss(a, b, 16) for a in ("node1", "node2", "node3")
                  for b in ("node1", "node2", "node3") if a != b]
    found, _ = lossy_link_facts(cluster(*everywhere))
    assert sorted(f.kind for f in found) == ["loss_pair"] * 3


def test_two_lossy_nodes_of_four_are_both_named() -> None:
    names = ("node1", "node2", "node3", "node4")
    facts = [loss(a, b, 16 if {a, b} & {"node1", "node2"} else 20)
             for a in names for b in names if a != b]
    found, _ = lossy_link_facts(facts)
    assert sorted((f.kind, f.node) for f in found) == [("link_loss", "node1"),
                                                       ("link_loss", "node2")]


def _burst(name: str, rc: int = 0) -> Section:
    return Section("active.ping.underlay.0", LOSS_PING.replace("ADDR", "'198.18.0.12'"), rc,
                   0.5, (FIX / name).read_text(), "")


def test_the_burst_is_read_from_real_outputs() -> None:
    peer = example().plan["peers"][0]
    parse = ping.PING.parse
    [reach, lossy] = parse(_burst("ping_iputils_burst_lossy.txt"), ("underlay", peer), example())
    # ping went on to 23 echoes for its 20 replies: the first 20 are the burst
    assert reach.attrs["ok"] and lossy.kind == "ping_loss"
    assert (lossy.attrs["sent"], lossy.attrs["received"], lossy.attrs["limited"]) == \
        (20, 17, False)
    limited = parse(_burst("ping_iputils_burst_rate_limited.txt", 1), ("underlay", peer),
                    example())[1]
    assert (limited.attrs["sent"], limited.attrs["received"], limited.attrs["limited"]) == \
        (20, 5, True)
    ok = parse(_burst("ping_iputils_burst_ok.txt"), ("underlay", peer), example())[1]
    assert (ok.attrs["received"], ok.attrs["loss_pct"]) == (20, 0.0)
    # the pod layer's two echoes say nothing about loss
    pod = parse(section("active.ping.pod.0", (FIX / "ping_iputils_ok.txt").read_text(), 0),
                ("pod", peer), example())
    assert [f.kind for f in pod] == ["reach"]


def test_an_old_ping_that_refuses_the_short_interval_gets_the_plain_ping(tmp_path: Path) -> None:
    fake = tmp_path / "ping"
    refusal, plain = FIX / "ping_iputils_old_user_interval.txt", FIX / "ping_iputils_ok.txt"
    fake.write_text(f"#!/bin/sh\ncase \"$*\" in *'-i 0.02'*) cat {refusal}; exit 2;; esac\n"
                    f"cat {plain}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    command = LOSS_PING.replace("ADDR", "198.18.0.12")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "__pi": "-i 0.2"}
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env,
                         timeout=10)
    assert out.returncode == 0 and "2 packets transmitted, 2 received" in out.stdout
    assert "cannot flood" not in out.stdout


def _limited_walk(node: str, at: str) -> Fact:
    return Fact("path", node, {"flow": "node_in", "proto": "icmp", "verdict": "unknown",
                               "stage": "netfilter", "at": at, "matched": "seen"})


def test_pings_to_a_node_that_rate_limits_them_are_set_aside_and_count_in_no_pair() -> None:
    # node2 answers the first five of each burst: three of its pairs would look lossy
    bursts = [loss("node1", "node2", 6), loss("node3", "node2", 5),
              loss("node2", "node1", 20), loss("node2", "node3", 20),
              loss("node1", "node3", 20), loss("node3", "node1", 20)]
    own = Fact("own_pod_check", "node2", {"direction": "pod_to_node", "ok": False,
                                          "detail": "timeout", "address": "10.244.2.1"})
    other_way = Fact("own_pod_check", "node2", {"direction": "node_to_pod", "ok": False,
                                                "detail": "timeout", "address": "10.244.2.5"})
    pinged = Fact("reach", "node1", {"src": "node1", "dst": "node2", "layer": "underlay",
                                     "ok": False, "detail": "timeout"})
    dns = Fact("dns_check", "node1", {"server": "10.244.2.3", "ok": False, "detail": "timeout"})
    facts = cluster(*bursts, own, other_way, pinged, dns,
                    _limited_walk("node2", "filter INPUT rule 1 (-m limit)"))
    found, aside = lossy_link_facts(facts)
    assert [(f.kind, f.node, f.attrs) for f in found] == [
        ("icmp_rate_limited", "node2", {"at": "filter INPUT rule 1 (-m limit)", "set_aside": 2})]
    # only pings towards node2: its own pod's pings out and a DNS query judge the path
    assert aside == {id(own), id(pinged)}


def test_nftables_limits_count_and_a_limit_elsewhere_does_not() -> None:
    facts = cluster(_limited_walk("node3", "inet filter input rule 2 (limit)"),
                    _limited_walk("node1", "filter INPUT rule 4 (-m statistic)"))
    found, _ = lossy_link_facts(facts)
    assert [(f.node, f.attrs["at"]) for f in found] == [
        ("node3", "inet filter input rule 2 (limit)")]


def test_loss_one_way_only_is_a_filter_not_a_link() -> None:
    # 8 echoes from node3 to node2 lost, none the other way: a round trip crosses the link
    # both ways, so a link would lose both ways alike
    bursts = [loss("node2", "node3", 20), loss("node3", "node2", 12),
              loss("node1", "node2", 20), loss("node2", "node1", 20),
              loss("node1", "node3", 20), loss("node3", "node1", 20)]
    assert lossy_link_facts(cluster(*bursts)) == ([], set())


def test_a_node_whose_ping_cannot_burst_says_its_loss_was_not_measured() -> None:
    peer = example().plan["peers"][0]
    command = LOSS_PING.replace("ADDR", "'198.18.0.12'")
    busybox = Section("active.ping.underlay.0", command, 0, 0.3,
                      (FIX / "ping_busybox_ok.txt").read_text(), "")
    reach, status = ping.PING.parse(busybox, ("underlay", peer), example())
    assert reach.attrs["ok"] and status.kind == "probe_status"
    assert (status.attrs["status"], status.attrs["kinds"]) == ("partial", "ping_loss")
    assert status.attrs["blocks"] == "loss on the link to node2"
    # a bundle of a version that sent two echoes on every node says nothing node by node
    older = Section("active.ping.underlay.0", "ping -c 2 -W 1 $__pi '198.18.0.12'", 0, 0.3,
                    (FIX / "ping_iputils_ok.txt").read_text(), "")
    assert [f.kind for f in ping.PING.parse(older, ("underlay", peer), example())] == ["reach"]


def test_at_a_few_percent_a_pair_that_lost_one_echo_still_counts_for_the_lossy_node() -> None:
    bursts = [loss("node1", "node3", 18), loss("node3", "node1", 19),
              loss("node2", "node3", 20), loss("node3", "node2", 19),
              loss("node1", "node2", 20), loss("node2", "node1", 20)]
    [link], _ = lossy_link_facts(cluster(*bursts))
    assert (link.kind, link.node, link.attrs["per_peer"]) == ("link_loss", "node3",
                                                             "node1 7.5%, node2 2.5%")
    # one echo lost, with no lossy pair anywhere, is nothing
    assert lossy_link_facts(cluster(*bursts[2:]))[0] == []


def test_a_random_drop_rule_of_the_lossy_node_is_named_and_kube_proxys_is_not() -> None:
    chaos = Fact("path", "node1", {"flow": "node_in", "proto": "icmp", "verdict": "unknown",
                                   "at": "filter INPUT rule 1 (-m statistic)"})
    balance = Fact("path", "node1", {"flow": "service", "proto": "tcp", "verdict": "unknown",
                                     "at": "nat KUBE-SVC-CDGGSHYLG3RE2FKL rule 1 (-m statistic)"})
    [link], _ = lossy_link_facts(cluster(*node1_lossy(), chaos, balance))
    assert link.attrs["random_rule"] == "filter INPUT rule 1 (-m statistic)"
    [link], _ = lossy_link_facts(cluster(*node1_lossy(), balance))
    assert link.attrs["random_rule"] is None
