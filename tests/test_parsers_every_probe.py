"""Every probe's parser on recorded and old-format outputs, and on garbage: each probe has
fixtures of real outputs, and no output makes a parser raise."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kubenetdiag.facts.parse import node_facts
from kubenetdiag.facts.registry import validate_fact
from kubenetdiag.probes import BY_NAME, PROBES, Section
from probe_sections import FIX, example_report, section, statuses_of


def parse(probe: str, name: str, exit_code: int = 0):
    facts = BY_NAME[probe].parse(section(probe, name, exit_code), "node1")
    for f in facts:
        assert not validate_fact(f), (f, validate_fact(f))
    return facts


def kinds(facts, kind):
    return [f.attrs for f in facts if f.kind == kind]


def test_every_probe_has_a_real_and_a_hostile_fixture_or_test():
    for p in PROBES:
        # a directory with at least one recorded output (git does not keep empty ones)
        assert list((FIX / p.name).glob("*.txt")), f"no fixtures for {p.name}"


# ---- sysctl provenance ---------------------------------------------------------------------

def test_sysctl_provenance_last_file_wins_and_masks_apply():
    facts = parse("sysctl_files", "centos7-forward-off-in-sysctl-conf")
    settings = {f["key"]: f for f in kinds(facts, "sysctl_file_setting")}
    fwd = settings["net.ipv4.ip_forward"]
    # /etc/sysctl.conf is read last: it wins over both 99-kubernetes.conf files
    assert (fwd["file"], fwd["line"], fwd["number"]) == ("/etc/sysctl.conf", 10, 0)
    assert fwd["overrides"] == (
        "/etc/sysctl.d/99-kubernetes.conf:1, /etc/sysctl.d/99-sysctl.conf:10")
    # /usr/lib/sysctl.d/00-system.conf sorts before 99-kubernetes.conf: the latter wins
    assert settings["net.bridge.bridge-nf-call-iptables"]["file"] == (
        "/etc/sysctl.d/99-kubernetes.conf")
    # 50-default.conf is masked in /etc by a /dev/null link: its rp_filter never applies
    assert "net.ipv4.conf.all.rp_filter" not in settings
    # slash form, with the "-" (ignore errors) prefix
    assert settings["net.ipv4.conf.flannel.1.rp_filter"]["number"] == 0
    files = {f["path"]: f for f in kinds(facts, "sysctl_file")}
    assert files["/usr/lib/sysctl.d/99-kubernetes.conf"]["skipped_because"] == (
        "shadowed by /etc/sysctl.d/99-kubernetes.conf")
    assert files["/etc/sysctl.d/50-default.conf"]["skipped_because"].startswith("masked")
    assert files["/etc/sysctl.conf"]["order"] == max(
        f["order"] for f in files.values() if f["order"])


def test_sysctl_provenance_recorded_debian12():
    facts = parse("sysctl_files", "debian12-netns")
    files = {f["path"]: f for f in kinds(facts, "sysctl_file")}
    # merged /usr: /lib/sysctl.d repeats /usr/lib/sysctl.d and is shadowed by it
    assert files["/lib/sysctl.d/50-pid-max.conf"]["applied"] is False
    assert kinds(facts, "sysctl_file_setting")


# ---- modules -------------------------------------------------------------------------------

def test_modules_without_module_support_use_feature_files():
    mods = {m["name"]: m for m in kinds(parse("modules", "debian12-netns"), "kernel_module")}
    assert mods["br_netfilter"]["loaded"] is True
    assert mods["br_netfilter"]["evidence"] == "/proc/sys/net/bridge"
    assert mods["ip_vs"]["loaded"] is None  # no /proc/modules: unknown, not "not loaded"


def test_modules_from_proc_modules():
    text = ("##knd:proc_modules\nbr_netfilter 22256 0 - Live 0xffffffffc0a1e000\n"
            "vxlan 49678 0 - Live 0x0\n##knd:present\n/proc/sys/net/bridge\n")
    facts = BY_NAME["modules"].parse(Section("modules", "", 0, 0, text, ""), "n")
    mods = {f.attrs["name"]: f.attrs for f in facts}
    assert mods["br_netfilter"]["loaded"] is True and mods["ip_vs"]["loaded"] is False


# ---- packet filter -------------------------------------------------------------------------

def test_a_masquerade_limited_to_two_source_ports_says_how_many():
    # recorded on a lab node whose pods' traffic to the middleware is masqueraded to 2 ports
    rules = kinds(parse("iptables", "nft-1.8.9-masquerade-to-ports"), "iptables_rule")
    by_spec = {r["spec"]: r for r in rules}
    narrow = by_spec["-A POSTROUTING -s 10.244.2.0/24 -d 203.0.113.10/32 -p tcp -j MASQUERADE "
                     "--to-ports 61000-61001"]
    assert narrow["nat_ports"] == 2 and narrow["pkts"] == 200
    # flannel's and kube-proxy's masquerades leave the ports to the kernel
    assert {r["nat_ports"] for r in rules if r is not narrow} == {None}


def test_iptables_summary_warns_of_legacy_tables_and_lists_masquerade():
    facts = parse("iptables", "nft-1.8.9-legacy-present")
    summary = kinds(facts, "iptables_summary")[0]
    assert summary["legacy_tables_present"] is True and summary["backend"] == "nf_tables"
    assert summary["snat_sources"] == "10.244.0.0/16" and summary["kube_proxy_chains"]
    masq = next(r for r in kinds(facts, "iptables_rule") if r["target"] == "MASQUERADE")
    assert masq["src"] == "10.244.0.0/16" and masq["dst"] == "!10.244.0.0/16"


def test_iptables_firewalld_chains_recognised_on_centos7():
    summary = kinds(parse("iptables", "centos7-1.4.21-firewalld"), "iptables_summary")[0]
    assert summary["firewalld_chains"] is True and summary["backend"] == "legacy"


def test_iptables_legacy_probe_reads_the_legacy_tables():
    facts = parse("iptables_legacy", "debian12-netns")
    rule = kinds(facts, "iptables_rule")[0]
    assert rule["chain"] == "INPUT" and rule["dport"] == "22"
    assert kinds(facts, "iptables_summary")[0]["backend"] == "legacy"
    assert facts[0].source.probe == "iptables_legacy"


def test_nftables_direct_tables_vs_iptables_nft():
    facts = parse("nftables", "debian12-netns")
    owners = {(t["family"], t["table"]): t["owner"] for t in kinds(facts, "nft_table")}
    assert owners[("ip", "nat")] == "iptables-nft" and owners[("inet", "filter")] == "nft"
    rules = kinds(facts, "nft_rule")
    assert all(r["table"] == "filter" and r["family"] == "inet" for r in rules)
    drop = next(r for r in rules if r["verdict"] == "drop")
    assert "8472" in drop["text"] and drop["pkts"] == 0
    fwd = next(c for c in kinds(facts, "nft_chain") if c["chain"] == "forward")
    assert fwd["reject_rules"] == 1


def test_nftables_firewalld_and_kube_proxy_tables():
    facts = parse("nftables", "firewalld-1.0-kube-proxy-nft")
    owners = {t["table"]: t["owner"] for t in kinds(facts, "nft_table")}
    assert owners == {"firewalld": "firewalld", "kube-proxy": "kube-proxy"}
    fwd = next(c for c in kinds(facts, "nft_chain") if c["chain"] == "filter_FORWARD")
    assert fwd["reject_rules"] == 1 and fwd["priority"] == "filter + 10"
    assert len(kinds(facts, "nft_chain")) == 3  # the set block is not a chain


def test_nftables_names_the_empty_chains_a_jump_may_reach():
    facts = parse("nftables", "firewalld-0.9-nft-for-k8s-lab")
    tables = {t["table"]: t for t in kinds(facts, "nft_table")}
    empty = tables["firewalld"]["empty_chains"].split(",")
    assert "filter_IN_public_pre" in empty and "filter_FWDO_public_allow" in empty
    assert "filter_IN_public_allow" not in empty  # it opens the cluster's ports
    assert len(empty) == 29 and tables["firewalld"]["chains"] == 45
    rules = {r["chain"] for r in kinds(facts, "nft_rule") if r["table"] == "firewalld"}
    assert not rules & set(empty)


def test_nftables_reads_the_arp_family_arptables_nft_writes():
    facts = parse("nftables", "arptables-nft-1.8.9-lab")
    table = next(t for t in kinds(facts, "nft_table") if t["family"] == "arp")
    assert table["table"] == "filter" and table["owner"] == "nft" and table["chains"] == 1
    hooks = {c["chain"]: c["hook"] for c in kinds(facts, "nft_chain") if c["family"] == "arp"}
    assert hooks == {"INPUT": "input"}
    (rule,) = [r for r in kinds(facts, "nft_rule") if r["family"] == "arp"]
    assert rule["chain"] == "INPUT" and rule["verdict"] == "drop" and rule["handle"] == 2
    assert "arp saddr ip 198.18.0.13" in rule["text"] and rule["pkts"] == 0


def test_arptables_rules_are_kept_where_nft_says_iptables_nft_manages_their_table():
    # iptables-save never shows the arp family: its rules are read here, whoever wrote them
    facts = parse("nftables", "arptables-nft-1.8.9-lvs-dr-lab")
    owners = {(t["family"], t["table"]): t["owner"] for t in kinds(facts, "nft_table")}
    assert owners[("arp", "filter")] == "arptables-nft"
    assert owners[("ip", "filter")] == "iptables-nft"
    rules = [r for r in kinds(facts, "nft_rule") if r["family"] == "arp"]
    assert [(r["chain"], r["verdict"]) for r in rules] == [("INPUT", "drop"), ("OUTPUT", "other")]
    assert not [r for r in kinds(facts, "nft_rule") if r["family"] == "ip"]


def test_ipvs_variants():
    facts = parse("ipvs", "ipvsadm-1.31")
    svc = {(s["proto"], s["address"], s["port"]): s for s in kinds(facts, "ipvs_service")}
    assert svc[("TCP", "10.96.0.10", 53)]["real_servers"] == 2
    assert kinds(facts, "ipvs")[0]["services_without_backends"] == 1
    proc = kinds(parse("ipvs", "proc-no-ipvsadm"), "ipvs_service")
    assert (proc[0]["address"], proc[0]["port"], proc[0]["real_servers"]) == ("10.96.0.1", 443, 1)
    assert kinds(parse("ipvs", "not-loaded"), "ipvs")[0]["enabled"] is False


def test_ipvs_dual_stack_reads_the_same_from_ipvsadm_and_from_proc():
    # /proc/net/ip_vs prints an IPv6 virtual server as [full address]:HEXPORT; ipvsadm as
    # [compressed]:port. The same table both ways gives the same facts.
    def services(name):
        return sorted((s["proto"], s["address"], s["port"], s["real_servers"], s["backends"])
                      for s in kinds(parse("ipvs", name), "ipvs_service"))
    proc = services("proc-dual-stack")
    assert proc == services("ipvsadm-1.31-dual-stack")
    assert ("TCP", "fd00:10:96::1", 443, 1, "[fd00:198:18::3]:6443") in proc
    assert ("UDP", "fd00:10:96::a", 53, 2, "[fd00:10:244:1::3]:53") in proc  # weight 0: no new


@pytest.mark.parametrize(("cap_eff", "table"), [
    ("000001ffffffffff", "ipvsadm"),  # root: every capability
    ("0000000000001000", "ipvsadm"),  # CAP_NET_ADMIN alone is what ipvsadm needs
    ("0000000000000000", "proc"),     # a login without root: ipvsadm would be refused
])
def test_ipvs_reads_the_kernels_table_where_ipvsadm_would_be_refused(tmp_path, cap_eff, table):
    proc = (FIX / "ipvs" / "proc-no-ipvsadm.txt").read_text().split("\n", 1)[1]
    (tmp_path / "ip_vs").write_text(proc)
    (tmp_path / "status").write_text(f"Name:\tsh\nCapInh:\t0000000000000000\n"
                                     f"CapEff:\t{cap_eff}\nCapBnd:\t000001ffffffffff\n")
    stub = tmp_path / "ipvsadm"
    stub.write_text("#!/bin/sh\necho 'IP Virtual Server version 1.2.1 (size=4096)'\n"
                    "echo 'TCP  10.96.0.1:443 rr'\n"
                    "echo '  -> 198.18.0.3:6443              Masq    1      0          0'\n")
    stub.chmod(0o755)
    # the probe's own command, its three paths pointed at the stand-ins (a real ipvsadm
    # would load ip_vs on this machine)
    command = (BY_NAME["ipvs"].command.replace("/proc/net/ip_vs", str(tmp_path / "ip_vs"))
               .replace("/proc/self/status", str(tmp_path / "status"))
               .replace("ipvsadm -Ln", f"{stub} -Ln")
               .replace("command -v ipvsadm", f"command -v {stub}"))
    out = subprocess.run(["sh", "-c", f'__knd_hold() {{ "$@"; }}; f() {{ {command}; }}; f'],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    assert out.splitlines()[0] == f"##knd:table {table}"
    facts = BY_NAME["ipvs"].parse(Section("ipvs", BY_NAME["ipvs"].command, 0, 0.0, out, ""), "n1")
    svc = kinds(facts, "ipvs_service")[0]
    assert (svc["address"], svc["port"], svc["real_servers"]) == ("10.96.0.1", 443, 1)


# ---- interfaces, routes, overlay, CNI ------------------------------------------------------

@pytest.mark.parametrize("name", ["debian12-netns", "centos7-iproute-4.11-text"])
def test_links_vxlan_details_in_both_formats(name):
    links = {i["name"]: i for i in kinds(parse("links", name), "interface")}
    vx = links["flannel.1"]
    assert (vx["kind"], vx["vxlan_id"], vx["vxlan_port"], vx["mtu"]) == ("vxlan", 1, 8472, 1450)
    assert vx["vxlan_dev"] == "eth0" and vx["vxlan_local"]
    assert links["cni0"]["kind"] == "bridge" and links["cni0"]["addresses"]
    veth = next(i for n, i in links.items() if n.startswith("veth"))
    assert veth["kind"] == "veth" and veth["master"] == "cni0"


@pytest.mark.parametrize("name, port, hairpin", [
    ("lab-node2-hairpin-off-veth-pod2", "veth-pod2", False),  # JSON, recorded in the lab
    ("lab-node2-hairpin-off-veth-pod2", "veth-pod1", True),
    ("iproute2-6.1-xdp-text-form", "veth1", False),  # the one-line text form
    ("centos7-iproute-4.11-text", "veth4f2a9c1e", True),
])
def test_links_hairpin_mode_of_bridge_ports_in_both_formats(name, port, hairpin):
    links = {i["name"]: i for i in kinds(parse("links", name), "interface")}
    assert links[port]["master"] == "cni0" and links[port]["hairpin"] is hairpin
    # not a bridge port: no hairpin mode to speak of
    assert links["cni0"]["hairpin"] is None and links["cni0"]["promisc"] is False


@pytest.mark.parametrize("name, port, state", [
    ("lab-node2-port-disabled-veth-pod1", "veth-pod1", "disabled"),  # JSON, recorded in the lab
    ("lab-node2-port-disabled-veth-pod1", "veth-pod2", "forwarding"),
    ("iproute2-6.1-xdp-text-form", "veth1", "forwarding"),  # the one-line text form
    ("centos7-iproute-4.11-text", "veth4f2a9c1e", "forwarding"),
])
def test_links_bridge_port_state_in_both_formats(name, port, state):
    facts = kinds(parse("links", name), "interface")
    links = {i["name"]: i for i in facts}
    assert links[port]["master"] == "cni0" and links[port]["port_state"] == state
    assert links["cni0"]["port_state"] is None  # the bridge itself is no port
    if state != "forwarding":  # the evidence says it, as `bridge link` would
        (fact,) = [f for f in parse("links", name) if f.attrs.get("name") == port]
        assert f"port state {state}" in fact.source.excerpt


def test_links_centos7_tunl0_and_cali():
    links = {i["name"]: i for i in kinds(parse("links", "centos7-iproute-4.11-text"), "interface")}
    assert links["tunl0"]["kind"] == "ipip" and links["tunl0"]["mtu"] == 1440
    assert links["cali7d1e2f3a4b5"]["kind"] == "veth"


@pytest.mark.parametrize("name", ["debian12-netns", "centos7-iproute-4.11-text"])
def test_routes_bird_and_onlink(name):
    routes = kinds(parse("routes", name), "route")
    assert all(r["table"] != "local" for r in routes)
    bird = [r for r in routes if r["protocol"] == "bird"]
    assert any(r["type"] == "blackhole" for r in bird)
    assert any(r["gateway"] and r["type"] == "unicast" for r in bird)
    assert any(r["onlink"] and r["dev"] == "flannel.1" for r in routes)


@pytest.mark.parametrize("name", ["debian12-bird-ecmp-inet6-json", "debian12-bird-ecmp-inet6-text"])
def test_routes_multipath_and_ipv6_next_hops_as_bird_installs_them(name):
    """BIRD's ECMP route gives one route per next hop (never a route with no gateway, nor one
    to a destination named `nexthop`); `via inet6` gives the IPv6 address as the gateway."""
    routes = kinds(parse("routes", name), "route")
    by_dst: dict[str, list[dict]] = {}
    for r in routes:
        by_dst.setdefault(r["dst"], []).append(r)
    assert set(by_dst) == {"10.244.0.0/26", "10.244.1.0/26", "10.244.2.0/26", "198.18.5.0/24"}
    ecmp = by_dst["10.244.1.0/26"]
    assert [(r["gateway"], r["dev"], r["weight"], r["paths"], r["metric"], r["protocol"])
            for r in ecmp] == [("198.18.5.12", "eth0", 1, 2, 32, "bird"),
                               ("198.18.5.13", "eth0", 2, 2, 32, "bird")]
    [v6] = by_dst["10.244.2.0/26"]
    assert (v6["gateway"], v6["dev"], v6["paths"], v6["weight"]) == ("fe80::2", "eth0", 1, None)
    [hole] = by_dst["10.244.0.0/26"]
    assert (hole["type"], hole["gateway"], hole["dev"]) == ("blackhole", None, None)


def test_a_routes_evidence_is_the_nodes_own_json_for_that_route():
    """Each route's excerpt is its object as the node printed it, not our re-encoding."""
    routes = parse("routes", "lab-flannel-vxlan-node1-json")
    stdout = section("routes", "lab-flannel-vxlan-node1-json").stdout
    for f in (f for f in routes if f.kind == "route"):
        assert f.source.excerpt.startswith("{") and f.source.excerpt in stdout
        assert json.loads(f.source.excerpt)["dst"] in (f.attrs["dst"], "default")


