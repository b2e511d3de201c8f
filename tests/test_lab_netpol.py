"""NetworkPolicies the lab enforces for real: kube-router's policy controller in every node
(`lab up --network-policy kube-router`), and the fault network_policy_denies, whose flow is
refused by kube-router's own rules until the policy is deleted, after which every node's
firewall is as it was."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from kubenetdiag_lab import Lab, k8s_objects, kuberouter
from kubenetdiag_lab.errors import LabError
from kubenetdiag_lab.faults import denying_policy
from kubenetdiag_lab.topology import DNS_VIP, WEB_PORT, WEB_VIP, build

DNS_NAME = "web.default.svc.cluster.local"
POD_CHAIN = re.compile(r"POD name:(\S+) namespace: (\S+) to chain (KUBE-POD-FW-[A-Z0-9]+)")


def http_ok(lab: Lab, pod: str, url: str) -> tuple[bool, str]:
    out = lab.netprog(pod, "--timeout", "2", "http", url)
    return out.returncode == 0, out.stdout + out.stderr


def dns_ok(lab: Lab, pod: str, timeout: float = 2.0) -> bool:
    return lab.netprog(pod, "--timeout", str(timeout), "dns", DNS_VIP,
                       DNS_NAME).returncode == 0


def firewall(lab: Lab) -> dict[str, tuple[dict, list[str]]]:
    """Each node's iptables (every table, rules in order per chain) and ipsets. kube-router
    names a pod's chain KUBE-POD-FW-<hash of the pod and its sync's version>, a new name at
    every full sync: such a chain is named here by the pod its jump's comment names. It
    writes the jumps to those chains (one set per local pod, each matching only that pod's
    address) in Go's map order, which changes from sync to sync: they are compared as a set,
    in the places they take."""
    out = {}
    # flanneld writes its FORWARD accepts a moment after the routes `up` waits for
    deadline = time.monotonic() + 10
    while not all("-j FLANNEL-FWD" in "\n".join(kuberouter.filter_rules(lab.runners.node(n)))
                  for n in lab.nodes) and time.monotonic() < deadline:
        time.sleep(0.1)
    for node in lab.nodes:
        runner = lab.runners.node(node)
        saved = runner.run(["iptables-save"]).stdout.splitlines()
        names = {m[3]: f"KUBE-POD-FW<{m[2]}/{m[1]}>" for m in map(POD_CHAIN.search, saved) if m}

        def rename(text: str, names: dict[str, str] = names) -> str:
            return re.sub(r"KUBE-POD-FW-[A-Z0-9]+", lambda hit: names.get(hit[0], hit[0]), text)

        tables: dict[str, dict[str, list[str]]] = {}
        table: dict[str, list[str]] = {}
        for line in saved:
            if line.startswith("*"):
                table = tables.setdefault(line[1:], {})
            elif line.startswith(":"):
                table.setdefault(rename(line[1:].split()[0]), [])
            elif line.startswith("-A "):
                table.setdefault(rename(line.split()[1]), []).append(rename(line))
        for chains in tables.values():
            for chain, rules in chains.items():
                jumps = iter(sorted(rule for rule in rules if "POD name:" in rule))
                chains[chain] = [next(jumps) if "POD name:" in rule else rule for rule in rules]
        out[node.name] = (tables, kuberouter.ipsets(runner))
    return out


def assert_same_firewall(lab: Lab, before: dict[str, tuple[dict, list[str]]]) -> None:
    """Every node's rules and ipsets as `before`; a difference is named by node, table and
    chain."""
    after = firewall(lab)
    diffs = []
    for node, (tables, sets) in before.items():
        now_tables, now_sets = after[node]
        if sets != now_sets:
            diffs.append(f"{node} ipsets: {sets} -> {now_sets}")
        for name in sorted(set(tables) | set(now_tables)):
            was, now = tables.get(name, {}), now_tables.get(name, {})
            for chain in sorted(set(was) | set(now)):
                if was.get(chain) != now.get(chain):
                    diffs.append(f"{node} {name} {chain}: {was.get(chain)} -> {now.get(chain)}")
    assert not diffs, "\n".join(diffs)


def policies(lab: Lab) -> list[str]:
    lab.controlplane.attach()
    items = lab.controlplane.admin().get("/apis/networking.k8s.io/v1/networkpolicies")["items"]
    return [f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in items]


# ---- without a lab --------------------------------------------------------------------------


def test_kube_router_mode_is_flannel_only_and_named():
    shape = build("x", 2, "flannel-vxlan", network_policy="kube-router")
    assert shape.network_policy == "kube-router"
    assert build("x", 2).network_policy == "none"
    with pytest.raises(LabError, match="felix"):
        build("x", 2, "calico-bgp", network_policy="kube-router")
    with pytest.raises(LabError, match="unknown network policy mode"):
        build("x", 2, "flannel-vxlan", network_policy="calico")


def test_the_api_shows_kube_router_only_when_it_runs():
    state = {"cni": "flannel-vxlan", "nodes": [{"name": "node1", "address": "198.18.0.11"}],
             "network_policies": [denying_policy("dns")]}
    plain = k8s_objects.build(state)
    assert "kube-router" not in {ds["metadata"]["name"] for ds in plain["daemonsets"]}
    enforced = k8s_objects.build({**state, "network_policy": "kube-router"})
    ds = {d["metadata"]["name"]: d for d in enforced["daemonsets"]}["kube-router"]
    assert "--run-firewall=true" in ds["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ds["status"]["numberReady"] == 1
    (policy,) = enforced["networkpolicies"]
    assert policy["spec"]["policyTypes"] == ["Egress"]  # the fault's spec, as written
    assert policy["metadata"]["name"] == "client-egress-web-only"


# ---- the enforcing lab ----------------------------------------------------------------------


def diagnose(lab: Lab, tmp: Path) -> dict:
    import sys
    bundle = tmp / "bundle"
    proc = lab.client_exec([sys.executable, "-m", "kubenetdiag", "diagnose", "--inventory",
                            str(lab.inventory_path), "--kubeconfig", str(lab.kubeconfig_path),
                            "--bundle", str(bundle), "--format", "json", "--quiet"],
                           timeout=120)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.lab
def test_kube_router_runs_in_every_node_as_its_daemonset(netpol_lab):
    lab = netpol_lab
    api = lab.controlplane.admin()
    ds = api.get("/apis/apps/v1/namespaces/kube-system/daemonsets/kube-router")
    assert ds["status"]["numberReady"] == len(lab.nodes)
    for node in lab.nodes:
        (pid,) = kuberouter.pids(node)
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert args[0] == b"/usr/local/bin/kube-router"
        assert b"--run-firewall=true" in args and b"--run-router=false" in args
        rules = kuberouter.filter_rules(lab.runners.node(node))
        assert kuberouter.programmed(rules)
        health = lab.node_exec(node.name, ["curl", "-sS", "-m", "2", "-o", "/dev/null", "-w",
                                           "%{http_code}", f"http://127.0.0.1:"
                                           f"{kuberouter.HEALTH_PORT}/healthz"])
        assert health.stdout == "200"
    # nothing is denied without a policy
    client = lab.pods_on("node1")[0].name
    assert http_ok(lab, client, f"http://{WEB_VIP}/")[0]
    assert dns_ok(lab, client)


@pytest.mark.lab
def test_ingress_policy_refuses_the_web_pod_until_deleted(netpol_lab, tmp_path):
    lab = netpol_lab
    web = lab.pod_for_app("web")
    client = next(p for p in lab.pods if p.app == "client" and p.node != web.node)
    before = firewall(lab)
    with lab.injected("network_policy_denies", params={"via": "ingress"}):
        assert policies(lab) == ["default/web-allow-frontend"]
        for url in (f"http://{web.ip}:{WEB_PORT}/", f"http://{WEB_VIP}/"):
            ok, out = http_ok(lab, client.name, url)
            assert not ok and "refused" in out.lower(), out  # kube-router's REJECT
        assert dns_ok(lab, client.name)  # the policy selects the web pod only
        node_rules = {n.name: kuberouter.filter_rules(lab.runners.node(n)) for n in lab.nodes}
        assert kuberouter.policy_lines(node_rules[web.node], "default", "web-allow-frontend")
        assert not kuberouter.policy_lines(node_rules[client.node], "default",
                                           "web-allow-frontend")
        report = diagnose(lab, tmp_path)
    # the refusal is kube-router's REJECT, yet the diagnosis is the policy, named, on the web
    # pod's node: not a firewall rule, and nothing else as a root cause
    alarms = [f for f in report["findings"] if f["root_cause"]
              and f["severity"] in ("critical", "error", "warning")]
    assert {(f["fault"], tuple(f["nodes"])) for f in alarms} == {
        ("network_policy_denies", (web.node,))}
    assert all("default/web-allow-frontend" in f["title"] for f in alarms)
    # the web Service's NodePort answers on the web pod's node itself only (the policy admits
    # no node): told, as a consequence of the policy
    (nodeport,) = [f for f in report["findings"] if f["fault"] == "nodeport_fails_from_peers"]
    assert nodeport["nodes"] == [web.node] and not nodeport["root_cause"]
    assert any("NodePort traffic" in f["title"] for f in alarms)
    assert policies(lab) == []
    assert http_ok(lab, client.name, f"http://{web.ip}:{WEB_PORT}/")[0]
    assert http_ok(lab, client.name, f"http://{WEB_VIP}/")[0]
    assert_same_firewall(lab, before)


@pytest.mark.lab
@pytest.mark.parametrize(("via", "policy"), [
    ("dns", "client-egress-web-only"),
    # its rule for DNS selects namespaces by a label no namespace carries
    ("namespace", "client-egress-web-and-dns"),
])
def test_egress_policy_without_dns_breaks_resolution_until_deleted(netpol_lab, via, policy):
    lab = netpol_lab
    clients = [p.name for p in lab.pods if p.app == "client"]
    before = firewall(lab)
    with lab.injected("network_policy_denies", params={"via": via}):
        assert policies(lab) == [f"default/{policy}"]
        for client in clients:
            assert not dns_ok(lab, client, timeout=1.0)  # rejected: no answer comes
            assert http_ok(lab, client, f"http://{WEB_VIP}/")[0]  # what the policy allows
        sets = kuberouter.policy_ipsets(lab.runners.node(lab.nodes[0]))
        assert sets  # its source and destination pods, as kube-router keeps them
    assert policies(lab) == []
    assert all(dns_ok(lab, client) for client in clients)
    assert_same_firewall(lab, before)


@pytest.mark.lab
def test_a_blind_heal_removes_any_of_its_policies(netpol_lab):
    """The record of the fault lost (a crash, another process): heal with the defaults still
    deletes the policy it wrote, and kube-router its rules."""
    lab = netpol_lab
    web = lab.pod_for_app("web")
    client = next(p for p in lab.pods if p.app == "client" and p.node != web.node)
    before = firewall(lab)
    try:
        lab.inject("network_policy_denies", params={"via": "default-deny"})
        assert not http_ok(lab, client.name, f"http://{web.ip}:{WEB_PORT}/")[0]
        state = json.loads(lab.state_path.read_text())
        state["faults"] = []
        lab.state_path.write_text(json.dumps(state))
        lab.faults = []
        lab.heal("network_policy_denies")
    finally:
        lab.heal()
    assert policies(lab) == []
    assert http_ok(lab, client.name, f"http://{web.ip}:{WEB_PORT}/")[0]
    assert_same_firewall(lab, before)


@pytest.mark.lab
def test_without_an_enforcer_the_policy_is_only_an_object(lab):
    with pytest.raises(LabError, match="--network-policy kube-router"):
        lab.inject("network_policy_denies")
    web = lab.pod_for_app("web")
    client = next(p for p in lab.pods if p.app == "client" and p.node != web.node)
    with lab.injected("network_policy_denies", params={"via": "ingress", "enforced": "no"}):
        assert policies(lab) == ["default/web-allow-frontend"]
        assert http_ok(lab, client.name, f"http://{web.ip}:{WEB_PORT}/")[0]
    assert policies(lab) == []
