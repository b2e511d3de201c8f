"""How the lab's IPVS recorder (kubenetdiag_lab.ipvs_shadow) rewrites a collected bundle, on
recorded outputs, without root or a running lab: which rules it swaps, what it refuses, and
that its binary is found where build.sh puts it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from kubenetdiag_lab import components, ipvs_shadow
from kubenetdiag_lab.errors import LabError

ROOT = Path(__file__).resolve().parents[1]
SAVED = (ROOT / "tests/fixtures/probes/iptables/kube-proxy-1.36.3-nft-1.8.9.txt").read_text()
IPVSADM = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
UDP  10.96.0.10:53 rr
  -> 10.244.1.3:53                Masq    1      0          0
TCP  10.96.0.1:443 rr
  -> 198.18.0.3:6443              Masq    1      0          0
TCP  10.96.0.10:53 rr
  -> 10.244.1.3:53                Masq    1      0          0
TCP  10.96.0.10:9153 rr
  -> 10.244.1.3:9153              Masq    1      0          0
TCP  10.96.0.20:80 rr
  -> 10.244.2.3:8080              Masq    1      0          0
TCP  198.18.0.12:30085 rr
  -> 10.244.2.3:8080              Masq    1      0          0
"""
PROXIER_NAT = """*nat
:PREROUTING - [0:0]
:POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
COMMIT
"""


def test_a_shadow_that_programs_what_kube_proxy_does_agrees():
    assert ipvs_shadow.disagreements(SAVED, IPVSADM) == []  # NodePorts are not compared


def test_a_shadow_a_sync_behind_is_refused_with_what_differs():
    behind = IPVSADM.replace("  -> 10.244.2.3:8080              Masq    1      0          0\n"
                             "TCP  198.18.0.12", "TCP  198.18.0.12")
    assert ipvs_shadow.disagreements(SAVED, behind) == [
        "10.96.0.20:80/TCP: iptables ['10.244.2.3:8080'], IPVS []"]
    missing = IPVSADM.replace("TCP  10.96.0.1:443 rr\n  -> 198.18.0.3:6443              Masq    "
                              "1      0          0\n", "")
    assert ipvs_shadow.disagreements(SAVED, missing) == [
        "10.96.0.1:443/TCP in iptables, not in IPVS"]


def test_merge_swaps_kube_proxys_chains_and_keeps_everything_else():
    merged = ipvs_shadow.merge(SAVED, PROXIER_NAT)
    nat = merged[merged.index("*nat"):]
    nat = nat[:nat.index("COMMIT")]
    assert not any(c in merged for c in ("KUBE-SVC-", "KUBE-SEP-", "KUBE-NODEPORTS"))
    assert "--match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT" in nat
    # flannel's rules and counters stay; kube-proxy's jump comes first (it prepends its jumps)
    lines = nat.splitlines()
    post = [line for line in lines if "-A POSTROUTING" in line]
    assert post[0].endswith("-j KUBE-POSTROUTING") and "FLANNEL-POSTRTG" in post[1]
    assert post[1].startswith("[151:41718] ")
    assert ":FLANNEL-POSTRTG - [0:0]" in lines
    # tables the proxier writes nothing in keep the node's own non-kube-proxy rules only
    mangle = merged[merged.index("*mangle"):merged.index("COMMIT")]
    assert "KUBE-" not in mangle