_ROUTE = st.fixed_dictionaries(
    {"dst": st.sampled_from(["default", "10.244.1.0/24", "198.18.0.0/24"])},
    optional={"gateway": st.text(max_size=8), "dev": st.text(max_size=8),
              "metric": st.integers(), "flags": st.lists(st.sampled_from(["onlink", "x"])),
              "nexthops": st.lists(st.fixed_dictionaries({"gateway": st.text(max_size=5)}))})


@settings(max_examples=60)
@given(st.lists(st.one_of(_ROUTE, st.integers(), st.none()), max_size=6),
       st.sampled_from([None, 0, 1]), st.sampled_from(["", " ", "\n"]))
def test_routes_read_one_element_at_a_time_as_a_whole_array_decode_would(items, indent, pad):
    """The JSON form is decoded element by element (to keep each route's own text as its
    evidence); any spacing json.dumps or ip produces gives the facts json.loads would."""
    text = pad + json.dumps(items, indent=indent) + pad
    got = BY_NAME["routes"].parse(Section("routes", "", 0, 0.0, f"##knd:route json\n{text}\n",
                                          ""), "n1")
    routes = [f.attrs for f in got if f.kind == "route"]
    expect = [d for d in items if isinstance(d, dict)]
    assert len(routes) == sum(max(1, len(d.get("nexthops") or [])) for d in expect)
    assert [r["dst"] for r in routes] == [
        "0.0.0.0/0" if d["dst"] == "default" else d["dst"]
        for d in expect for _ in range(max(1, len(d.get("nexthops") or [])))]
    unread = [f for f in got if f.kind == "probe_status"]
    assert bool(unread) == (len(expect) < len(items))


