"""Parsers on real outputs, old and odd ones included, and on garbage."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kubenetdiag.facts.parse import node_facts, section_status
from kubenetdiag.facts.registry import validate_fact
from kubenetdiag.probes import BY_NAME, Section, iptables, kernel, sysctl
from probe_sections import section


def by_key(facts):
    return {f.attrs["key"]: f for f in facts if f.kind == "sysctl"}


def test_sysctl_recorded_netns():
    facts = sysctl.parse(section("sysctl", "kernel-6.18-netns", 2), "node1")
    keys = by_key(facts)
    assert keys["net.ipv4.ip_forward"].attrs == {
        "key": "net.ipv4.ip_forward",
        "value": "1",
        "number": 1,
        "present": True,
    }
    # removed in Linux 4.12: a fact that says so, not a missing fact
    assert keys["net.ipv4.tcp_tw_recycle"].attrs["present"] is False
    assert keys["net.ipv4.tcp_tw_recycle"].attrs["number"] is None
    assert keys["net.ipv4.conf.lo.rp_filter"].attrs["number"] == 0
    assert keys["net.ipv4.ip_forward"].source.excerpt == "net.ipv4.ip_forward = 1"
    assert all(not validate_fact(f) for f in facts)


def test_sysctl_reads_proxy_arp_per_interface_and_whether_pings_are_answered():
    # a calico node of the lab, proxy ARP switched off on one pod's veth
    keys = by_key(sysctl.parse(section("sysctl", "calico-6.18-proxy-arp-off", 2), "node2"))
    assert keys["net.ipv4.conf.calid0244d9bc21.proxy_arp"].attrs["number"] == 0
    assert keys["net.ipv4.conf.cali0d7763386da.proxy_arp"].attrs["number"] == 1
    assert keys["net.ipv4.icmp_echo_ignore_all"].attrs["number"] == 0
    # a recording made before the key was read: absent, as any key the kernel lacks
    old = by_key(sysctl.parse(section("sysctl", "kernel-6.18-netns", 2), "node1"))
    assert old["net.ipv4.icmp_echo_ignore_all"].attrs["present"] is False


def test_sysctl_centos7_keeps_tw_recycle_and_dotted_interfaces():
    keys = by_key(sysctl.parse(section("sysctl", "centos7-3.10-forward-off"), "n"))
    assert keys["net.ipv4.ip_forward"].attrs["number"] == 0
    assert keys["net.ipv4.tcp_tw_recycle"].attrs["number"] == 1
    assert keys["net.ipv4.conf.flannel.1.rp_filter"].attrs["number"] == 1
    assert keys["net.netfilter.nf_conntrack_count"].attrs["number"] == 257836
    assert keys["net.netfilter.nf_conntrack_tcp_be_liberal"].attrs["number"] == 0
    # a recording made before the key was read: absent, as on a node without nf_conntrack
    old = by_key(sysctl.parse(section("sysctl", "kernel-6.18-netns", 2), "node1"))
    assert old["net.netfilter.nf_conntrack_tcp_be_liberal"].attrs["present"] is False


def test_sysctl_without_br_netfilter_reports_absent_keys():
    keys = by_key(sysctl.parse(section("sysctl", "no-br-netfilter", 2), "n"))
    assert keys["net.bridge.bridge-nf-call-iptables"].attrs["present"] is False
    assert keys["net.ipv4.conf.all.rp_filter"].attrs["number"] == 2


def test_sysctl_permission_denied_is_unknown_not_absent():
    sec = Section(
        "sysctl",
        sysctl.COMMAND,
        2,
        0.0,
        "net/ipv4/ip_forward:1\n",
        "grep: net/netfilter/nf_conntrack_max: Permission denied\n",
    )
    keys = by_key(sysctl.parse(sec, "n"))
    assert "net.netfilter.nf_conntrack_max" not in keys
    assert keys["net.ipv4.tcp_timestamps"].attrs["present"] is False
    assert section_status(sec, sysctl.PROBE)[0] == "permission_denied"


def rules(facts, chain="FORWARD", table="filter"):
    return [
        f.attrs
        for f in facts
        if f.kind == "iptables_rule" and f.attrs["chain"] == chain and f.attrs["table"] == table
    ]


@pytest.mark.parametrize(
    "name,backend",
    [
        ("nft-1.8.9-reject-above-accept", "nf_tables"),
        ("legacy-1.8.9-reject-above-accept", "legacy"),
    ],
)
def test_iptables_both_backends(name, backend):
    facts = iptables.parse(section("iptables", name), "node1")
    fwd = rules(facts)
    assert [r["position"] for r in fwd] == [1, 2, 3, 4]
    first = fwd[0]
    assert first["target"] == "REJECT" and first["target_kind"] == "reject"
    assert first["unconditional"] is True
    assert first["pkts"] == 0
    # a comment is not a match: the jump to KUBE-FORWARD applies to every packet
    assert fwd[1]["target_kind"] == "jump" and fwd[1]["unconditional"] is True
    assert fwd[1]["comment"] == "kubernetes forwarding rules"
    assert fwd[2]["unconditional"] is False  # -m conntrack --ctstate NEW
    chains = {
        (f.attrs["table"], f.attrs["chain"]): f.attrs for f in facts if f.kind == "iptables_chain"
    }
    assert chains[("filter", "FORWARD")]["policy"] == "ACCEPT"
    assert chains[("filter", "FORWARD")]["rules"] == 4
    assert chains[("filter", "KUBE-FORWARD")]["policy"] is None
    assert chains[("nat", "KUBE-SERVICES")]["backend"] == backend
    masq = rules(facts, "POSTROUTING", "nat")
    assert masq[0]["target_kind"] == "other" and masq[0]["target"] == "MASQUERADE"
    assert all(not validate_fact(f) for f in facts)


def test_iptables_hostile_comment_kept_as_data():
    facts = iptables.parse(section("iptables", "nft-1.8.9-reject-above-accept"), "n")
    inp = rules(facts, "INPUT")[0]
    assert inp["comment"] == 'a "quoted" comment with <script>alert(1)</script>'
    assert inp["unconditional"] is False


@settings(max_examples=400)
@example('-A KUBE-SVC-X -m comment --comment "default/kubernetes:https cluster IP" -j KUBE-SEP-Y')
@example('-A INPUT -m comment --comment "" -j ACCEPT')
@given(st.text(alphabet=' \t"\'\\ab-=!\u00e9', max_size=40))
def test_iptables_rule_words_split_as_a_shell_would(spec):
    # the fast tokenizer must agree with shlex on every line, quotes and escapes included
    import shlex

    try:
        expected = shlex.split(spec)
    except ValueError:
        expected = spec.split()
    assert iptables._split(spec) == expected


def test_iptables_without_counters():
    fwd = rules(iptables.parse(section("iptables", "nft-1.8.9-no-counters"), "n"))
    assert fwd[0]["target"] == "REJECT" and fwd[0]["pkts"] is None


def test_iptables_centos7_firewalld_reject_shadows_flannel():
    facts = iptables.parse(section("iptables", "centos7-1.4.21-firewalld"), "n")
    fwd = rules(facts)
    reject = next(r for r in fwd if r["target_kind"] == "reject")
    assert reject["position"] == 9 and reject["unconditional"] and reject["pkts"] == 4410
    later = [r for r in fwd if r["position"] > reject["position"]]
    assert [r["target_kind"] for r in later] == ["jump", "accept", "accept"]
    goto = rules(facts, "FORWARD_IN_ZONES")
    assert goto[1]["target"] == "FWDI_public" and goto[1]["target_kind"] == "jump"
    assert {f.attrs["backend"] for f in facts if f.kind == "iptables_chain"} == {"legacy"}


def test_iptables_truncated_output_fails_soft():
    facts = iptables.parse(section("iptables", "truncated"), "n")
    fwd = rules(facts)
    assert len(fwd) == 2 and fwd[0]["target"] == "DOCKER-USER"
    chains = {f.attrs["chain"]: f.attrs for f in facts if f.kind == "iptables_chain"}
    assert chains["FORWARD"]["policy"] == "DROP"


def test_iptables_not_root_becomes_permission_denied():
    sec = section("iptables", "nonroot", exit_code=4)
    assert section_status(sec, iptables.PROBE) == (
        "permission_denied",
        "iptables-save v1.8.9 (nf_tables): Could not fetch rule set generation id: "
        "Permission denied (you must be root)",
    )
    assert iptables.parse(sec, "n") == []


def test_kernel_versions():
    def release(name):
        return kernel.parse(section("kernel", name), "n")[0].attrs

    assert release("centos7-3.10") == {
        "release": "3.10.0-1160.el7.x86_64",
        "major": 3,
        "minor": 10,
    }
    assert release("debian12-6.18")["minor"] == 18
    assert release("garbage")["major"] is None
    assert kernel.parse(Section("kernel", "", 0, 0, "", ""), "n") == []


def test_node_facts_missing_tool_and_unreachable():
    record = {
        "name": "node3",
        "address": "198.18.0.13",
        "reachable": True,
        "error": None,
        "sections": [
            {"probe": "kernel", "command": "", "exit_code": 0, "stdout": "5.4.0\n", "stderr": ""},
            {
                "probe": "iptables",
                "command": "iptables-save -c",
                "exit_code": 127,
                "stdout": "",
                "stderr": "kubenetdiag: iptables-save: command not found\n",
            },
        ],
    }
    facts = node_facts(record)
    status = {f.attrs["probe"]: f.attrs for f in facts if f.kind == "probe_status"}
    assert status["iptables"]["status"] == "missing_tool"
    assert "packet filter" in status["iptables"]["blocks"]
    assert status["sysctl"]["reason"] == "the probe did not run"
    down = node_facts(
        {
            "name": "n9",
            "address": "x",
            "reachable": False,
            "error": "connection refused",
            "sections": [],
        }
    )
    assert [f.kind for f in down] == ["node_status"]
    assert down[0].attrs["reason"] == "connection refused"


@settings(max_examples=200)
@given(st.text(max_size=400), st.text(max_size=100), st.sampled_from(sorted(BY_NAME)))
def test_parsers_never_crash_on_garbage(stdout, stderr, probe):
    record = {
        "name": "n",
        "address": "a",
        "reachable": True,
        "error": None,
        "sections": [
            {"probe": probe, "command": "", "exit_code": 0, "stdout": stdout, "stderr": stderr}
        ],
    }
    for fact in node_facts(record):
        assert not validate_fact(fact), fact
        assert "could not parse" not in str(fact.attrs.get("reason", "")), fact.attrs


def test_iptables_real_kube_proxy_layout():
    # Recorded from the lab's real kube-proxy v1.36.3 (iptables mode, nf_tables backend).
    facts = iptables.parse(section("iptables", "kube-proxy-1.36.3-nft-1.8.9"), "node2")
    (summary,) = [f.attrs for f in facts if f.kind == "iptables_summary"]
    assert summary["backend"] == "nf_tables" and summary["tables"] == "filter,mangle,nat"
    assert summary["kube_proxy_chains"] and summary["flannel_chains"]
    assert not summary["firewalld_chains"] and not summary["ufw_chains"]
    # default/kubernetes, default/web and kube-dns's three ports
    assert summary["kube_services"] == 5
    chains = {(f.attrs["table"], f.attrs["chain"]): f.attrs
              for f in facts if f.kind == "iptables_chain"}
    # five service VIPs and the NodePort jump, which must stay last
    assert chains[("nat", "KUBE-SERVICES")]["rules"] == 6
    assert chains[("mangle", "KUBE-PROXY-CANARY")]["rules"] == 0
    assert chains[("filter", "KUBE-PROXY-FIREWALL")]["rules"] == 0
    services = rules(facts, "KUBE-SERVICES", "nat")
    assert services[-1]["target"] == "KUBE-NODEPORTS" and services[-1]["dst"] == "!127.0.0.0/8"
    web = next(r for r in services if r["comment"] == "default/web:http cluster IP")
    assert (web["dst"], web["proto"], web["dport"], web["target_kind"]) == (
        "10.96.0.20/32", "tcp", "80", "jump")
    # kube-proxy prepends its jumps: FORWARD starts with its (empty) load-balancer firewall,
    # taken for NEW connections only, then KUBE-FORWARD for every packet
    fwd = rules(facts)
    assert [(r["target"], r["unconditional"]) for r in fwd[:4]] == [
        ("KUBE-PROXY-FIREWALL", False), ("KUBE-FORWARD", True), ("KUBE-SERVICES", False),
        ("KUBE-EXTERNAL-SERVICES", False)]
    assert [r["comment"] for r in fwd[4:]] == ["flanneld forward"] * 2
    # the INVALID drop counts into an nfacct object (iptables-save prints two spaces)
    (invalid,) = [r for r in rules(facts, "KUBE-FORWARD") if r["target"] == "DROP"]
    assert "ct_state_invalid_dropped_pkts" in invalid["spec"] and not invalid["unconditional"]
    sep = rules(facts, "KUBE-SEP-P3PWGNTJJVCLY2WY", "nat")
    assert sep[1]["target"] == "DNAT" and "198.18.0.3:6443" in sep[1]["spec"]
    assert all(not validate_fact(f) for f in facts)


def test_iptables_real_kube_proxy_rejects_a_service_without_endpoints():
    # kube-proxy v1.36.3 once the web Service's endpoints are not ready: no KUBE-SVC/SEP chains
    # for it in nat, a REJECT in the filter table's KUBE-SERVICES instead
    facts = iptables.parse(section("iptables", "kube-proxy-1.36.3-no-endpoints"), "node1")
    (reject,) = rules(facts, "KUBE-SERVICES")
    assert reject["comment"] == "default/web:http has no endpoints"
    assert (reject["target_kind"], reject["dst"], reject["dport"]) == (
        "reject", "10.96.0.20/32", "80")
    nat = [r["comment"] for r in rules(facts, "KUBE-SERVICES", "nat")]
    assert "default/web:http cluster IP" not in nat and "default/kubernetes:https cluster IP" in nat
    (summary,) = [f.attrs for f in facts if f.kind == "iptables_summary"]
    assert summary["kube_services"] == 4
