"""IPsec (xfrm) policies: the probe's parser on what ip prints (tests/fixtures/probes/xfrm),
the SAs it lists without their keys, and the path walk's lookup, which ends a flow at a block
policy of its direction or at a policy going out whose template has no SA."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kubenetdiag.collect.script import build_script, new_marker, split_output
from kubenetdiag.facts.model import Fact
from kubenetdiag.probes import Probe
from kubenetdiag.probes.base import Section
from kubenetdiag.probes.xfrm import LISTENERS_HEAD, PROBE, STATE_HEAD, parse
from test_paths import cluster, f, stops

FIX = Path(__file__).parent / "fixtures" / "probes" / "xfrm"


def _parse(name: str) -> list[Fact]:
    return parse(Section("xfrm", "ip xfrm policy list", 0, 0.0, (FIX / name).read_text(), ""),
                 "n1")


def _policies(facts: list[Fact]) -> list[tuple]:
    return [(p.attrs["dir"], p.attrs["src"], p.attrs["dst"], p.attrs["action"],
             p.attrs["priority"], p.attrs["ipsec"]) for p in facts if p.kind == "xfrm_policy"]


def test_iproute2_6_1_every_selector_word_and_template():
    facts = _parse("iproute2-6.1-netns.txt")
    assert not [x for x in facts if x.kind == "probe_status"]
    assert _policies(facts) == [
        ("out", "::/0", "fd00::/64", "block", 0, False),
        ("out", "0.0.0.0/0", "10.96.0.0/12", "block", 20, False),
        ("out", "10.244.1.0/24", "10.244.3.0/24", "allow", 5, True),
        ("fwd", "10.244.1.0/24", "10.244.3.0/24", "allow", 5, True),
        ("in", "198.18.0.12/32", "198.18.0.11/32", "block", 10, False),
        ("out", "0.0.0.0/0", "10.244.2.0/24", "block", 0, False),
    ]
    marked = facts[1].attrs
    assert (marked["proto"], marked["dport"], marked["dev"], marked["mark"]) == (
        "tcp", 443, "lo", "0x1/0xffffffff")
    vxlan = facts[4].attrs
    assert (vxlan["proto"], vxlan["dport"], vxlan["mark"], vxlan["main"]) == (
        "udp", 8472, None, True)
    assert facts[5].source is not None and "action block" in facts[5].source.excerpt


def test_strongswan_socket_policies_are_left_out():
    facts = _parse("strongswan-socket-policies.txt")
    assert not [x for x in facts if x.kind == "probe_status"]
    assert [p[0] for p in _policies(facts)] == ["out", "fwd", "in"]
    assert all(p[3] == "allow" and p[5] for p in _policies(facts))


def test_centos7_iproute_without_ptype_and_a_large_priority():
    assert _policies(_parse("centos7-iproute-3.10.txt")) == [
        ("in", "10.244.3.0/24", "10.244.1.0/24", "allow", 2147483648, True),
        ("out", "0.0.0.0/0", "10.244.3.0/24", "block", 0, False),
    ]


def test_no_policy_gives_no_fact_and_no_complaint():
    assert _parse("lab-healthy-empty.txt") == []


def test_lines_in_another_form_are_partial_not_guessed():
    facts = _parse("odd-lines.txt")
    [status] = [x for x in facts if x.kind == "probe_status"]
    assert status.attrs["status"] == "partial" and status.attrs["kinds"] == ""
    assert "secctx" in status.attrs["reason"] and "weird" in status.attrs["reason"]
    # the policy whose other lines were read stands; the one with an unknown action does not
    assert _policies(facts) == [("out", "0.0.0.0/0", "10.244.2.0/24", "block", 0, False)]


def _sa(facts: list[Fact]) -> list[tuple]:
    return [(p.attrs["dir"], p.attrs["dst"], p.attrs["sa"], p.attrs["missing"])
            for p in facts if p.kind == "xfrm_policy"]


def test_each_policy_says_whether_its_template_has_an_sa():
    facts = _parse("strongswan-tunnel-sa-missing.txt")
    assert not [x for x in facts if x.kind == "probe_status"]
    assert _sa(facts) == [
        ("out", "10.244.2.0/24", "present", None),
        ("fwd", "10.244.1.0/24", "present", None),
        ("in", "10.244.1.0/24", "present", None),
        # the only SA toward .13 is the kernel's larval one (spi 0): it asked a key manager,
        # none came, nothing to encrypt with
        ("out", "10.244.3.0/24", "acquire",
         "src 198.18.0.11 dst 198.18.0.13 proto esp reqid 2 mode tunnel"),
        ("in", "10.244.1.0/24", "present", None),
        # the SA for .14 belongs to an XFRM interface (if_id), which this policy is not
        ("out", "198.18.0.14/32", "missing",
         "src 0.0.0.0 dst 0.0.0.0 proto esp reqid 3 mode transport"),
        # `level use`: an SA if there is one, plain otherwise
        ("out", "198.18.0.15/32", None, None),
    ]


def test_cilium_after_a_key_rotation_one_peer_keeps_the_old_spi():
    """Cilium's policies carry its marks and name the SPI; the peer whose SA still has the
    old SPI has no SA for the policy, and the optional templates coming in ask for none."""
    facts = _parse("cilium-ipsec-key-rotation.txt")
    assert not [x for x in facts if x.kind == "probe_status"]
    assert [(d, dst, sa) for d, dst, sa, _ in _sa(facts)] == [
        ("out", "10.0.2.0/24", "present"), ("out", "10.0.3.0/24", "missing"),
        ("in", "10.0.1.0/24", None), ("fwd", "10.0.1.0/24", None)]
    assert facts[1].attrs["mark"] == "0x4e00/0xff00"
    assert facts[1].attrs["missing"] == (
        "src 0.0.0.0 dst 192.168.56.13 proto esp spi 0x00000004 reqid 1 mode tunnel")


def test_a_template_in_another_form_is_partial_and_the_policy_left_out():
    text = ("src 10.244.1.0/24 dst 10.244.2.0/24 \n\tdir out priority 0 ptype main \n"
            "\ttmpl src 198.18.0.11 dst 198.18.0.12\n\t\tproto esp reqid one mode tunnel\n"
            "\t\tlevel use \n"
            "src 0.0.0.0/0 dst 10.244.3.0/24 \n\tdir out action block priority 0 ptype main \n"
            "##knd:xfrm-state\nsrc 198.18.0.11 dst 198.18.0.12\n\tproto esp spi zz\n")
    facts = parse(Section("xfrm", "", 0, 0.0, text, ""), "n1")
    [status] = [x for x in facts if x.kind == "probe_status"]
    assert status.source is not None
    assert "reqid one" in status.source.excerpt and "spi zz" in status.source.excerpt
    assert _sa(facts) == [("out", "10.244.3.0/24", None, None)]


def test_recorded_policies_with_no_sa_at_all():
    """The probe's own output in a network namespace of this kernel, which holds no SA: the
    state listing ran (its heading is there) and named none."""
    facts = _parse("iproute2-6.1-sa-missing-netns.txt")
    assert not [x for x in facts if x.kind == "probe_status"]
    assert [(d, sa) for d, _, sa, _ in _sa(facts)] == [
        ("in", "missing"), ("out", "missing"), ("out", "missing")]


def test_sas_not_listed_are_unread_and_old_fixtures_too():
    text = (FIX / "strongswan-tunnel-sa-missing.txt").read_text()
    failed = text[:text.index(STATE_HEAD)] + STATE_HEAD + " failed\n"
    facts = parse(Section("xfrm", "", 0, 0.0, failed, ""), "n1")
    assert {sa for _, _, sa, _ in _sa(facts)} == {"unread", None}
    # a bundle from before the SAs were listed: templates, no heading
    assert {sa for _, _, sa, _ in _sa(_parse("iproute2-6.1-netns.txt"))} == {"unread", None}


KEY = "0x5ec2e75ec2e75ec2e75ec2e75ec2e75e"


def _node_with_ip(tmp_path: Path, policies: str, states: str) -> Section:
    """The real probe in the node script, with `ip` a shell function that prints what an
    iproute2 before 5.1 prints for `ip xfrm state list nokeys`: the word ignored, the keys
    shown."""
    (tmp_path / "policy").write_text(policies)
    (tmp_path / "state").write_text(states)
    fake = f"ip() {{ cat {tmp_path}/$2; }}"
    probes = [Probe("fake-ip", fake, lambda section, node: [], ""), PROBE]
    marker = new_marker()
    proc = subprocess.run(["sh", "-s"], input=build_script(probes, marker),
                          capture_output=True, text=True, timeout=60)
    return split_output(proc.stdout, proc.stderr, marker, probes)[1]


def test_the_sa_keys_never_leave_the_node(tmp_path: Path):
    policies = ("src 10.244.1.0/24 dst 10.244.2.0/24 \n\tdir out priority 0 ptype main \n"
                "\ttmpl src 198.18.0.11 dst 198.18.0.12\n\t\tproto esp reqid 1 mode tunnel\n")
    states = ("src 198.18.0.11 dst 198.18.0.12\n"
              "\tproto esp spi 0xc1a2b3c4 reqid 1 mode tunnel\n"
              "\treplay-window 0 flag af-unspec\n"
              f"\tauth-trunc hmac(sha256) {KEY} 128\n"
              f"\tenc cbc(aes) {KEY}\n"
              f"\taead rfc4106(gcm(aes)) {KEY} 128\n"
              "\tanti-replay context: seq 0x0, oseq 0x9, bitmap 0x00000000\n"
              "\tsel src 0.0.0.0/0 dst 0.0.0.0/0 \n")
    section = _node_with_ip(tmp_path, policies, states)
    assert section.exit_code == 0, section.stderr
    assert KEY[2:12] not in section.stdout + section.stderr
    assert section.stdout.endswith(
        "##knd:xfrm-state\nsrc 198.18.0.11 dst 198.18.0.12\n"
        "\tproto esp spi 0xc1a2b3c4 reqid 1 mode tunnel\n")
    facts = parse(section, "n1")
    assert _sa(facts) == [("out", "10.244.2.0/24", "present", None)]


def test_without_a_template_the_sas_are_not_asked_for(tmp_path: Path):
    section = _node_with_ip(tmp_path, "src 0.0.0.0/0 dst 10.244.2.0/24 \n\tdir out action block "
                            "priority 0 ptype main \n", f"\tenc cbc(aes) {KEY}\n")
    assert STATE_HEAD not in section.stdout and KEY[2:12] not in section.stdout
    assert _sa(parse(section, "n1")) == [("out", "10.244.2.0/24", None, None)]


def policy(node: str, direction: str, src: str, dst: str, action: str = "block",
           priority: int = 0, **extra) -> Fact:
    attrs = {"dir": direction, "src": src, "dst": dst, "proto": None, "sport": None,
             "dport": None, "dev": None, "action": action, "priority": priority,
             "ipsec": False, "mark": None, "main": True,
             "text": f"src {src} dst {dst} dir {direction} action {action}"}
    attrs.update(extra)
    return f("xfrm_policy", node, **attrs)


def test_a_block_policy_out_stops_the_nodes_pods_toward_one_peer():
    facts = cluster(policy("n2", "out", "0.0.0.0/0", "10.244.3.0/24"))
    got = stops(facts, "n2", "pod_out")
    assert {s["peer"] for s in got} == {"n3"}
    assert (got[0]["stage"], got[0]["verdict"]) == ("xfrm", "drop")
    assert got[0]["undo"] == "ip xfrm policy delete dir out src 0.0.0.0/0 dst 10.244.3.0/24"
    # the other direction, and the other peer, pass
    assert not stops(facts, "n2", "pod_in") and not stops(facts, "n3")


def test_fwd_and_in_policies_meet_forwarded_and_delivered_traffic():
    fwd = cluster(policy("n2", "fwd", "10.244.1.0/24", "0.0.0.0/0"))
    assert {(s["flow"], s["peer"]) for s in stops(fwd, "n2")} == {("pod_in", "n1")}
    inbound = cluster(policy("n2", "in", "198.18.0.11/32", "198.18.0.12/32", proto="udp",
                             dport=8472))
    assert {(s["flow"], s["peer"], s["stage"]) for s in stops(inbound, "n2")} == {
        ("overlay_in", "n1", "xfrm")}


def test_the_lowest_priority_decides_and_a_tie_is_not_guessed():
    allowed = cluster(policy("n2", "out", "0.0.0.0/0", "10.244.3.0/24", priority=10),
                      policy("n2", "out", "10.244.0.0/16", "10.244.0.0/16", "allow", 5))
    assert not stops(allowed, "n2")
    tie = cluster(policy("n2", "out", "0.0.0.0/0", "10.244.3.0/24", priority=5),
                  policy("n2", "out", "10.244.0.0/16", "10.244.0.0/16", "allow", 5))
    got = stops(tie, "n2", "pod_out")
    assert got and {(s["verdict"], s["stage"], s["peer"]) for s in got} == {
        ("unknown", "xfrm", "n3")}


def test_policies_limited_to_a_mark_or_another_selector_are_left_out():
    facts = cluster(policy("n2", "out", "0.0.0.0/0", "10.244.3.0/24", mark="0x1/0xffffffff"),
                    policy("n2", "out", "0.0.0.0/0", "10.244.3.0/24", proto="tcp", dport=443),
                    policy("n2", "out", "::/0", "fd00::/64"))
    assert not stops(facts, "n2")


def test_a_device_selector_is_the_routes_device():
    """The kernel compares a selector's device with the device of the packet's route: for a
    pod's packet to a peer's pod on VXLAN, flannel.1, not the node's NIC."""
    on_overlay = cluster(policy("n2", "out", "0.0.0.0/0", "10.244.3.0/24", dev="flannel.1"))
    assert {s["peer"] for s in stops(on_overlay, "n2", "pod_out")} == {"n3"}
    on_nic = cluster(policy("n2", "out", "0.0.0.0/0", "10.244.3.0/24", dev="eth0"))
    assert not stops(on_nic, "n2")