@pytest.mark.parametrize("text", [
    '[,{"dst":"10.244.1.0/24"}]', '[{"dst":"10.244.1.0/24"},]',
    '[{"dst":"10.244.1.0/24"} {"dst":"10.244.2.0/24"}]', '[{"dst":"10.244.1.0/24"}',
    '[{"dst":"10.244.1.0/24"}] [{"dst":"10.244.2.0/24"}]'])
def test_routes_json_that_is_not_one_array_is_reported_not_read(text):
    """Cut or garbled `ip -j` output (a stray comma, a lost bracket) is named as not
    understood; no route is made up from part of it."""
    got = BY_NAME["routes"].parse(Section("routes", "", 0, 0.0, f"##knd:route json\n{text}\n",
                                          ""), "n1")
    assert [f.kind for f in got] == ["probe_status"]
    assert got[0].attrs["status"] == "partial"


LAB_MODES = ("flannel-vxlan", "flannel-host-gw", "calico-bgp")


@pytest.mark.parametrize("probe", ["routes", "links", "ip_rule"])
@pytest.mark.parametrize("mode", LAB_MODES)
def test_ip_json_and_text_recorded_in_every_lab_mode_agree(probe, mode):
    """Recorded on the lab's real kernel (tests/test_lab_ip_json.py records them): `ip -j`
    and the text form a node without JSON prints give the same facts."""
    name = f"lab-{mode}-node1"
    from_json, from_text = parse(probe, f"{name}-json"), parse(probe, f"{name}-text")
    assert from_json
    assert sorted(repr(sorted(f.attrs.items())) for f in from_json) == sorted(
        repr(sorted(f.attrs.items())) for f in from_text)


@pytest.mark.parametrize("form", ["json", "text"])
def test_routes_to_the_peer_pod_subnet_in_every_lab_mode(form):
    def peer(mode: str) -> dict:
        [r] = [r for r in kinds(parse("routes", f"lab-{mode}-node1-{form}"), "route")
               if r["dst"] == "10.244.2.0/24"]
        return r

    vxlan, hostgw, calico = (peer(m) for m in LAB_MODES)
    assert (vxlan["dev"], vxlan["gateway"], vxlan["onlink"]) == ("flannel.1", "10.244.2.0", True)
    assert (hostgw["dev"], hostgw["gateway"]) == ("eth0", "198.18.0.12")
    assert (calico["dev"], calico["gateway"], calico["protocol"]) == (
        "eth0", "198.18.0.12", "bird")
    [hole] = [r for r in kinds(parse("routes", f"lab-calico-bgp-node1-{form}"), "route")
              if r["type"] == "blackhole"]
    assert hole["dst"] == "10.244.1.0/24"
    [vx] = [i for i in kinds(parse("links", f"lab-flannel-vxlan-node1-{form}"), "interface")
            if i["kind"] == "vxlan"]
    assert (vx["name"], vx["vxlan_port"], vx["vxlan_dev"]) == ("flannel.1", 8472, "eth0")


def test_overlay_subnet_env_fdb_and_neighbors():
    facts = parse("overlay", "centos7-flannel-vxlan")
    env = kinds(facts, "flannel_subnet")[0]
    assert env == {"network": "172.27.0.0/16", "subnet": "172.27.1.1/24", "mtu": 1450,
                   "ipmasq": True}
    assert {f["dst"] for f in kinds(facts, "fdb_entry")} == {"10.28.87.60", "10.28.87.61"}
    states = {n["ip"]: n["state"] for n in kinds(facts, "neighbor")}
    assert states["172.27.3.0"] == "FAILED"
    recorded = parse("overlay", "debian12-netns")
    assert kinds(recorded, "fdb_entry")[0]["permanent"] is True


@pytest.mark.parametrize("form", ["json", "text"])
def test_overlay_permanent_neighbours_of_other_devices(form):
    """A permanent entry outside the VXLAN device is kept (it may pin a peer to a wrong MAC);
    the VXLAN device's own entries, listed again among the permanent ones, are not doubled."""
    facts = kinds(parse("overlay", f"lab-flannel-vxlan-node1-static-neigh-{form}"), "neighbor")
    assert sorted((n["dev"], n["ip"], n["mac"], n["state"]) for n in facts) == [
        ("eth0", "198.18.0.12", "02:00:5e:00:53:01", "PERMANENT"),
        ("flannel.1", "10.244.2.0", "da:21:d9:b9:fc:64", "PERMANENT"),
        ("flannel.1", "10.244.3.0", "5e:cc:1d:f0:66:d5", "PERMANENT"),
    ]


def test_overlay_from_the_batchs_every_neighbour_listing():
    """Since the script's one `ip -batch` lists every neighbour entry: all of the VXLAN
    device's are kept, and of the other devices only those set by hand (a wrong MAC pinned
    for node2's address on eth0, underlay_neighbor_wrong); the underlay's and the pods'
    dynamic entries correct themselves and are left out."""
    facts = parse("overlay", "lab-flannel-vxlan-node1-static-neigh-batch")
    assert sorted((n["dev"], n["ip"], n["mac"], n["state"]) for n in kinds(facts, "neighbor")) == [
        ("eth0", "198.18.0.12", "02:00:5e:00:53:01", "PERMANENT"),
        ("flannel.1", "10.244.2.0", "0e:c3:eb:80:4a:37", "PERMANENT"),
    ]
    assert [(f["dev"], f["dst"]) for f in kinds(facts, "fdb_entry")] == [
        ("flannel.1", "198.18.0.12")]
    garbled = BY_NAME["overlay"].parse(Section(
        "overlay", "", 0, 0.0, "##knd:fdb flannel.1\n##knd:neighbours json\n[{\"dst\": \n",
        ""), "node1")
    assert kinds(garbled, "probe_status")[0]["status"] == "partial"


def test_overlay_keeps_the_dynamic_entries_of_one_mac_behind_two_addresses():
    """Two nodes' addresses behind one MAC on the underlay (a clone of node1 as node3): those
    dynamic entries are kept, the rest of eth0's and the pods' are left out as before."""
    facts = parse("overlay", "lab-flannel-vxlan-node2-mac-clone-batch")
    assert sorted((n["dev"], n["ip"], n["mac"], n["state"]) for n in kinds(facts, "neighbor")
                  if n["dev"] != "flannel.1") == [
        ("eth0", "198.18.0.11", "32:70:92:3e:c4:ca", "REACHABLE"),
        ("eth0", "198.18.0.13", "32:70:92:3e:c4:ca", "STALE"),
    ]
    # a cloud's virtual network answers every ARP with one MAC: a router's, not clones', and
    # one fact per peer if kept
    entries = [{"dst": f"10.0.0.{i}", "dev": "eth0", "lladdr": "12:34:56:78:9a:bc",
                "state": ["REACHABLE"]} for i in range(2, 12)]
    facts = BY_NAME["overlay"].parse(Section(
        "overlay", "", 0, 0.0, f"##knd:neighbours json\n{json.dumps(entries)}\n", ""), "node1")
    assert not kinds(facts, "neighbor")
    # a peer's address behind this node's own MAC: another machine answered with it, a clone
    own = [{"dst": "198.18.0.13", "dev": "eth0", "lladdr": "32:70:92:3e:c4:ca",
            "state": ["DELAY"]}, {"dst": "198.18.0.12", "dev": "eth0",
                                   "lladdr": "9a:59:8d:d4:7c:ad", "state": ["REACHABLE"]}]
    out = (f"##knd:neighbours json\n{json.dumps(own)}\n"
           "##knd:macs\nlo 00:00:00:00:00:00\neth0 32:70:92:3e:c4:ca\n")
    facts = BY_NAME["overlay"].parse(Section("overlay", "", 0, 0.0, out, ""), "node1")
    assert [(n["ip"], n["mac"]) for n in kinds(facts, "neighbor")] == [
        ("198.18.0.13", "32:70:92:3e:c4:ca")]