def test_the_node_document_is_rewritten_as_ipvs_mode_and_refused_when_inconsistent(monkeypatch):
    doc = {"name": "node1", "sections": [
        {"probe": "iptables", "stdout": SAVED},
        {"probe": "nftables", "stdout": "table ip nat { # handle 6\n}\n"},
        {"probe": "ipsets", "stdout": ""},
        {"probe": "ipvs", "stdout": "##knd:none\n"},
        {"probe": "modules", "stdout": "##knd:present\n/proc/net/ip_tables_names\n"
                                       "/sys/module/vxlan\n"},
        {"probe": "links", "stdout": '##knd:link json\n[{"ifindex":7,"ifname":"kube-ipvs0",'
                                     '"txqlen":32,"linkinfo":{"info_kind":"ifb"}}]\n'},
        {"probe": "processes", "stdout": "##knd:ps eos\n  9 S knd-ipvs-proxie /x/knd-ipvs-"
                                         "proxier --state=s\n 10 S kube-proxy kube-proxy\n"},
    ]}
    state = {"ipvsadm": IPVSADM, "iptables_save": PROXIER_NAT, "ip6tables_save": "",
             "ipset_save": "create KUBE-CLUSTER-IP hash:ip,port\n"}
    replayed = []

    def replay(netns, v4, v6, sets):
        replayed.append((netns, v4, sets))
        return "ipt-save", "nft-list", "ipset-save"

    monkeypatch.setattr(ipvs_shadow, "_replay", replay)
    ipvs_shadow.splice_node(doc, state, "", "kndx-ipvsrec")
    out = {s["probe"]: s["stdout"] for s in doc["sections"]}
    assert replayed[0][0] == "kndx-ipvsrec" and "KUBE-SVC-" not in replayed[0][1]
    assert (out["iptables"], out["nftables"], out["ipsets"]) == ("ipt-save", "nft-list",
                                                                  "ipset-save")
    assert out["ipvs"] == "##knd:table ipvsadm\n" + IPVSADM
    assert "/proc/net/ip_vs" in out["modules"].splitlines()
    link = json.loads(out["links"].splitlines()[1])[0]
    assert link["linkinfo"] == {"info_kind": "dummy"} and link["txqlen"] == 1000
    assert "knd-ipvs" not in out["processes"] and "kube-proxy" in out["processes"]

    # a shadow whose table is not the node's iptables: the recording is refused
    behind = dict(state, ipvsadm=IPVSADM.replace("TCP  10.96.0.20:80 rr\n",
                                                 "TCP  10.96.0.21:80 rr\n"))
    fresh = {"name": "node1", "sections": [
        {"probe": p, "stdout": SAVED if p == "iptables" else ""}
        for p in ("iptables", "nftables", "ipsets", "ipvs", "modules", "links")]}
    with pytest.raises(LabError, match="disagree.*record again"):
        ipvs_shadow.splice_node(fresh, behind, "", "kndx-ipvsrec")


def test_a_native_nftables_table_is_not_carried_over_silently():
    doc = {"name": "node1", "sections": [
        {"probe": p, "stdout": SAVED if p == "iptables" else ""}
        for p in ("iptables", "ipsets", "ipvs", "modules", "links")]}
    doc["sections"].append({"probe": "nftables", "stdout": "table inet guard { # handle 9\n}\n"})
    state = {"ipvsadm": IPVSADM, "iptables_save": PROXIER_NAT, "ip6tables_save": "",
             "ipset_save": ""}
    with pytest.raises(LabError, match="inet guard"):
        ipvs_shadow.splice_node(doc, state, "", "kndx-ipvsrec")


def test_the_cluster_documents_kube_proxy_config_says_ipvs():
    doc = {"calls": [{"name": "kube_proxy_config", "object": {"data": {
        "config.conf": "kind: KubeProxyConfiguration\nmode: iptables\nipvs:\n  scheduler: ''\n"}}}]}
    ipvs_shadow.splice_cluster(doc)
    assert "\nmode: ipvs\n" in doc["calls"][0]["object"]["data"]["config.conf"]


def test_the_binary_is_where_build_sh_puts_it():
    # build.sh derives the version from the Go source's digest as components.py does: an edit
    # of the source is a new cache path, so a stale binary is never run
    listed = subprocess.run(["bash", str(ROOT / "lab/components/build.sh"), "list"],
                            capture_output=True, text=True, check=True).stdout
    line = next(x for x in listed.splitlines() if x.startswith("knd-ipvs-proxier "))
    assert str(components.path_of("knd-ipvs-proxier")) in line


def test_a_new_lab_in_the_same_work_directory_starts_no_shadow(tmp_path):
    # the recorder's state file outlives `lab down`; the next lab's kube-proxy must not bring
    # a shadow back with it (start() restarts one where the file exists)
    from kubenetdiag_lab import kubeproxy
    from kubenetdiag_lab.paths import LabPaths
    from kubenetdiag_lab.topology import build

    shape, paths = build("kndx", 1), LabPaths(tmp_path)
    node = shape.nodes[0]
    kubeproxy.write_config(shape, paths, node, tmp_path / "kubeconfig")
    ipvs_shadow.state_path(paths, node.name).write_text("{}")
    assert ipvs_shadow.ran(paths, node.name)
    kubeproxy.write_config(shape, paths, node, tmp_path / "kubeconfig")
    assert not ipvs_shadow.ran(paths, node.name)