def _tunnel(node: str, dst: str, sa: str | None, priority: int = 0, **extra) -> Fact:
    return policy(node, "out", "0.0.0.0/0", dst, "allow", priority, ipsec=True, sa=sa,
                  missing="src 198.18.0.12 dst 198.18.0.13 proto esp reqid 1 mode tunnel"
                  if sa == "missing" else None, **extra)


def test_a_policy_going_out_without_its_sa_drops_the_flows_it_covers():
    facts = cluster(_tunnel("n2", "10.244.3.0/24", "missing"))
    got = stops(facts, "n2", "pod_out")
    assert {(s["peer"], s["stage"], s["verdict"]) for s in got} == {("n3", "ipsec", "drop")}
    assert "requires an IPsec SA src 198.18.0.12 dst 198.18.0.13" in got[0]["at"]
    assert got[0]["undo"] is None  # deleting it would send the traffic unencrypted
    assert not stops(facts, "n2", "pod_in") and not stops(facts, "n3")


def test_an_sa_present_or_not_listed_lets_the_flow_pass():
    for sa in ("present", "unread", None):
        assert not stops(cluster(_tunnel("n2", "10.244.3.0/24", sa)), "n2"), sa


def test_a_template_coming_in_with_no_sa_to_decrypt_drops_what_the_peer_sends():
    """In and fwd templates take only what was decrypted through their SA: with none on the
    node, neither plain nor encrypted packets from the peer get through."""
    inbound = cluster(policy("n2", "in", "198.18.0.11/32", "198.18.0.12/32", "allow",
                             ipsec=True, sa="missing", missing="src 0.0.0.0 dst 0.0.0.0 "
                             "proto esp reqid 1 mode transport"))
    got = stops(inbound, "n2")
    assert {(s["flow"], s["peer"], s["stage"], s["verdict"]) for s in got} >= {
        ("overlay_in", "n1", "ipsec", "drop")}
    assert "accepts only what arrives through an IPsec SA" in got[0]["at"]
    fwd = cluster(policy("n2", "fwd", "10.244.1.0/24", "0.0.0.0/0", "allow", ipsec=True,
                         sa="missing", missing="src 198.18.0.11 dst 198.18.0.12 proto esp "
                         "reqid 1 mode tunnel"))
    assert {(s["flow"], s["peer"], s["stage"]) for s in stops(fwd, "n2")} == {
        ("pod_in", "n1", "ipsec")}
    # where the node has the SA, what the peer sent is the peer's walk's business
    present = cluster(policy("n2", "fwd", "10.244.1.0/24", "0.0.0.0/0", "allow", ipsec=True,
                             sa="present"))
    assert not stops(present, "n2")