def test_overlay_permanent_listing_in_an_unknown_form_is_partial_not_guessed():
    out = ("##knd:permanent text\n198.18.0.12 dev eth0 lladdr 02:00:5e:00:53:01 PERMANENT\n"
           "fe80::1 dev eth0 router PERMANENT\n")
    facts = BY_NAME["overlay"].parse(Section("overlay", "", 0, 0.0, out, ""), "node1")
    assert [n["ip"] for n in kinds(facts, "neighbor")] == ["198.18.0.12"]
    (status,) = kinds(facts, "probe_status")
    assert status["status"] == "partial" and "fe80::1" in status["reason"]
    facts = BY_NAME["overlay"].parse(
        Section("overlay", "", 0, 0.0, "##knd:permanent json\n[{\"dst\": \n", ""), "node1")
    assert kinds(facts, "neighbor") == [] and kinds(facts, "probe_status")[0]["status"] == "partial"


def test_cni_config_redacted_and_summarised():
    text = (FIX / "cni" / "calico-secrets-redacted.txt").read_text()
    assert "hunter2" not in text and "secretpayload" not in text  # redacted on the node
    facts = parse("cni", "calico-secrets-redacted")
    conf = kinds(facts, "cni_config")[0]
    assert conf["primary_type"] == "calico" and conf["mtu"] == 1440 and conf["active"]
    assert conf["redacted"] is True and conf["types"] == "calico,portmap"
    assert kinds(facts, "cni_config_dir")[0]["active_file"] == conf["file"]


def test_cni_parser_redacts_what_sed_could_not_see():
    text = '##knd:file /etc/cni/net.d/10-x.conf\n|{"type": "bridge",\n|"apiToken":\n|"abc"}\n'
    facts = BY_NAME["cni"].parse(Section("cni", "", 0, 0, text, ""), "n")
    assert "abc" not in facts[0].source.excerpt and facts[0].attrs["redacted"] is True


def test_cni_missing_dir():
    facts = BY_NAME["cni"].parse(Section("cni", "", 0, 0, "##knd:nodir\n", ""), "n")
    assert facts[0].attrs["exists"] is False and facts[0].attrs["active_file"] is None


# ---- conntrack, counters, sockets ----------------------------------------------------------

def test_conntrack_recorded_and_centos7():
    ct = kinds(parse("conntrack", "debian12-netns"), "conntrack")[0]
    assert ct["loaded"] and ct["cpus"] and ct["insert_failed"] == 0
    assert ct["stats_source"] == "conntrack -S"
    old = kinds(parse("conntrack", "centos7-1.4.4-insert-failed"), "conntrack")[0]
    assert (old["insert_failed"], old["drop"], old["usage_pct"]) == (19, 3, 98.4)


def test_conntrack_without_tool_reads_proc_and_says_so():
    facts = parse("conntrack", "no-tool-proc")
    ct = kinds(facts, "conntrack")[0]
    assert ct["stats_source"] == "/proc/net/stat/nf_conntrack"
    assert (ct["insert_failed"], ct["drop"], ct["search_restart"]) == (5, 1, 4)
    status = kinds(facts, "probe_status")[0]
    assert status["status"] == "missing_tool" and "conntrack" in status["reason"]


def test_conntrack_as_a_login_without_root_reads_the_kernels_counters():
    # the probe's own command as an unprivileged user: no conntrack -S, nothing refused
    status, facts = statuses_of("conntrack", "debian12-nonroot-proc", 0)
    ct = kinds(facts, "conntrack")[0]
    assert status == [] and ct["stats_source"] == "/proc/net/stat/nf_conntrack"
    assert (ct["cpus"], ct["max"], ct["insert_failed"], ct["error"]) == (2, 262144, 0, 0)


def test_conntrack_refused_prints_the_proc_names_and_is_still_read():
    # conntrack -S as an unprivileged user (conntrack-tools 1.4.7): it reads /proc itself,
    # prints the counters under the kernel's names (icmp_error, clashres) and then fails
    status, facts = statuses_of("conntrack", "conntrack-1.4.7-nonroot", 1)
    ct = kinds(facts, "conntrack")[0]
    assert (ct["error"], ct["clash_resolve"], ct["insert_failed"], ct["cpus"]) == (0, 0, 0, 2)
    assert [s["status"] for s in status] == ["permission_denied"]


def test_sockets_without_ss_read_ipv6_listeners_as_addresses():
    # /proc/net/tcp and tcp6 as the probe reads them without ss, recorded in a scratch netns
    # with listeners on ::1, [::], a pod-style IPv6 address and 0.0.0.0
    got = {(t["local"], t["wildcard"]) for t in kinds(parse("sockets", "debian12-netns-proc-tcp6"),
                                                       "tcp_listener")}
    assert got == {("0.0.0.0:22", True), ("[::]:2379", True), ("[::1]:8080", False),
                   ("[fd00:10:244:1::3]:9153", False)}


def test_processes_hidden_by_hidepid_are_unknown_not_stopped():
    # the probe's command as an unprivileged user where /proc is mounted hidepid=2, while
    # root ran "kubelet" and "flanneld": the login sees its own shell, ps and awk only
    status, facts = statuses_of("processes", "hidepid-nonroot", 0)
    assert [f for f in facts if f.kind == "process"] == []  # nothing said of what is unseen
    assert not any(f.kind == "host_firewall" and f.attrs["name"] == "firewalld" for f in facts)
    assert [(s["status"], s["kinds"]) for s in status] == [
        ("permission_denied", "process,host_firewall")]
    assert "hidepid" in status[0]["reason"]
    # what the login does see is known
    seen = BY_NAME["processes"].parse(_sec("processes", (
        "##knd:hidden pid1\n##knd:ps eos\n  812 Ssl  flanneld  /opt/bin/flanneld --ip-masq\n")),
        "n1")
    assert [(f.attrs["name"], f.attrs["running"]) for f in seen if f.kind == "process"] == [
        ("flanneld", True)]


def test_a_login_that_cannot_see_the_agents_does_not_report_them_stopped():
    def causes(report):
        return sorted((f["fault"], tuple(f["nodes"])) for f in report["findings"]
                      if f["root_cause"])
    assert causes(example_report("processes", "hidepid-nonroot")) == causes(example_report())


def test_counters_flat_on_a_quiet_netns():
    facts = kinds(parse("counters", "debian12-netns"), "net_counter")
    names = {c["name"]: c for c in facts}
    assert names["TcpExtListenOverflows"]["rising"] is False
    assert names["UdpRcvbufErrors"]["interval_s"] >= 2
    assert "conntrack_insert_failed" in names


def test_counters_rising_now_vs_high_since_boot():
    names = {c["name"]: c for c in kinds(parse("counters", "rising-listen-overflows"),
                                         "net_counter")}
    lo = names["TcpExtListenOverflows"]
    assert lo["rising"] is True and lo["delta"] == 1500 and lo["rate_per_s"] > 700
    rcv = names["UdpRcvbufErrors"]
    assert rcv["value"] == 429469 and rcv["rising"] is False


def test_counters_ipsec_drops_for_want_of_an_sa():
    """Recorded in a network namespace holding a policy out whose template has no SA, pinged
    through between the two samples: XfrmOutNoStates rises, and the conntrack totals after
    xfrm_stat's lines are still read."""
    names = {c["name"]: c for c in kinds(parse("counters", "xfrm-out-no-states-netns"),
                                         "net_counter")}
    assert names["XfrmOutNoStates"]["rising"] is True and names["XfrmOutNoStates"]["delta"] > 0
    assert names["XfrmInTmplMismatch"]["rising"] is False
    assert names["conntrack_insert_failed"]["rising"] is False
    # a kernel without IPsec statistics has no such file: no fact, and no complaint
    assert "XfrmOutNoStates" not in {c["name"] for c in kinds(parse("counters", "debian12-netns"),
                                                              "net_counter")}


def test_counters_softnet_drops_rising_on_a_centos7_node():
    """3.10's softnet_stat (11 columns, no CPU index), CPU 0 dropping from a full backlog
    between the samples: one fact per counter, summed over the four CPUs."""
    names = {c["name"]: c for c in kinds(parse("counters", "softnet-dropped-centos7"),
                                         "net_counter")}
    dropped, squeezed = names["softnet_dropped"], names["softnet_time_squeeze"]
    assert (dropped["value"], dropped["delta"], dropped["rising"]) == (23094, 4120, True)
    assert (squeezed["delta"], squeezed["rising"]) == (314, True)
    # conntrack's per-CPU rows come after softnet's and are still conntrack's own
    assert names["conntrack_insert_failed"]["rising"] is False


