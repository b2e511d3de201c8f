"""A name looked up the pod's way (probes/active/poddns.py): the script's resolver helper run
for real against a pod resolv.conf, its output parsed into facts, and the check planned only
where there is a cluster DNS to compare with. The lab proves the rest
(test_lab_mechanisms: pod_dns_misconfigured; the scenario suite diagnoses it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kubenetdiag.facts import parse
from kubenetdiag.inventory import Host
from kubenetdiag.probes.active import plan, poddns, script
from test_active import _facts, _hosts

TOOLS = ("sh", "awk", "tr", "head", "sed", "grep", "timeout", "cat")
HEALTHY = ("search default.svc.cluster.local svc.cluster.local cluster.local\n"
           "nameserver 10.96.0.10\noptions ndots:5\n")


def _node_without_unshare(tmp_path: Path, dig_exit: int = 0) -> tuple[str, Path]:
    """A PATH with a fake dig that answers only the full name of the API Service (and logs
    every name asked) and no unshare, so the helper asks the way a non-root login must."""
    bindir = tmp_path / "bin"
    bindir.mkdir(parents=True)
    for tool in TOOLS:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"no {tool}")
        (bindir / tool).symlink_to(found)
    log = tmp_path / "asked"
    dig = bindir / "dig"
    dig.write_text(f"#!/bin/sh\necho \"$4 $5\" >> {log}\n"
                   f"[ {dig_exit} = 0 ] || exit {dig_exit}\n"
                   "[ \"$5\" = kubernetes.default.svc.cluster.local ] && echo 10.96.0.1\n"
                   "exit 0\n")
    dig.chmod(0o755)
    return str(bindir), log


def _lookup(path: str, conf: Path | None, name: str = poddns.NAME) -> tuple[str, int]:
    env = {"PATH": path, "__prc": str(conf) if conf else ""}
    done = subprocess.run(["sh", "-c", script.RES_HELPER, "_", name], capture_output=True,
                          text=True, env=env, timeout=20)
    return done.stdout, done.returncode


def test_the_pods_search_list_completes_the_short_name(tmp_path: Path) -> None:
    path, log = _node_without_unshare(tmp_path)
    conf = tmp_path / "resolv.conf"
    conf.write_text(HEALTHY)
    out, rc = _lookup(path, conf)
    assert rc == 0, out
    result = poddns.parse_pod_dns(out)
    assert result is not None
    assert (result["ok"], result["answer"], result["nameserver"]) == (True, "10.96.0.1",
                                                                     "10.96.0.10")
    assert result["search"] == "default.svc.cluster.local svc.cluster.local cluster.local"
    # ndots:5: the search list first, in order, until one answers
    assert log.read_text().splitlines() == [
        "@10.96.0.10 kubernetes.default.default.svc.cluster.local",
        "@10.96.0.10 kubernetes.default.svc.cluster.local"]


def test_another_cluster_domain_and_a_silent_nameserver(tmp_path: Path) -> None:
    path, _ = _node_without_unshare(tmp_path)
    conf = tmp_path / "resolv.conf"
    conf.write_text(HEALTHY.replace("cluster.local", "cluster.example"))
    out, rc = _lookup(path, conf)
    result = poddns.parse_pod_dns(out)
    assert rc == 3 and result is not None, out
    assert (result["ok"], result["detail"]) == (False, "no address")
    assert result["search"].split()[0] == "default.svc.cluster.example"

    silent, _ = _node_without_unshare(tmp_path / "silent", dig_exit=9)
    conf.write_text(HEALTHY.replace("10.96.0.10", "169.254.20.10"))
    result = poddns.parse_pod_dns(_lookup(silent, conf)[0])
    assert result is not None
    assert (result["ok"], result["detail"], result["nameserver"]) == (
        False, "no answer", "169.254.20.10")


def test_a_resolv_conf_with_no_nameserver_or_none_found(tmp_path: Path) -> None:
    path, _ = _node_without_unshare(tmp_path)
    conf = tmp_path / "resolv.conf"
    conf.write_text("search default.svc.cluster.local\n")
    result = poddns.parse_pod_dns(_lookup(path, conf)[0])
    assert result is not None and result["detail"] == "no nameserver"
    out, rc = _lookup(path, None)  # no process of the pod showed its resolv.conf
    assert rc == 127 and "no process of the pod" in out


def test_hostile_search_line_is_bounded_and_cleaned(tmp_path: Path) -> None:
    path, _ = _node_without_unshare(tmp_path)
    conf = tmp_path / "resolv.conf"
    conf.write_text("search a.example \x1b]8;;http://x\x07b " + "c" * 5000 + "\n"
                    "nameserver 10.96.0.10\n")
    out, _ = _lookup(path, conf)
    result = poddns.parse_pod_dns(out)
    assert result is not None and "\x1b" not in result["search"]
    assert len(result["search"]) <= 512


def _run(sections: list[dict]) -> list:
    p = plan.plan(_facts(2), _hosts(2))["node1"]
    return parse.active_facts("node1", {"plan": p, "podns": "cni-client-1",
                                        "sections": sections})


def test_sections_become_facts_and_an_unknown_view_is_not_checked() -> None:
    ok = ("resolver: pod 10.96.0.11\nsearch: default.svc.cluster.local\n"
          "unresolved: kubernetes.default\n")
    [fact] = _run([{"probe": "active.pod.dns", "exit_code": 3, "stdout": ok}])
    assert fact.kind == "pod_dns_check" and fact.attrs == {
        "nameserver": "10.96.0.11", "search": "default.svc.cluster.local", "ok": False,
        "answer": None, "detail": "no address", "name": "kubernetes.default",
        "vantage": "cni-client-1"}
    [status] = _run([{"probe": "active.pod.dns", "exit_code": 127,
                      "stdout": "kubenetdiag: no process of the pod shows its resolv.conf"}])
    assert (status.kind, status.attrs["status"]) == ("probe_status", "missing_tool")
    assert "resolv.conf" in status.attrs["blocks"]
    [odd] = _run([{"probe": "active.pod.dns", "exit_code": 0, "stdout": "1.2.3.4\n"}])
    assert (odd.kind, odd.attrs["status"]) == ("probe_status", "failed")


def test_a_node_whose_pods_all_have_the_nodes_resolver_is_not_checked() -> None:
    """CoreDNS's node with no other pod: the pod asked in is no vantage point for what pods
    are told, and the report lists the check as not made there rather than passed."""
    default = ("resolver: pod 198.18.0.250\nsearch: lab.example\n"
               "resolved: kubernetes.default 198.18.0.77\n")
    [status] = _run([{"probe": "active.pod.dns", "exit_code": 0, "stdout": default}])
    assert status.kind == "probe_status" and status.attrs["status"] == "not_queried"
    assert "cni-client-1" in status.attrs["reason"] and "198.18.0.250" in status.attrs["reason"]


def test_planned_where_a_cluster_dns_is_known_only() -> None:
    with_api = plan.plan(_facts(2), _hosts(2))["node1"]
    ids = [cid for cid, _ in script.jobs(with_api)]
    assert "pod.dns" in ids
    built = script.build(with_api, "M")
    assert "__prc=" in built and "__RES=" in built
    nodes_only = [f for f in _facts(2) if f.kind not in ("dns_pod", "dns_service")]
    without = plan.plan(nodes_only, [Host("node1", "198.18.0.11"),
                                     Host("node2", "198.18.0.12")])["node1"]
    assert "pod.dns" not in [cid for cid, _ in script.jobs(without)]


def _pods(tmp_path: Path, resolv: dict[str, str | None]) -> tuple[Path, Path]:
    """A node's /run/netns and /proc in miniature: one netns file per pod, and one process
    in each (its ns/net a link to the pod's netns file, so `-ef` holds as it does on a node)
    whose root shows the given resolv.conf (None: a link, which must not be followed)."""
    netns, proc = tmp_path / "netns", tmp_path / "proc"
    netns.mkdir()
    for pid, (pod, text) in enumerate(resolv.items(), start=100):
        (netns / pod).write_text("")
        (proc / str(pid) / "ns").mkdir(parents=True)
        (proc / str(pid) / "ns" / "net").symlink_to(netns / pod)
        etc = proc / str(pid) / "root" / "etc"
        etc.mkdir(parents=True)
        if text is None:
            (etc / "resolv.conf").symlink_to(tmp_path / "elsewhere")
        else:
            (etc / "resolv.conf").write_text(text)
    return netns, proc


def _choose(netns: Path, proc: Path) -> tuple[str, str, str]:
    """The script's pod-resolver step, on the miniature instead of the node's paths, after
    the preamble entered the first pod: (resolv.conf chosen, netns entered, markers)."""
    first = sorted(netns.iterdir())[0]
    code = (script._POD_RESOLVER.replace("/run/netns/", f"{netns}/")
            .replace("/proc/[0-9]*", f"{proc}/[0-9]*"))
    done = subprocess.run(
        ["sh", "-c", f"M=@@; __pns={first}; __inpod='nsenter --net={first}'\n{code}\n"
         'echo "$__prc|$__pns|$__inpod"'], capture_output=True, text=True, timeout=20)
    *markers, last = done.stdout.splitlines()
    prc, pns, inpod = last.split("|")
    assert inpod == f"nsenter --net={pns}"
    return prc, Path(pns).name, " ".join(markers)


DEFAULT = "nameserver 198.18.0.250\nsearch lab.example\n"  # dnsPolicy Default: the node's


def test_the_pods_view_moves_to_a_pod_told_the_clusters_dns(tmp_path: Path):
    """CoreDNS and other dnsPolicy Default pods carry the node's resolv.conf: checking
    theirs would say nothing about what the node's pods are told."""
    netns, proc = _pods(tmp_path, {"cni-0a": DEFAULT, "cni-1b": None, "cni-2c": HEALTHY})
    prc, pns, markers = _choose(netns, proc)
    assert (Path(prc).read_text(), pns, markers) == (HEALTHY, "cni-2c", "@@:podns:cni-2c")


def test_with_no_clusterfirst_pod_the_first_pod_stays(tmp_path: Path):
    netns, proc = _pods(tmp_path, {"cni-0a": DEFAULT, "cni-1b": DEFAULT})
    prc, pns, markers = _choose(netns, proc)
    assert (Path(prc).parent.parent.parent.name, pns, markers) == ("100", "cni-0a", "")