def test_equal_priority_policies_that_disagree_on_the_sa_are_undecided():
    facts = cluster(_tunnel("n2", "10.244.3.0/24", "missing", 5),
                    _tunnel("n2", "10.244.0.0/16", "present", 5))
    got = stops(facts, "n2", "pod_out")
    assert {(s["verdict"], s["stage"], s["peer"]) for s in got} == {("unknown", "ipsec", "n3")}


def test_a_policy_of_an_xfrm_interface_is_left_out():
    assert not stops(cluster(_tunnel("n2", "10.244.3.0/24", "missing", if_id=7)), "n2")


# ---------------------------------------------------------------- tunnels negotiated on demand


def test_an_idle_on_demand_tunnel_is_not_a_missing_sa():
    """Recorded with strongSwan's charon (`start_action = trap`) in a scratch namespace: its
    policies, charon subscribed to the kernel's ACQUIRE, no SA yet. Healthy while idle."""
    facts = _parse("strongswan-trap-idle-netns.txt")
    assert not [x for x in facts if x.kind == "probe_status"]
    assert [(d, sa) for d, _, sa, _ in _sa(facts)] == [
        ("out", "on_demand"), ("fwd", "on_demand"), ("in", "on_demand")]
    # the same listing on a node where nothing listens: nothing can ever install the SA
    text = (FIX / "strongswan-trap-idle-netns.txt").read_text().replace(
        "##knd:xfrm-acquire-listeners 1", "##knd:xfrm-acquire-listeners 0")
    alone = parse(Section("xfrm", "", 0, 0.0, text, ""), "n1")
    assert {sa for _, _, sa, _ in _sa(alone)} == {"missing"}
    # /proc/net/netlink unreadable: as before the listeners were read
    text = text.replace("listeners 0", "listeners unread")
    assert {sa for _, _, sa, _ in _sa(parse(Section("xfrm", "", 0, 0.0, text, ""), "n1"))} \
        == {"missing"}


