"""The facts the packet-path walk reads (issue 15), on outputs recorded in a scratch network
namespace with iproute2 6.1, nftables 1.0.6 and kernel 6.18, on the old formats, and on a node
that lacks the tool or the right to read."""

from __future__ import annotations

from kubenetdiag.facts.registry import validate_fact
from kubenetdiag.probes import BY_NAME, Section
from probe_sections import section, statuses


def parse(probe: str, name: str, exit_code: int = 0) -> list:
    facts = BY_NAME[probe].parse(section(probe, name, exit_code), "node1")
    for f in facts:
        assert not validate_fact(f), (f, validate_fact(f))
    return facts


def kinds(facts: list, kind: str) -> list[dict]:
    return [f.attrs for f in facts if f.kind == kind]


# ---- policy routing rules ------------------------------------------------------------------

def rules_by_priority(name: str) -> dict[int, dict]:
    return {r["priority"]: r for r in kinds(parse("ip_rule", name), "ip_rule")}


def test_ip_rule_recorded_json():
    rules = rules_by_priority("iproute2-6.1-netns")
    assert rules[100] == {
        "priority": 100, "action": "blackhole", "table": None, "src": None,
        "dst": "10.244.2.0/24", "iif": None, "oif": None, "fwmark": None, "invert": False,
        "ipproto": None, "dport": None, "text": "100: from all to 10.244.2.0/24 blackhole"}
    # rules added without a priority go just below the lowest one already there
    assert (rules[99]["fwmark"], rules[99]["action"], rules[99]["table"]) == (
        "0x4000/0x4000", "lookup", "200")
    assert (rules[98]["invert"], rules[98]["src"], rules[98]["action"]) == (
        True, "10.0.0.0/8", "unreachable")
    assert (rules[97]["iif"], rules[97]["action"]) == ("eth0", "prohibit")
    # a goto's table is the priority it goes to
    assert (rules[200]["action"], rules[200]["table"]) == ("goto", "32766")
    assert rules[200]["text"].endswith("goto 32766") and rules[850]["table"] == "900"
    assert rules[850]["text"] == "850: from 10.244.3.7 goto 900 [unresolved]"
    # bare addresses are host prefixes; ports keep their range
    assert (rules[300]["src"], rules[300]["dst"], rules[300]["ipproto"], rules[300]["dport"]) == (
        "10.244.1.5/32", "10.96.0.10/32", "udp", "53")
    assert rules[700]["dport"] == "30000-32767" and "sport 1000-2000" in rules[700]["text"]
    assert (rules[400]["oif"], rules[500]["action"], rules[500]["fwmark"]) == (
        "flannel.1", "nop", "0x1")
    assert rules[600]["text"] == "600: from all lookup 300 suppress_prefixlength 0"
    assert rules[800]["invert"] and rules[800]["src"] is None
    assert [rules[p]["table"] for p in (0, 32766, 32767)] == ["local", "main", "default"]


def test_ip_rule_json_and_text_of_the_same_rules_give_the_same_facts():
    as_json = kinds(parse("ip_rule", "iproute2-6.1-netns"), "ip_rule")
    as_text = kinds(parse("ip_rule", "iproute2-6.1-netns-text-form"), "ip_rule")
    assert len(as_json) == 17 and as_json == as_text


def test_ip_rule_centos7_text():
    rules = rules_by_priority("centos7-iproute-3.10-text")
    assert rules[0]["text"] == "0: from all lookup local"  # 3.10's trailing space dropped
    assert (rules[100]["action"], rules[100]["dst"]) == ("blackhole", "10.244.2.0/24")
    assert (rules[200]["invert"], rules[200]["src"], rules[200]["table"]) == (
        True, "10.244.0.0/16", "100")
    assert (rules[400]["iif"], rules[400]["action"]) == ("eth0", "unreachable")
    assert rules[300]["fwmark"] == "0x4000/0x4000"


def test_ip_rule_text_under_a_json_header_is_read_as_text():
    # iproute2 4.15 (Ubuntu 18.04) takes -j but prints rules as text
    rules = rules_by_priority("ubuntu18.04-iproute2-4.15-text-under-json")
    assert (rules[32765]["src"], rules[32765]["table"]) == ("10.244.1.0/24", "100")