def test_counters_softnet_as_kernel_6_prints_it_and_where_it_is_missing():
    names = {c["name"]: c for c in kinds(parse("counters", "softnet-6.18-netns"),
                                         "net_counter")}
    assert names["softnet_dropped"]["rising"] is False
    assert names["softnet_time_squeeze"]["value"] == 5  # 3 + 2 over the machine's two CPUs
    # a node whose sample has no softnet_stat (recorded before it was read): no fact
    assert not {"softnet_dropped", "softnet_time_squeeze"} & {
        c["name"] for c in kinds(parse("counters", "debian12-netns"), "net_counter")}


def test_counters_softnet_rows_of_a_2_6_kernel_and_rows_that_are_not():
    def softnet(rows: list[str]) -> dict:
        text = "".join(f"##knd:sample {n}\n{100 + 2 * n}.00 1.00\n" + "\n".join(rows) + "\n"
                       for n in (1, 2))
        facts = BY_NAME["counters"].parse(Section("counters", "", 0, 2, text, ""), "n")
        return {f.attrs["name"]: f.attrs["value"] for f in facts}
    ten = " ".join(["0000ffff", "00000007", "00000001"] + ["00000000"] * 7)
    assert softnet([ten, ten]) == {"softnet_dropped": 14, "softnet_time_squeeze": 2}
    # too few columns, a word that is not hex, a wider number: not softnet_stat's rows
    assert softnet([" ".join(["00000007"] * 9), ten.replace("0000ffff", "0000fffg"),
                    ten.replace("0000ffff", "10000ffff")]) == {}


def test_counters_one_sample_only_is_unknown_not_flat():
    text = (FIX / "counters" / "debian12-netns.txt").read_text().split("##knd:sample 2")[0]
    facts = BY_NAME["counters"].parse(Section("counters", "", None, 0, text, ""), "n")
    assert facts and all(f.attrs["rising"] is None and f.attrs["delta"] is None for f in facts)


def test_sockets_recorded():
    facts = parse("sockets", "debian12-netns")
    lst = kinds(facts, "tcp_listener")[0]
    assert (lst["port"], lst["backlog"], lst["process"]) == (179, 8, "bird")
    assert kinds(facts, "udp_socket")[0]["rcvbuf"] == 212992
    assert kinds(facts, "tcp_states")[0]["source"] == "ss"


def test_sockets_centos7_old_ss_full_queue_and_time_wait():
    facts = parse("sockets", "centos7-ss-3.10-timewait")
    lst = {f["port"]: f for f in kinds(facts, "tcp_listener")}
    assert lst[80]["full"] is True and lst[80]["process"] == "nginx" and lst[80]["pid"] == 1826655
    assert lst[10250]["full"] is False
    q = kinds(facts, "socket_queue")[0]
    assert (q["recv_q"], q["state"]) == (2066, "established")
    assert kinds(facts, "tcp_states")[0]["time_wait"] == 30457
    assert kinds(facts, "sockstat")[0]["tcp_tw"] == 30457
    udp = {u["port"]: u for u in kinds(facts, "udp_socket")}
    assert udp[53]["recv_q"] == 213248 and udp[53]["drops"] is None  # old ss: no d field


def test_sockets_listeners_processes_and_their_descriptors_recorded():
    fds = {f["pid"]: f for f in kinds(parse("sockets", "debian12-netns-fd-limit"), "process_fds")}
    assert fds[185] == {"pid": 185, "process": "python", "ports": "30082", "open": 64,
                        "limit": 64, "hard_limit": 20000, "free": 0, "usage_pct": 100.0,
                        "at_limit": True}
    assert (fds[28]["process"], fds[28]["ports"], fds[28]["at_limit"]) == (
        "kube-proxy", "10249,10256", False)
    # a bundle from before the count: no fact, not a zero
    assert not kinds(parse("sockets", "debian12-netns"), "process_fds")


def test_sockets_fin_wait2_counted_per_peer_recorded():
    # recorded with 1200 connections closed by their client toward a server that never closes
    # them (orphans, held tcp_fin_timeout) and 40 half-closed ones a process keeps
    facts = parse("sockets", "debian12-netns-fin-wait2")
    peers = {f["peer"]: f for f in kinds(facts, "fin_wait2_peer")}
    assert peers["10.244.2.3:30084"] == {"peer": "10.244.2.3:30084", "address": "10.244.2.3",
                                         "port": 30084, "count": 1200}
    assert peers["10.244.2.3:8443"]["count"] == 40
    assert kinds(facts, "tcp_states")[0]["fin_wait2"] == 1240
    assert kinds(facts, "sockstat")[0]["tcp_orphan"] == 1200
    # before the count: no fact
    assert not kinds(parse("sockets", "debian12-netns-fd-limit"), "fin_wait2_peer")


def test_sockets_descriptors_old_ss_two_workers_and_a_process_gone():
    facts = parse("sockets", "centos7-ss-3.10-nginx-fd-limit")
    fds = {f["pid"]: f for f in kinds(facts, "process_fds")}
    assert (fds[1826655]["at_limit"], fds[1826655]["ports"]) == (True, "80")
    # 977 of 1024: busy, 47 free, more than 1% of the limit
    assert (fds[1826656]["free"], fds[1826656]["at_limit"]) == (47, False)
    assert fds[1015]["ports"] == "10248,10250"
    assert 1102 not in fds  # sshd exited between ss and the count: nothing is known
    owners = {(f["process"], f["pid"]): f["count"] for f in kinds(facts, "close_wait_process")}
    assert owners == {("java", 2210): 3120, ("nginx", 1826655): 31}
    assert kinds(facts, "tcp_states")[0]["close_wait"] == 3151


def test_sockets_descriptors_unreadable_are_unknown():
    # a login that is not root lists no other user's /proc/PID/fd; its limits stay readable
    out = ("##knd:tcp ss-all\nL LISTEN 0 4096 *:10250 *:* users:((\"kubelet\",pid=1015,fd=26))\n"
           "##knd:fds\nP 1015\nF 1015 - 1048576 1048576\nF x 1 2 3\nF 7 1\n")
    (fd,) = kinds(BY_NAME["sockets"].parse(Section("sockets", "", 0, 0.0, out, ""), "n"),
                  "process_fds")
    assert (fd["open"], fd["limit"], fd["free"], fd["at_limit"]) == (None, 1048576, None, None)
    # numbers no kernel prints (a hostile node): no fact from them, and no crash
    huge = "9" * 5000
    out = (f"##knd:tcp ss-all\nW {huge} 1 java\nW 3 {huge} java\n"
           f"##knd:fds\nP 1\nF {huge} 3 64 64\nF 7 {huge} {huge} 64\n")
    facts = BY_NAME["sockets"].parse(Section("sockets", "", 0, 0.0, out, ""), "n")
    assert kinds(facts, "close_wait_process") == [{"count": 3, "pid": None, "process": "java"}]
    assert kinds(facts, "process_fds") == []


def test_sockets_a_program_on_the_vxlan_port_two_listeners_and_tcp_memory_pressure():
    facts = parse("sockets", "ubuntu22-vxlan-port-taken-tcp-pressure")
    udp = {u["port"]: u for u in kinds(facts, "udp_socket")}
    # the kernel's VXLAN socket has no process; this one does: a program holds the port
    assert (udp[8472]["process"], udp[8472]["pid"]) == ("vector", 2210)
    assert udp[53]["local"] == "127.0.0.53%lo:53" and udp[53]["rcvbuf"] == 212992
    assert (udp[4789]["process"], udp[4789]["pid"]) == ("ovs-vswitchd", 903)  # old ss format
    owners = {(x["local"], x["process"]) for x in kinds(facts, "tcp_listener") if x["port"] == 9100}
    assert owners == {("0.0.0.0:9100", "node_exporter"), ("10.20.0.12:9100", "legacy-exporte")}
    (q,) = kinds(facts, "socket_queue")
    assert (q["recv_q"], q["process"], q["pid"]) == (131072, "report-api", 4410)
    (st,) = kinds(facts, "sockstat")
    assert (st["tcp_mem_pages"], st["tcp_mem_pressure_pages"], st["tcp_mem_max_pages"]) == (
        30512, 29184, 43776)
    assert st["tcp_mem_state"] == "pressure"


def test_sockets_tcp_mem_unreadable_or_garbled_leaves_the_state_unknown():
    for tail in ("", "21888 29184\n", "a b c\n"):
        out = "##knd:sockstat\nTCP: inuse 2 orphan 0 tw 0 alloc 4 mem 9\n##knd:tcpmem\n" + tail
        (st,) = kinds(BY_NAME["sockets"].parse(Section("sockets", "", 0, 0.0, out, ""), "n"),
                      "sockstat")
        assert st["tcp_mem_state"] is None and st["tcp_mem_pages"] == 9
    # an old bundle without the section at all
    facts = parse("sockets", "debian12-netns")
    assert kinds(facts, "sockstat")[0]["tcp_mem_state"] is None


def test_sockets_without_ss_counts_from_proc_and_reports_what_is_missing():
    facts = parse("sockets", "busybox-no-ss")
    assert kinds(facts, "tcp_states")[0]["time_wait"] == 340
    lst = {f["port"]: f for f in kinds(facts, "tcp_listener")}
    assert lst[22]["accept_queue"] == 5 and lst[22]["backlog"] is None
    assert lst[10040]["local"] == "127.0.0.1:10040"
    assert kinds(facts, "probe_status")[0]["status"] == "missing_tool"