def test_a_request_the_key_manager_left_unanswered_is_acquire():
    """Recorded just after a packet hit the trap: charon negotiated IKE and the kernel (no
    ESP) refused the child SA, so the larval entry (SPI 0) stays."""
    facts = _parse("strongswan-trap-acquire-netns.txt")
    # the request going out is for the reqid's SAs both ways: none will decrypt either
    assert [(d, sa) for d, _, sa, _ in _sa(facts)] == [
        ("out", "acquire"), ("fwd", "acquire"), ("in", "acquire")]
    [out] = [x for x in facts if x.kind == "xfrm_policy" and x.attrs["dir"] == "out"]
    assert out.attrs["missing"] == ("src 198.18.200.1 dst 198.18.200.2 proto esp reqid 1 "
                                    "mode tunnel")


def test_the_probe_counts_acquire_listeners_from_proc_net_netlink(tmp_path: Path):
    """The node's shell reads /proc/net/netlink itself: sockets of NETLINK_XFRM (6) whose
    group mask has bit 0 (XFRMNLGRP_ACQUIRE); other protocols and groups do not count."""
    policies = ("src 10.244.1.0/24 dst 10.244.2.0/24 \n\tdir out priority 0 ptype main \n"
                "\ttmpl src 198.18.0.11 dst 198.18.0.12\n\t\tproto esp reqid 1 mode tunnel\n")
    section = _node_with_ip(tmp_path, policies, "")
    assert section.exit_code == 0, section.stderr
    [line] = [x for x in section.stdout.splitlines() if x.startswith(LISTENERS_HEAD)]
    count = sum(1 for row in Path("/proc/net/netlink").read_text().splitlines()[1:]
                if row.split()[1] == "6" and int(row.split()[3], 16) & 1)
    assert line == f"{LISTENERS_HEAD} {count}"