def test_ip_rule_missing_ip_and_permission_denied():
    status, facts = statuses("ip_rule", "", "kubenetdiag: ip: command not found\n", 127)
    assert status[0]["status"] == "missing_tool" and not facts
    status, facts = statuses(
        "ip_rule", "##knd:rule text\n",
        "Cannot send dump request: Operation not permitted\n", 1)
    assert status[0]["status"] == "permission_denied" and not facts
    assert "policy routing" in status[0]["blocks"]


# ---- per-interface forwarding --------------------------------------------------------------

def test_sysctl_reads_forwarding_per_interface():
    keys = {f["key"]: f for f in kinds(parse("sysctl", "kernel-6.18-netns-forwarding", 2),
                                        "sysctl")}
    assert keys["net.ipv4.ip_forward"]["number"] == 1
    assert keys["net.ipv4.conf.all.forwarding"]["number"] == 1
    # off on one interface although the global switch is on: routed traffic from it dies
    assert keys["net.ipv4.conf.lxc1.forwarding"]["number"] == 0
    assert keys["net.ipv4.conf.flannel.1.forwarding"]["number"] == 1
    assert keys["net.ipv4.conf.eth0.rp_filter"]["number"] == 1


def test_sysctl_forwarding_glob_stays_in_the_one_grep():
    from kubenetdiag.probes.sysctl import SYSCTL_READ

    # the script's one grep of /proc/sys, and the probe's own where that did not run
    for command in (SYSCTL_READ.command, BY_NAME["sysctl"].command):
        assert command.count("grep -H") == 1 and "net/ipv4/conf/*/forwarding" in command
    assert BY_NAME["sysctl"].preludes == (SYSCTL_READ,)
    status, facts = statuses("sysctl", "", "kubenetdiag: grep: command not found\n", 127)
    assert status[0]["status"] == "missing_tool" and not facts
    status, facts = statuses(
        "sysctl", "net/ipv4/ip_forward:1\n",
        "grep: net/ipv4/conf/eth0/forwarding: Permission denied\n", 2)
    assert status[0]["status"] == "permission_denied"
    assert {f.attrs["key"] for f in facts} >= {"net.ipv4.ip_forward"}


def test_links_give_each_device_its_index_in_both_forms():
    # what a pod's eth0@ifN names: the node's device with that index, its veth
    by_mode = {}
    for mode in ("flannel-vxlan", "calico-bgp", "flannel-host-gw"):
        json_form, text_form = ({i["name"]: i["ifindex"] for i in kinds(
            parse("links", f"lab-{mode}-node1-{form}"), "interface")} for form in ("json", "text"))
        assert json_form == text_form
        assert json_form["lo"] == 1 and len(set(json_form.values())) == len(json_form)
        by_mode[mode] = json_form
    assert {n: i for n, i in by_mode["flannel-vxlan"].items() if n.startswith("veth-pod")} == {
        "veth-pod1": 4, "veth-pod2": 5}


def test_links_read_the_noarp_flag_in_both_forms():
    # a tunnel (tunl0) and an ifb carry NOARP by nature; a pod's bridge or veth never does
    def noarp(name: str) -> set[str]:
        return {i["name"] for i in kinds(parse("links", name), "interface") if i["noarp"]}
    assert noarp("centos7-iproute-4.11-text") == {"tunl0"}
    assert noarp("iproute2-6.1-xdp") == noarp("iproute2-6.1-xdp-text-form") == {"ifb0"}
    assert not noarp("lab-flannel-vxlan-node1-json") | noarp("lab-calico-bgp-node1-text")


# ---- XDP -----------------------------------------------------------------------------------

def xdp_of(name: str) -> dict[str, str | None]:
    return {i["name"]: i["xdp"] for i in kinds(parse("links", name), "interface")}


def test_links_xdp_recorded_in_both_formats():
    for name in ("iproute2-6.1-xdp", "iproute2-6.1-xdp-text-form"):
        xdp = xdp_of(name)
        assert xdp["eth0"] == "generic prog 99 name knd_guard"
        assert xdp["lxc1"] == "native prog 100 name knd_lb"  # veth runs XDP in its driver
        assert {n for n, x in xdp.items() if x} == {"eth0", "lxc1"}