# ---- processes, BGP, host ------------------------------------------------------------------

def running(facts):
    return {(p["role"], p["name"]) for p in kinds(facts, "process") if p["running"]}


def test_processes_recorded():
    facts = parse("processes", "debian12-netns")
    assert ("bgp_daemon", "bird") in running(facts)
    assert not any(r == "security_software" for r, _ in running(facts))


def test_processes_busybox_security_software_and_firewalls():
    facts = parse("processes", "busybox-security-software")
    got = running(facts)
    assert {("cni_agent", "flanneld"), ("kube_proxy", "kube-proxy"), ("kubelet", "kubelet"),
            ("container_runtime", "containerd")} <= got
    # comm is cut to 15 characters: the full name from argv[0] tells the three wsssr apart
    assert ("security_software", "wsssr_defence_daemon") in got
    assert ("security_software", "wsssr_defence_service") not in got
    assert ("security_software", "Symantec") in got
    fw = {f["name"]: f["active"] for f in kinds(facts, "host_firewall")}
    assert fw == {"firewalld": True, "ufw": True}


def test_processes_proc_fallback_matches_truncated_comm():
    got = running(parse("processes", "proc-fallback"))
    assert ("security_software", "qaxsafed") in got
    assert ("security_software", "sangfor_watchdog") in got


def test_process_list_is_extensible(tmp_path, monkeypatch):
    extra = tmp_path / "site.yaml"
    extra.write_text("security_software: [rtvscand]\nmonitoring: [node_exporter]\n")
    monkeypatch.setenv("KUBENETDIAG_PROCESSES", str(extra))
    facts = parse("processes", "busybox-security-software")
    assert ("security_software", "rtvscand") in running(facts)
    assert any(p["role"] == "monitoring" for p in kinds(facts, "process"))


def test_process_args_secrets_are_cut_on_the_node():
    import subprocess

    from kubenetdiag.probes import processes
    awk = processes.COMMAND.split("| awk ", 1)[1].split("; if [ -r /etc/ufw")[0]
    line = "1 x x --db-password=hunter2 --token abc TOKEN=zz -v"
    out = subprocess.run(["sh", "-c", f"printf '%s\\n' '{line}' | awk {awk}"],
                         capture_output=True, text=True).stdout
    assert "hunter2" not in out and "abc" not in out and "zz" not in out and "-v" in out


@pytest.mark.parametrize("name", ["bird-2.0.12-one-down", "bird-1.6.8-calico-peer-refused"])
def test_bgp_sessions(name):
    sessions = {s["peer"]: s for s in kinds(parse("bgp", name), "bgp_session")}
    up = [s for s in sessions.values() if s["established"]]
    down = [s for s in sessions.values() if not s["established"]]
    assert len(up) == 1 and len(down) == 1
    assert down[0]["state"] in ("Connect", "Active") and down[0]["peer"]


def test_bgp_route_counts_per_session_summed_over_channels():
    # recorded from the lab's BIRD 2.0.12 with an export filter that rejects everything
    got = {x["peer"]: (x["routes_imported"], x["routes_exported"])
           for x in kinds(parse("bgp", "bird-2.0.12-calico-exports-nothing"), "bgp_session")}
    assert got == {"198.18.0.11": (1, 0), "198.18.0.13": (1, 0)}
    # BIRD 1.6's one line per session; a session that is not up prints none
    old = kinds(parse("bgp", "bird-1.6.8-calico-peer-refused"), "bgp_session")
    up = next(x for x in old if x["established"])
    down = next(x for x in old if not x["established"])
    assert (up["routes_imported"], up["routes_exported"]) == (1, 2)
    assert (down["routes_imported"], down["routes_exported"]) == (None, None)


def test_bgp_route_counts_with_filtered_and_two_channels():
    from kubenetdiag.probes.base import Section
    from kubenetdiag.probes.bgp import parse as parse_bgp

    text = ("##knd:socket /run/bird/bird.ctl\nBIRD 2.0.8 ready.\n"
            "Name       Proto      Table      State  Since         Info\n"
            "peer1      BGP        ---        up     2024-05-01    Established\n"
            "  BGP state:          Established\n"
            "    Neighbor address: 10.0.0.2\n"
            "  Channel ipv4\n"
            "    Routes:         3 imported, 1 filtered, 2 exported, 3 preferred\n"
            "  Channel ipv6\n"
            "    Routes:         1 imported, 0 filtered, 0 exported, 1 preferred\n")
    [s] = [f.attrs for f in parse_bgp(Section("bgp", "", 0, 0.1, text, ""), "n1")]
    assert (s["routes_imported"], s["routes_exported"]) == (4, 2)


def test_bgp_calico_last_error():
    s = kinds(parse("bgp", "bird-1.6.8-calico-peer-refused"), "bgp_session")
    refused = next(x for x in s if not x["established"])
    assert refused["last_error"] == "Socket: Connection refused"
    assert refused["peer"] == "10.28.87.61" and refused["peer_as"] == 64512


def test_host_recorded_and_centos7():
    facts = parse("host", "debian12-netns")
    # the recorded output still has an os-release section: it is read without a fact
    assert not kinds(facts, "os_release")
    assert any(f["mount"] == "/" for f in kinds(facts, "filesystem"))
    old = parse("host", "centos7-disk-full")
    fs = {f["mount"]: f for f in kinds(old, "filesystem")}
    assert fs["/"]["use_pct"] == 100 and fs["/data dir"]["inodes_use_pct"] == 100
    assert not any(m.startswith("/var/lib/docker") for m in fs)
    rc = kinds(old, "resolv_conf")[0]
    assert rc["ndots"] == 5 and rc["nameserver_count"] == 2 and not rc["loopback_nameserver"]


# ---- hostile output ------------------------------------------------------------------------

def _record(probe: str, stdout: str, stderr: str = "", exit_code: int | None = 0) -> dict:
    return {"name": "n", "address": "a", "reachable": True, "error": None,
            "sections": [{"probe": probe, "command": "", "exit_code": exit_code,
                          "stdout": stdout, "stderr": stderr}]}


def _no_crash(record: dict) -> None:
    for fact in node_facts(record):
        assert not validate_fact(fact), fact
        # parse.py turns a parser exception into this status: that is a crash we must not have
        assert "could not parse" not in str(fact.attrs.get("reason", "")), fact.attrs


def _fixtures(probe: str) -> list[str]:
    return [p.read_text() for p in sorted((FIX / probe).glob("*.txt"))]