def _on_demand(node: str, sa: str, direction: str = "out", dst: str = "10.244.3.0/24",
               src: str = "0.0.0.0/0", ends: str = "src 198.18.0.12 dst 198.18.0.13") -> Fact:
    return policy(node, direction, src, dst, "allow", ipsec=True, sa=sa,
                  missing=f"{ends} proto esp reqid 1 mode tunnel")


def test_the_walk_lets_an_on_demand_tunnel_come_up():
    assert not stops(cluster(_on_demand("n2", "on_demand")), "n2")


def test_a_request_left_unanswered_drops_like_a_missing_sa():
    got = stops(cluster(_on_demand("n2", "acquire")), "n2", "pod_out")
    assert {(s["peer"], s["stage"], s["verdict"]) for s in got} == {("n3", "ipsec", "drop")}
    assert got[0]["at"].endswith("none, asked of the key manager and not installed")


def test_larval_entries_read_after_the_checks_turn_on_demand_into_a_drop():
    """The after-check's larval entry names the template: the checks' packets made the kernel
    ask, and after them no SA had come. An entry for another tunnel changes nothing."""
    larval = f("xfrm_acquire", "n2", src="198.18.0.12", dst="198.18.0.13", proto="esp",
               reqid=1, mode="tunnel")
    got = stops(cluster(_on_demand("n2", "on_demand"), larval), "n2", "pod_out")
    assert {(s["peer"], s["verdict"]) for s in got} == {("n3", "drop")}
    other = f("xfrm_acquire", "n2", src="198.18.0.12", dst="198.18.0.11", proto="esp",
              reqid=1, mode="tunnel")
    assert not stops(cluster(_on_demand("n2", "on_demand"), other), "n2")
    # the same negotiation stands for the way in: no SA will decrypt what n3's pods send
    fwd = _on_demand("n2", "on_demand", "fwd", "0.0.0.0/0", "10.244.3.0/24",
                     "src 198.18.0.13 dst 198.18.0.12")
    got = stops(cluster(fwd, larval), "n2")
    assert {(s["flow"], s["peer"], s["verdict"]) for s in got} == {("pod_in", "n3", "drop")}
    elsewhere = f("xfrm_acquire", "n1", src="198.18.0.12", dst="198.18.0.13", proto="esp",
                  reqid=1, mode="tunnel")
    assert not stops(cluster(_on_demand("n2", "on_demand"), elsewhere), "n2")