def test_links_without_xdp_and_old_formats():
    assert not any(xdp_of("debian12-netns").values())
    assert not any(xdp_of("centos7-iproute-4.11-text").values())
    # offload in the head word, and a program per mode when several are attached (text form)
    text = ("##knd:link text\n"
            "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 xdpoffload qdisc mq state UP "
            "mode DEFAULT group default qlen 1000\\    link/ether 52:54:00:12:34:56 brd "
            "ff:ff:ff:ff:ff:ff\\    prog/xdp id 7 tag 614b434cd8324ecc jited \n"
            "3: eth1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 xdpmulti qdisc mq state UP "
            "mode DEFAULT group default qlen 1000\\    link/ether 52:54:00:12:34:57 brd "
            "ff:ff:ff:ff:ff:ff\\    prog/xdpdrv id 8 name fw tag 614b434cd8324ecc jited "
            "prog/xdpoffload id 9 tag 614b434cd8324ecc \n"
            "4: eth2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 xdpgeneric/id:12 qdisc mq "
            "state UP mode DEFAULT group default qlen 1000\\    link/ether 52:54:00:12:34:58\n")
    got = {f.attrs["name"]: f.attrs["xdp"]
           for f in BY_NAME["links"].parse(Section("links", "", 0, 0, text, ""), "n")}
    assert got == {"eth0": "offload prog 7", "eth1": "native prog 8 name fw,offload prog 9",
                   "eth2": "generic prog 12"}
    # JSON with two modes attached: each program with its own mode
    multi = ('##knd:link json\n[{"ifindex":2,"ifname":"eth1","flags":["UP"],"mtu":1500,'
             '"xdp":{"mode":4,"attached":[{"mode":1,"prog":{"id":8,"name":"fw"}},'
             '{"mode":3,"prog":{"id":9}}]}}]\n')
    (fact,) = BY_NAME["links"].parse(Section("links", "", 0, 0, multi, ""), "n")
    assert fact.attrs["xdp"] == "native prog 8 name fw,offload prog 9"


def test_links_missing_ip_and_permission_denied():
    status, facts = statuses("links", "", "kubenetdiag: ip: command not found\n", 127)
    assert status[0]["status"] == "missing_tool" and not facts
    status, _ = statuses("links", "##knd:link text\n",
                         "Cannot send dump request: Operation not permitted\n", 1)
    assert status[0]["status"] == "permission_denied"


# ---- traffic control -----------------------------------------------------------------------

def hooks(name: str) -> dict[tuple[str, str], dict]:
    return {(h["dev"], h["direction"]): h for h in kinds(parse("tc", name), "tc_hook")}


def test_tc_recorded_json_and_text_forms():
    for name in ("iproute2-6.1-netns", "iproute2-6.1-netns-text-form"):
        got = hooks(name)
        # default qdiscs (noqueue, pfifo_fast) on every other device give no fact
        assert set(got) == {("eth0", "ingress"), ("eth0", "egress"), ("veth1", "root"),
                            ("lxc1p", "ingress")}
        ingress = got[("eth0", "ingress")]
        assert (ingress["qdisc"], ingress["filters"], ingress["actions"]) == (
            "clsact", 1, "u32,mirred")
        assert "2118" in ingress["text"]  # 8472, the VXLAN port, as u32 prints it
        assert (got[("eth0", "egress")]["actions"], got[("eth0", "egress")]["filters"]) == (
            "bpf", 1)
        assert (got[("veth1", "root")]["qdisc"], got[("veth1", "root")]["actions"]) == (
            "htb", "u32")
        assert (got[("lxc1p", "ingress")]["qdisc"], got[("lxc1p", "ingress")]["filters"]) == (
            "ingress", 1)


def test_tc_centos7_text_ingress_drop_and_netem():
    got = hooks("centos7-iproute-4.11-ingress-drop")
    assert got[("eth0", "ingress")]["actions"] == "u32,drop"
    assert got[("eth0", "ingress")]["filters"] == 1
    netem = got[("veth3a1b2c4d", "root")]
    assert (netem["qdisc"], netem["filters"], netem["actions"]) == ("netem", 0, None)
    assert set(got) == {("eth0", "ingress"), ("veth3a1b2c4d", "root")}


def recorded_tc() -> str:
    return section("tc", "iproute2-6.1-netns").stdout