@pytest.mark.parametrize("probe", sorted(BY_NAME))
def test_hostile_outputs_fail_soft(probe):
    rnd = random.Random(probe)
    samples = _fixtures(probe) or ["x"]
    hostile = []
    for text in samples:
        hostile.append(text[: len(text) // 2])  # cut mid-line
        hostile.append(text[: len(text) // 3] + "\x00\xff\ufffd" * 50)
        lines = text.splitlines()
        rnd.shuffle(lines)
        hostile.append("\n".join(lines))
    hostile.append(bytes(rnd.randrange(256) for _ in range(4000)).decode("latin-1"))
    hostile.append((samples[0] + "\n") * 200)  # enormous: repeated a few hundred times
    for text in hostile:
        _no_crash(_record(probe, text))


def test_a_timed_out_probe_is_unknown():
    facts = node_facts(_record("sockets", "##knd:tcp ss\nS ESTAB 3\n", exit_code=None))
    status = [f.attrs for f in facts if f.kind == "probe_status"]
    assert status[0]["status"] == "timeout" and "sockets" in status[0]["blocks"]


_structured = st.lists(
    st.one_of(
        st.sampled_from(["##knd:sample 1", "##knd:sample 2", "##knd:tcp ss", "##knd:tcp proc",
                         "##knd:udp ss", "##knd:file /etc/cni/net.d/1.conf", "##knd:link json",
                         "##knd:link text", "##knd:route json", "##knd:route text",
                         "##knd:socket /run/bird.ctl", "##knd:table ipvsadm", "##knd:table proc",
                         "##knd:ps eo", "##knd:df", "##knd:dfi", "##knd:resolv", "##knd:stats proc",
                         "##knd:stats conntrack", "##knd:sysctl", "##knd:fdb flannel.1",
                         "##knd:neigh flannel.1", "##knd:subnet.env", "##knd:proc_modules",
                         "F\t/etc/sysctl.conf", "table ip x {", "chain c {", "}", "[", "{",
                         "##knd:rule json", "##knd:rule text", "##knd:qdisc",
                         "##knd:hooks eth0:ingress eth0:egress x:1:", "##knd:filters json",
                         "##knd:filters text", "##knd:filter eth0:ingress",
                         "qdisc clsact ffff: dev eth0 parent ffff:fff1", "##knd:ps eos"]),
        st.text(max_size=80),
    ),
    max_size=40,
)


@settings(max_examples=300)
@given(_structured, st.sampled_from(sorted(BY_NAME)))
def test_structured_garbage_never_crashes(lines, probe):
    """Random text rarely gets past a parser's first check; random part headers do."""
    _no_crash(_record(probe, "\n".join(lines)))


# ip's xfrm words, policies' and SAs' alike, in any order: the parser keeps a policy's
# templates across lines, and an SA's fields across its address and proto lines
_XFRM = st.lists(
    st.one_of(
        st.sampled_from(["##knd:xfrm-state", "##knd:xfrm-state failed",
                         "src 10.244.1.0/24 dst 10.244.2.0/24 ", "src 1.2.3.4 dst 5.6.7.8",
                         "src ::/0 dst fd00::/64 ", "\tdir out priority 0 ptype main ",
                         "\tdir in action block priority 7 ", "\tsocket in priority 0 ",
                         "\ttmpl src 1.2.3.4 dst 5.6.7.8", "\ttmpl src 0.0.0.0 dst 0.0.0.0",
                         "\ttmpl src x dst y", "\t\tproto esp reqid 1 mode tunnel",
                         "\t\tproto esp spi 0x00000004 reqid 0 mode transport",
                         "\t\tproto esp reqid x mode", "\t\tlevel use ", "\t\tlevel",
                         "\tmark 0xe00/0xf00 ", "\tif_id 0x7", "\tif_id zz",
                         "\tproto esp spi 0xc1a2b3c4 reqid 1 mode tunnel",
                         "\tproto esp spi 0x0 reqid 1 mode tunnel", "\tproto"]),
        st.text(max_size=40),
    ),
    max_size=30,
)


@settings(max_examples=300)
@given(_XFRM)
# found by it: a template whose proto line never came, the SA listing right after it
@example(["src 10.244.1.0/24 dst 10.244.2.0/24 ", "\tdir out priority 0 ptype main ",
          "\ttmpl src 1.2.3.4 dst 5.6.7.8", "##knd:xfrm-state"])
def test_xfrm_policies_and_sas_in_any_order_never_crash(lines):
    record = _record("xfrm", "\n".join(lines))
    _no_crash(record)
    assert all(f.attrs["sa"] in (None, "present", "missing", "unread")
               for f in node_facts(record) if f.kind == "xfrm_policy")


def test_facts_doc_is_current():

    from kubenetdiag.facts.docs import render

    page = Path(__file__).parent.parent / "docs" / "facts.md"
    assert page.read_text() == render(), (
        "docs/facts.md is stale: python -m kubenetdiag.facts.docs > docs/facts.md")


@pytest.mark.parametrize("shell", [s for s in ("sh", "bash", "dash") if shutil.which(s)])
def test_sockets_probe_counts_listeners_descriptors_and_peers_by_state(tmp_path, shell):
    # The probe's own command over a stand-in ss that prints both users:() forms, the owners
    # being a real process with a known limit and a pid that does not exist.
    held = subprocess.Popen(
        [sys.executable, "-c", "import resource, sys, time\n"
         "resource.setrlimit(resource.RLIMIT_NOFILE, (40, resource.getrlimit("
         "resource.RLIMIT_NOFILE)[1]))\n"
         "files = [open('/dev/null') for _ in range(30)]\n"
         "print('ready', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout.readline() == "ready\n"
        gone = 4194303  # above any pid this machine hands out
        stub = tmp_path / "ss"
        stub.write_text(
            "#!/bin/sh\necho 'Netid State Recv-Q Send-Q Local Address:Port Peer Address:Port'\n"
            f"echo 'tcp LISTEN 0 128 0.0.0.0:8080 0.0.0.0:* users:((\"python3\",pid={held.pid},"
            "fd=3))'\n"
            f"echo 'tcp LISTEN 3 128 *:80 *:* users:((\"nginx\",{held.pid},6),"
            f"(\"nginx\",{gone},6))'\n"
            # FIN-WAIT-2 toward three peers: orphans (no owner) as iproute 3.10 prints an
            # IPv4-mapped peer, sockets a process still holds as current ss does, and a peer
            # below the floor that is not reported
            "i=0; while [ $i -lt 20 ]; do i=$((i+1)); "
            "echo \"tcp FIN-WAIT-2 0 0 ::ffff:10.0.0.5:4$i ::ffff:10.0.0.7:80\"; "
            "echo \"tcp FIN-WAIT-2 0 0 10.0.0.5:5$i 10.0.0.8:443 "
            "users:((\\\"java\\\",pid=7,fd=$i))\"; "
            "[ $i -gt 3 ] || echo \"tcp FIN-WAIT-2 0 0 10.0.0.5:6$i 10.0.0.9:8080\"; done\n"
            # TIME-WAIT: 600 connections this node closed toward one database, and 600 a
            # server here closed, each toward another client port: only the first gather
            "i=0; while [ $i -lt 600 ]; do i=$((i+1)); "
            "echo \"tcp TIME-WAIT 0 0 10.0.0.5:$((30000+i)) 10.0.0.20:3306\"; "
            "echo \"tcp TIME-WAIT 0 0 10.0.0.5:8080 10.0.0.30:$((40000+i))\"; done\n")
        stub.chmod(0o755)
        cmd = BY_NAME["sockets"].command
        cp = subprocess.run([shell, "-c", cmd], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    finally:
        held.kill()
        held.wait()
    facts = BY_NAME["sockets"].parse(Section("sockets", cmd, cp.returncode, 0.1, cp.stdout,
                                             cp.stderr), "n")
    (fd,) = kinds(facts, "process_fds")
    assert (fd["pid"], fd["ports"], fd["limit"]) == (held.pid, "80,8080", 40), cp.stdout
    assert 33 <= fd["open"] < 40 and fd["at_limit"] is False
    peers = {f["peer"]: (f["address"], f["port"], f["count"])
             for f in kinds(facts, "fin_wait2_peer")}
    assert peers == {"::ffff:10.0.0.7:80": ("10.0.0.7", 80, 20),
                     "10.0.0.8:443": ("10.0.0.8", 443, 20)}, cp.stdout
    assert kinds(facts, "tcp_states")[0]["fin_wait2"] == 43
    assert [(f["peer"], f["address"], f["port"], f["count"])
            for f in kinds(facts, "time_wait_peer")] == [
        ("10.0.0.20:3306", "10.0.0.20", 3306, 600)], cp.stdout
    assert kinds(facts, "tcp_states")[0]["time_wait"] == 1200


@pytest.mark.skipif(not shutil.which("unshare") or os.geteuid() != 0,
                    reason="needs root and unshare for a private network namespace")
def test_sockets_probe_succeeds_in_a_network_namespace_without_tcp_mem():
    # tcp_mem exists only in the initial network namespace; a node that is a namespace (every
    # lab node) must still get its socket facts, with the thresholds unknown. A new, empty,
    # unnamed namespace: nothing is sent and it is gone when the command ends.
    cmd = BY_NAME["sockets"].command
    cp = subprocess.run(["unshare", "--net", "sh", "-c", cmd], capture_output=True, text=True,
                        timeout=30)
    assert cp.returncode == 0, cp.stderr
    facts = BY_NAME["sockets"].parse(Section("sockets", cmd, cp.returncode, 0.1, cp.stdout,
                                             cp.stderr), "n")
    assert kinds(facts, "probe_status") == []
    assert kinds(facts, "sockstat")[0]["tcp_mem_state"] is None


def test_nft_xt_target_warnings_do_not_split_or_add_rules():
    facts = parse("nftables", "ubuntu24-k3s-xt-target-not-found")
    nat = next(t for t in kinds(facts, "nft_table") if t["table"] == "nat")
    # the rules the listing holds (what iptables-save shows), not one more per warning
    assert (nat["owner"], nat["chains"], nat["rules"]) == ("iptables-nft", 9, 15)
    post = next(c for c in kinds(facts, "nft_chain") if c["chain"] == "POSTROUTING")
    # the MASQUERADE rule is one rule again: its counter and its xt target on one line
    assert post["drop_rules"] == 0 and post["reject_rules"] == 0


def test_ipvs_virtual_servers_by_firewall_mark():
    for name in ("ipvsadm-fwm", "proc-fwm"):
        svc = kinds(parse("ipvs", name), "ipvs_service")
        fwm = [s for s in svc if s["proto"] == "FWM"]
        assert fwm[0]["fwmark"] == 10001000, name
        assert (fwm[0]["address"], fwm[0]["port"], fwm[0]["real_servers"]) == (None, None, 2)
        tcp = next(s for s in svc if s["proto"] == "TCP")
        assert (tcp["address"], tcp["port"], tcp["fwmark"]) == ("10.96.0.1", 443, None)
    assert kinds(parse("ipvs", "ipvsadm-fwm"), "ipvs_service")[2]["fwmark"] == 7


def test_iptables_summary_counts_chains_over_all_tables():
    facts = parse("iptables", "kube-proxy-1.36.3-nft-1.8.9")
    summary = kinds(facts, "iptables_summary")[0]
    # a chain of the same name in nat and filter (KUBE-SERVICES, KUBE-NODEPORTS...) is two
    assert summary["chains"] == len(kinds(facts, "iptables_chain")) == 36


def test_processes_renamed_runtimes_and_agents_by_alias():
    facts = kinds(parse("processes", "centos7-docker-current-openshift3"), "process")
    by_name = {p["name"]: p for p in facts}
    # reported under the names rules compare nodes by, with the alias they were found by
    assert (by_name["dockerd"]["running"], by_name["dockerd"]["matched"]) == (
        True, "dockerd-current")
    assert by_name["dockerd"]["pids"] == "612"
    # comm is cut to docker-containe: argv[0] has the whole name
    assert (by_name["containerd"]["pids"], by_name["containerd"]["matched"]) == (
        "640", "docker-containerd-current")
    # one OpenShift 3 node process is the kubelet and kube-proxy; a pager whose argument
    # reads "openshift start node" and a grep for kubelet are neither
    for name in ("kubelet", "kube-proxy"):
        assert (by_name[name]["pids"], by_name[name]["matched"]) == (
            "1187", "openshift start node"), name
    assert (by_name["crio"]["running"], by_name["crio"]["matched"]) == (False, None)


def test_k3s_and_microk8s_run_kubelet_kube_proxy_and_flannel_in_one_process():
    # k3s's agent (the kernel's name for `k3s agent`) holds kubelet, kube-proxy and flannel;
    # MicroK8s's kubelite kubelet and kube-proxy; containerd runs beside them as itself
    facts = kinds(parse("processes", "k3s-agent-microk8s"), "process")
    by_name = {p["name"]: p for p in facts}
    for name in ("kubelet", "kube-proxy"):
        assert (by_name[name]["running"], by_name[name]["count"]) == (True, 2), name
    assert (by_name["flanneld"]["pids"], by_name["flanneld"]["matched"]) == ("812", "k3s-agent")
    assert (by_name["containerd"]["pids"], by_name["containerd"]["matched"]) == (
        "860", "containerd")
    assert by_name["calico-node"]["running"] is False  # a grep for k3s-agent is no process


def test_process_alias_forms_in_a_site_list(tmp_path, monkeypatch):
    extra = tmp_path / "site.yaml"
    extra.write_text(
        "kubelet: [{name: kubelet, aliases: [{command: hyperkube kubelet}]}]\n"
        "runtime_shim: [{name: shim, aliases: [{contains: CONTAINERD-SHIM}, 7, {bad: x}]}]\n")
    monkeypatch.setenv("KUBENETDIAG_PROCESSES", str(extra))
    facts = kinds(parse("processes", "centos7-docker-current-openshift3"), "process")
    shim = next(p for p in facts if p["role"] == "runtime_shim")
    # contains ignores case; the aliases it cannot read are left out, not fatal
    assert (shim["running"], shim["matched"], shim["pids"]) == (
        True, "CONTAINERD-SHIM", "640")


def _partial(facts):
    return [f["reason"] for f in kinds(facts, "probe_status") if f["status"] == "partial"]


@pytest.mark.parametrize("probe", ["iptables", "iptables_legacy", "routes", "ipvs", "ipsets"])
def test_recorded_outputs_are_read_whole(probe):
    # every line of every real output is understood: a partial status there is a parser gap
    for f in sorted((FIX / probe).glob("*.txt")):
        assert not _partial(parse(probe, f.stem)), f.name


def _sec(probe: str, stdout: str) -> Section:
    return Section(probe, BY_NAME[probe].command, 0, 0.0, stdout, "")


def test_lines_a_parser_does_not_know_are_reported_not_invented():
    routes = BY_NAME["routes"].parse(_sec("routes", (
        "##knd:route text\n"
        "default via 10.0.0.1 dev eth0\n"
        "encap mpls 200 via 10.0.0.9 dev eth1\n"      # nothing here knows this form
        "10.244.1.0/24 via 10.0.0.2 dev eth0\n")), "n1")
    assert [r.attrs["dst"] for r in routes if r.kind == "route"] == [
        "0.0.0.0/0", "10.244.1.0/24"]
    assert _partial(routes) == ["1 line(s) not understood: encap mpls 200 via 10.0.0.9 dev eth1"]
    status = next(f for f in routes if f.kind == "probe_status")
    assert not validate_fact(status) and status.attrs["kinds"] == ""

    ipvs = BY_NAME["ipvs"].parse(_sec("ipvs", (
        "##knd:table ipvsadm\nIP Virtual Server version 1.2.1 (size=4096)\n"
        "TCP  10.96.0.1:443 rr\n  -> 10.0.0.5:6443  Masq 1 0 0\n"
        "SCTPX 10.96.0.3:99 rr\n")), "n1")
    assert len(kinds(ipvs, "ipvs_service")) == 1
    assert "SCTPX 10.96.0.3:99 rr" in _partial(ipvs)[0]

    ipt = BY_NAME["iptables"].parse(_sec("iptables", (
        "*filter\n:INPUT ACCEPT [0:0]\n-I INPUT -j DROP\n-A INPUT -j ACCEPT\nCOMMIT\n")), "n1")
    assert [r["target"] for r in kinds(ipt, "iptables_rule")] == ["ACCEPT"]
    assert "-I INPUT -j DROP" in _partial(ipt)[0]



# ---- one call where two were made: the same facts ------------------------------------------

@pytest.mark.parametrize(("probe", "one", "two", "kinds_compared"), [
    # one `ss -tuanmp` sorted by one awk, against `ss -tanp` and `ss -uanmp`, recorded together
    ("sockets", "debian12-netns-one-ss", "debian12-netns-two-ss",
     ("tcp_listener", "socket_queue", "udp_socket")),
    # GNU df's --output, against the two POSIX listings (space, inodes), recorded together
    ("host", "debian12-netns-one-df", "debian12-netns-two-df", ("filesystem",)),
])
def test_one_call_gives_the_facts_two_gave(probe, one, two, kinds_compared):
    def attrs(name):
        # the disk's use moved by a few blocks between the two recordings
        return sorted((f.kind, sorted((k, v) for k, v in f.attrs.items()
                                      if not k.endswith(("used", "used_kb", "avail_kb", "free"))))
                      for f in parse(probe, name) if f.kind in kinds_compared)

    got = attrs(one)
    assert got and got == attrs(two)


# ---- ipsets ----------------------------------------------------------------------------------

def test_ipsets_as_kube_proxy_ipvs_mode_writes_them():
    sets = {s["name"]: s for s in kinds(parse("ipsets", "kube-proxy-1.36.3-ipvs"), "ipset")}
    cluster = sets["KUBE-CLUSTER-IP"]
    assert (cluster["type"], cluster["family"], cluster["complete"]) == (
        "hash:ip,port", "inet", True)
    # sorted: ipset prints them in its hash order, which differs from node to node
    assert cluster["members"].split() == [
        "10.96.0.1,tcp:443", "10.96.0.10,tcp:53", "10.96.0.10,tcp:9153", "10.96.0.10,udp:53",
        "10.96.0.20,tcp:80"]
    assert cluster["entries"] == 5
    assert (sets["KUBE-NODE-PORT-TCP"]["type"], sets["KUBE-NODE-PORT-TCP"]["members"]) == (
        "bitmap:port", "30085")
    assert sets["KUBE-NODE-PORT-TCP"]["family"] is None  # a bitmap has no family
    assert sets["KUBE-6-CLUSTER-IP"]["family"] == "inet6"
    assert sets["KUBE-LOOP-BACK"]["type"] == "hash:ip,port,ip"


def test_ipsets_hash_nets_keep_their_exceptions():
    sets = {s["name"]: s for s in kinds(parse("ipsets", "calico-style-hash-net"), "ipset")}
    # `nomatch` is an exception inside a wider member: kept, marked, never read as a member
    assert sets["cali40all-ipam-pools"]["members"].split() == ["!10.244.7.0/24", "10.244.0.0/16"]
    # a host in a hash:net is printed without its /32
    assert sets["cali40all-hosts-net"]["members"].split() == ["198.18.0.11", "198.18.0.12"]
    assert sets["cali40s:web-ports"]["members"].split() == [
        "10.244.2.3,tcp:8080", "10.244.2.3,udp:53"]


def test_ipsets_not_loaded_is_no_set_and_a_missing_binary_is_said():
    status, facts = statuses_of("ipsets", "no-ipset-binary", 127)
    assert facts == []
    assert [(s["status"], s["probe"]) for s in status] == [("missing_tool", "ipsets")]
    quiet = BY_NAME["ipsets"].parse(_sec("ipsets", "# ip_set is not loaded\n"), "n1")
    assert quiet == []


def test_ipsets_as_a_login_without_root_is_permission_denied_with_what_it_blocks():
    # the probe's own command as an unprivileged user: ip_set loaded, the kernel refuses
    status, facts = statuses_of("ipsets", "nonroot", 1)
    assert facts == []
    assert [(s["status"], s["reason"]) for s in status] == [
        ("permission_denied", "ipset v7.17: Kernel error received: Operation not permitted")]
    assert "path walk" in status[0]["blocks"]


def test_an_ipset_output_cut_at_the_limit_leaves_its_last_set_incomplete():
    text = (FIX / "ipsets" / "kube-proxy-1.36.3-ipvs.txt").read_text()
    cut = text[:text.index("add KUBE-CLUSTER-IP 10.96.0.10,tcp:9153")]
    sec = Section("ipsets", BY_NAME["ipsets"].command, 0, 0.0, cut, "", truncated=True)
    sets = {s.attrs["name"]: s.attrs for s in BY_NAME["ipsets"].parse(sec, "n1")}
    assert sets["KUBE-CLUSTER-IP"]["complete"] is False and sets["KUBE-CLUSTER-IP"]["entries"] == 1
    assert all(s["complete"] for name, s in sets.items() if name != "KUBE-CLUSTER-IP")
    assert "KUBE-IPVS-IPS" not in sets  # after the cut: absent, so its lookups stay undecided