def _after(name: str, rc: int = 0) -> list[Fact]:
    from kubenetdiag.probes.active.common import example, section
    from kubenetdiag.probes.active.xfrm_after import XFRM_AFTER
    text = (Path(__file__).parent / "fixtures" / "active" / name).read_text() if name else ""
    return XFRM_AFTER.parse(section("active.xfrm_after", text, rc), None, example())


def test_the_after_check_reads_larval_entries_and_says_when_it_could_not():
    [larval] = _after("xfrm_after_larval.txt")  # recorded with charon, as above
    assert larval.kind == "xfrm_acquire"
    assert (larval.attrs["src"], larval.attrs["dst"], larval.attrs["reqid"],
            larval.attrs["mode"]) == ("198.18.200.1", "198.18.200.2", 1, "tunnel")
    assert _after("xfrm_after_none.txt") == []
    [missing] = _after("", 127)
    assert (missing.kind, missing.attrs["status"]) == ("probe_status", "missing_tool")
    [cut] = _after("")  # the listing cut short: not read as "no request pending"
    assert (cut.kind, cut.attrs["status"]) == ("probe_status", "failed")


def test_only_nodes_with_an_on_demand_policy_are_asked_again():
    from kubenetdiag.probes.active.xfrm_after import XFRM_AFTER
    assert XFRM_AFTER.targets({"xfrm_on_demand": True}) == [("", None)]
    assert XFRM_AFTER.targets({"xfrm_on_demand": False}) == []
    assert XFRM_AFTER.targets({}) == []  # a plan stored by an older version


def test_the_after_check_keeps_no_key_either(tmp_path: Path):
    """An ip before 5.1 ignores `nokeys`: the after-check's shell keeps only a larval entry's
    address and protocol lines, never a key, and a real SA is not a request left pending."""
    from kubenetdiag.probes.active.xfrm_after import XFRM_AFTER
    (tmp_path / "state").write_text(
        "src 198.18.0.12 dst 198.18.0.11\n"
        "\tproto esp spi 0x00000000 reqid 1 mode tunnel\n"
        "\treplay-window 0 \n"
        "src 198.18.0.12 dst 198.18.0.13\n"
        "\tproto esp spi 0xc1a2b3c4 reqid 2 mode tunnel\n"
        f"\tauth-trunc hmac(sha256) {KEY} 128\n"
        f"\tenc cbc(aes) {KEY}\n")
    script = (f"ip() {{ cat {tmp_path}/state; }}; "
              + XFRM_AFTER.after_command({"xfrm_on_demand": True}))
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert KEY[2:12] not in proc.stdout
    assert proc.stdout == ("src 198.18.0.12 dst 198.18.0.11\n"
                           "\tproto esp spi 0x00000000 reqid 1 mode tunnel\nknd-done\n")