def test_tc_a_device_gone_before_its_filters_were_listed_is_skipped_and_said():
    out = recorded_tc().splitlines()
    json_lines = [i for i, line in enumerate(out) if line.startswith("[")]
    del out[json_lines[2]]  # veth1's answer: the third batch line failed
    stderr = 'Cannot find device "veth1"\nCommand failed -:3\n'
    facts = BY_NAME["tc"].parse(Section("tc", "", 0, 0, "\n".join(out) + "\n", stderr), "n")
    got = {(f.attrs["dev"], f.attrs["direction"]) for f in facts if f.kind == "tc_hook"}
    assert got == {("eth0", "ingress"), ("eth0", "egress"), ("lxc1p", "ingress")}
    (status,) = kinds(facts, "probe_status")
    assert status["status"] == "failed" and "veth1:1:" in status["reason"]


def test_tc_answers_that_cannot_be_matched_to_devices_are_not_guessed():
    out = recorded_tc().splitlines()
    del out[[i for i, line in enumerate(out) if line.startswith("[")][0]]  # no stderr says why
    facts = BY_NAME["tc"].parse(Section("tc", "", 0, 0, "\n".join(out) + "\n", ""), "n")
    assert not kinds(facts, "tc_hook")
    assert kinds(facts, "probe_status")[0]["status"] == "failed"


def test_tc_command_lists_filters_in_one_batch():
    command = BY_NAME["tc"].command
    assert command.count("tc -j -force -b -") == 1 and command.count("tc qdisc show") == 1


def test_tc_missing_and_permission_denied():
    status, facts = statuses("tc", "", "kubenetdiag: tc: command not found\n", 127)
    assert status[0]["status"] == "missing_tool" and not facts
    status, facts = statuses("tc", "", "RTNETLINK answers: Operation not permitted\n", 2)
    assert status[0]["status"] == "permission_denied" and not facts
    # no device with anything to list: one process, no fact, no complaint
    status, facts = statuses("tc", "##knd:qdisc\nqdisc noqueue 0: dev lo root refcnt 2 \n", "", 0)
    assert not status and not facts


# ---- nftables: regular chains --------------------------------------------------------------

def test_nftables_rules_of_regular_chains_for_the_walk_to_follow():
    facts = parse("nftables", "nft-1.0.6-regular-chains")
    chains = {(c["table"], c["chain"]) for c in kinds(facts, "nft_chain")}
    # base chains only: the regular ones have no hook, policy or priority
    assert chains == {("guard", "input"), ("guard", "forward"), ("filter", "FORWARD")}
    rules = {(r["chain"], r["position"]): r for r in kinds(facts, "nft_rule")}
    assert (rules[("input", 1)]["verdict"], rules[("input", 1)]["text"]) == (
        "jump", 'iifname "eth0" jump overlay')
    assert rules[("overlay", 1)]["verdict"] == "drop" and rules[("overlay", 1)]["pkts"] == 0
    assert [rules[("overlay", n)]["verdict"] for n in (2, 3)] == ["goto", "return"]
    assert rules[("peers", 2)]["verdict"] == "reject"
    assert rules[("forward", 1)]["text"].endswith("goto pods")
    assert [rules[("pods", n)]["verdict"] for n in (1, 2)] == ["accept", "reject"]
    # iptables-nft's own tables stay the iptables probe's, user chains included
    assert not [r for r in kinds(facts, "nft_rule") if r["table"] == "filter"]
    assert {t["table"]: t["owner"] for t in kinds(facts, "nft_table")} == {
        "guard": "nft", "filter": "iptables-nft"}


def test_nftables_old_fixtures_unchanged_and_failures():
    # no regular chain there: the same rules as before
    rules = kinds(parse("nftables", "debian12-netns"), "nft_rule")
    assert {r["chain"] for r in rules} == {"input", "forward"}
    status, facts = statuses(
        "nftables", "", "kubenetdiag: nft: command not found (nf_tables is loaded)\n", 127)
    assert status[0]["status"] == "missing_tool" and not facts
    status, facts = statuses(
        "nftables", "", "Error: Could not process rule: Operation not permitted\n", 1)
    assert status[0]["status"] == "permission_denied" and not facts


# ---- iptables: which backend a rule is in --------------------------------------------------

def test_iptables_rules_carry_their_backend():
    nft = parse("iptables", "nft-1.8.9-legacy-present")
    legacy = parse("iptables_legacy", "debian12-netns")
    assert {r["backend"] for r in kinds(nft, "iptables_rule")} == {"nf_tables"}
    assert {r["backend"] for r in kinds(legacy, "iptables_rule")} == {"legacy"}
    # the same FORWARD chain recorded with each backend: its rules are told apart
    both = parse("iptables", "nft-1.8.9-reject-above-accept") + parse(
        "iptables", "legacy-1.8.9-reject-above-accept")
    forward = [(r["position"], r["backend"]) for r in kinds(both, "iptables_rule")
               if (r["table"], r["chain"]) == ("filter", "FORWARD")]
    assert sorted(forward) == sorted((n, b) for n in (1, 2, 3, 4)
                                     for b in ("nf_tables", "legacy"))
    # CentOS 7's 1.4.21 names no backend: it is legacy; a cut banner stays unknown in the
    # iptables probe, but the legacy probe can only have read the legacy backend
    assert {r["backend"] for r in kinds(parse("iptables", "centos7-1.4.21-firewalld"),
                                         "iptables_rule")} == {"legacy"}
    bare = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p udp --dport 8472 -j DROP\nCOMMIT\n"
    for probe, backend in (("iptables", "unknown"), ("iptables_legacy", "legacy")):
        facts = BY_NAME[probe].parse(Section(probe, "", 0, 0, bare, ""), "n")
        assert {f.attrs["backend"] for f in facts
                if f.kind in ("iptables_rule", "iptables_chain")} == {backend}


def test_iptables_missing_and_permission_denied():
    status, facts = statuses("iptables", "", "kubenetdiag: iptables-save: command not found\n",
                             127)
    assert status[0]["status"] == "missing_tool" and not facts
    sec = section("iptables", "nonroot", exit_code=4)
    status, facts = statuses("iptables", sec.stdout, sec.stderr, 4)
    assert status[0]["status"] == "permission_denied" and not facts


# ---- process state -------------------------------------------------------------------------

def agents(name: str) -> dict[str, dict]:
    return {p["name"]: p for p in kinds(parse("processes", name), "process")}


def test_process_state_recorded_with_procps_busybox_and_proc():
    for name in ("debian12-procps-4.0-states", "busybox-1.35-states", "proc-stat-states"):
        got = agents(name)
        # listed, so "running" as before; the state says it does nothing
        assert (got["bird"]["running"], got["bird"]["state"]) == (True, "T"), name
        assert (got["flanneld"]["running"], got["flanneld"]["state"]) == (True, "Z"), name
        # an old zombie beside a live agent: the live one is described
        kube_proxy = got["kube-proxy"]
        assert (kube_proxy["count"], kube_proxy["state"]) == (2, "S"), name
        assert got["kubelet"]["state"] is None and not got["kubelet"]["running"]
    assert agents("debian12-procps-4.0-states")["kube-proxy"]["args"] == "./bin/kube-proxy 30"


def test_process_state_unknown_in_older_bundles():
    for name in ("debian12-netns", "busybox-security-software", "proc-fallback"):
        assert all(p["state"] is None for p in kinds(parse("processes", name), "process"))
    assert agents("busybox-security-software")["flanneld"]["running"] is True


def test_processes_one_ps_and_failures():
    command = BY_NAME["processes"].command
    assert command.count("ps -e -o pid= -o stat= -o comm= -o args=") == 1
    # ps straight into awk (no second ps attempt); without ps the shell reads /proc/PID/stat
    # itself, no process per PID
    assert "ps -e -o pid= -o stat= -o comm= -o args= 2>/dev/null | awk" in command
    assert "cat " not in command and "sed " not in command
    status, facts = statuses("processes", "", "kubenetdiag: awk: command not found\n", 127)
    assert status[0]["status"] == "missing_tool" and not facts
    sec = section("processes", "proc-stat-states")
    status, facts = statuses("processes", sec.stdout,
                             "sh: 1: cannot open /proc/1/stat: Permission denied\n", 0)
    assert status[0]["status"] == "permission_denied"
    assert any(f.attrs.get("state") == "T" for f in facts if f.kind == "process")


def test_tc_json_lines_an_old_tc_could_not_print_whole_are_not_counted_as_no_filter():
    out = recorded_tc().replace('"kind":"bpf","chain":0,"options"',
                                '"kind":"bpf","chain":0, handle 0x1 bytecode, "options"')
    facts = BY_NAME["tc"].parse(Section("tc", "", 0, 0, out, ""), "n")
    assert not kinds(facts, "tc_hook") and kinds(facts, "probe_status")
