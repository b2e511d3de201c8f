"""NetworkPolicy verdicts on the flows the checks sent and the DNS every namespace needs
(facts/policies.py), and which agent enforces them, from a cluster.json as the collector
writes it."""

from __future__ import annotations

import copy

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.facts.policies import MAX_VERDICTS, policy_facts

SRC = Source("t", "", None, "")


def _pod(ns, name, ip, node, labels=None, ports=(), host=False):
    return {"metadata": {"namespace": ns, "name": name, "labels": labels or {}},
            "spec": {"nodeName": node, "hostNetwork": host,
                     "containers": [{"name": "c", "ports": [
                         {"name": n, "containerPort": p, "protocol": pr} for n, p, pr in ports]}]},
            "status": {"phase": "Running", "podIP": ip}}


def _policy(ns, name, **spec):
    spec.setdefault("podSelector", {})
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


def _doc(policies, pods=None, daemonsets=None, namespaces=True):
    pods = pods if pods is not None else [
        _pod("kube-system", "coredns-0", "10.244.3.3", "n3", {"k8s-app": "kube-dns"},
             [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]),
        _pod("default", "probe", "10.244.1.4", "n1", {"app": "probe"}),
        _pod("shop", "web-1", "10.244.1.5", "n1", {"app": "web"}),
        _pod("shop", "web-2", "10.244.2.5", "n2", {"app": "web"}),
        _pod("kube-system", "kube-proxy-x", "198.18.0.2", "n2", {"k8s-app": "kube-proxy"},
             host=True),
    ]
    calls = [
        {"name": "networkpolicies", "status": "ok", "items": policies},
        {"name": "pods", "status": "ok", "items": pods},
        {"name": "daemonsets", "status": "ok", "items": daemonsets if daemonsets is not None
         else [{"metadata": {"namespace": "kube-system", "name": "calico-node"},
                "spec": {"template": {"spec": {"containers": [{"name": "calico-node"}]}}}}]},
    ]
    if namespaces:
        calls.append({"name": "namespaces", "status": "ok", "items": [
            {"metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}}}
            for n in ("default", "shop", "kube-system")]})
    return {"queried": True, "calls": calls}


def _facts(policies, dns_ok=True, extra=()):
    facts = [Fact("network_policy", "cluster", {"namespace": p["metadata"]["namespace"],
                                                "name": p["metadata"]["name"]}, SRC)
             for p in policies]
    facts += [
        Fact("dns_pod", "n3", {"pod": "coredns-0", "ip": "10.244.3.3", "ready": True}, SRC),
        Fact("own_pod_check", "n1", {"direction": "node_to_pod", "address": "10.244.1.4",
                                     "ok": True, "vantage": "cni-probe"}, SRC),
        Fact("dns_check", "n1", {"server": "10.244.3.3", "server_kind": "pod",
                                 "ok": dns_ok, "vantage": None}, SRC),
        Fact("tcp_check", "n1", {"target": "192.0.2.10:5432", "address": "192.0.2.10",
                                 "by": "ip", "ok": False, "vantage": "cni-probe"}, SRC),
        Fact("reach", "n1", {"src": "n1", "dst": "n2", "layer": "pod", "ok": False,
                             "vantage": "cni-probe"}, SRC),
    ]
    return facts + list(extra)


PLANS = {"n1": {"peers": [{"name": "n2", "pod_target": "10.244.2.5",
                           "pod_target_source": "route"}]}}


def _verdicts(out, **match):
    return [f for f in out if f.kind == "policy_verdict"
            and all(f.attrs.get(k) == v for k, v in match.items())]


def _enforcement(out):
    [f] = [f for f in out if f.kind == "policy_enforcement"]
    return f.attrs


def test_kube_system_deny_ingress_denies_the_failed_dns_check_and_names_the_policy():
    deny = _policy("kube-system", "deny-all-ingress", ingress=[])
    out = policy_facts(_facts([deny], dns_ok=False), _doc([deny]), PLANS)
    [v] = _verdicts(out, check="dns")
    assert v.node == "n3"  # the CoreDNS pod's node: the side that denies
    assert v.attrs["verdict"] == "denied" and v.attrs["denied_on"] == "ingress"
    assert v.attrs["failed"] is True
    assert v.attrs["policies"] == "kube-system/deny-all-ingress"
    assert (v.attrs["src"], v.attrs["dst"]) == ("node n1", "kube-system/coredns-0")
    e = _enforcement(out)
    assert (e["enforcer"], e["enforced"], e["policies"]) == ("calico", True, 1)
    # every namespace's pods lose DNS too (flows no check sent)
    need = _verdicts(out, check="none")
    assert {(f.attrs["src"], f.attrs["protocol"]) for f in need} >= {
        ("default/probe", "UDP"), ("default/probe", "TCP"), ("shop/web-1", "UDP")}
    assert all(f.attrs["verdict"] == "denied" for f in need)


def test_pods_with_the_same_labels_on_two_nodes_lose_dns_on_both_nodes():
    # shop's web pods run on n1 and n2: the finding must name both nodes, not the first
    # pod's, or an SRE looks for the broken lookups on one node only
    deny = _policy("shop", "deny-egress", policyTypes=["Egress"])
    out = policy_facts(_facts([deny]), _doc([deny]), PLANS)
    need = _verdicts(out, check="none", src_namespace="shop", protocol="UDP")
    assert sorted((f.node, f.attrs["src"], f.attrs["pods"]) for f in need) == [
        ("n1", "shop/web-1", 1), ("n2", "shop/web-2", 1)]


def _nodeport_checks(ok: bool) -> list[Fact]:
    # n1 connects to n2's NodePort (the web pod web-2 lives on n2) and to n3's (which
    # forwards it on to web-2)
    def check(node, dst):
        return Fact("nodeport_check", node, {
            "service": "shop/web:http", "node_port": 30085, "dst": dst, "address": "x",
            "own": False, "ok": ok, "detail": None if ok else "refused"}, SRC)
    port = Fact("service_port", "cluster", {
        "namespace": "shop", "name": "web", "port_name": "http", "port": 80,
        "protocol": "TCP", "node_port": 30085, "external_traffic_policy": "Cluster",
        "endpoints": "10.244.2.5:8080", "ready_endpoints": 1}, SRC)
    return [check("n1", "n2"), check("n1", "n3"), port]


def test_a_policy_admitting_pods_only_denies_nodeport_traffic_as_the_enforcer_sees_it():
    allow = _policy("shop", "web-from-pods", podSelector={"matchLabels": {"app": "web"}},
                    ingress=[{"from": [{"podSelector": {}}]}])
    out = policy_facts(_facts([allow], extra=_nodeport_checks(ok=False)), _doc([allow]), PLANS)
    got = sorted((v.node, v.attrs["src"], v.attrs["dst"], v.attrs["port"], v.attrs["verdict"],
                  v.attrs["failed"]) for v in _verdicts(out, flow="nodeport"))
    # on n2 the policy sees the client n1 itself (it is enforced before the masquerade), and
    # n1's connect to n3's NodePort as coming from n3, which forwarded it
    assert got == [("n2", "node n1", "shop/web-2", 8080, "denied", True),
                   ("n2", "node n3", "shop/web-2", 8080, "denied", True)]
    assert all(v.attrs["denied_on"] == "ingress" for v in _verdicts(out, flow="nodeport"))


def test_nodeport_traffic_that_got_through_is_not_blamed_on_a_policy():
    allow = _policy("shop", "web-from-pods", podSelector={"matchLabels": {"app": "web"}},
                    ingress=[{"from": [{"podSelector": {}}]}])
    out = policy_facts(_facts([allow], extra=_nodeport_checks(ok=True)), _doc([allow]), PLANS)
    assert {v.attrs["failed"] for v in _verdicts(out, flow="nodeport")} == {False}


def test_default_deny_egress_in_the_probe_namespace_denies_endpoint_and_pod_flows():
    deny = _policy("default", "deny-egress", policyTypes=["Egress"])
    out = policy_facts(_facts([deny]), _doc([deny]), PLANS)
    [ep] = _verdicts(out, check="tcp")
    assert (ep.node, ep.attrs["denied_on"], ep.attrs["dst"], ep.attrs["port"]) == (
        "n1", "egress", "192.0.2.10", 5432)
    assert ep.attrs["src"] == "default/probe" and ep.attrs["vantage"] == "cni-probe"
    [ping] = _verdicts(out, check="ping")
    assert (ping.attrs["dst"], ping.attrs["protocol"], ping.attrs["port"]) == (
        "shop/web-2", "ICMP", None)
    assert ping.attrs["verdict"] == "denied"
    # the node's own DNS query is not subject to a pod's egress policy: not kept at all
    assert not _verdicts(out, check="dns")


def test_policies_that_allow_the_flows_give_allowed_verdicts_naming_them():
    dns_ok = _policy("default", "allow-dns", policyTypes=["Egress"],
                     egress=[{"to": [{"namespaceSelector": {"matchLabels": {
                         "kubernetes.io/metadata.name": "kube-system"}}}],
                              "ports": [{"port": 53, "protocol": "UDP"},
                                        {"port": "dns-tcp", "protocol": "TCP"}]},
                             {"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]},
                             {"to": [{"namespaceSelector": {}}]}])
    out = policy_facts(_facts([dns_ok]), _doc([dns_ok]), PLANS)
    [ep] = _verdicts(out, check="tcp")
    assert ep.attrs["verdict"] == "allowed" and ep.attrs["allowing"] == "default/allow-dns"
    assert not _verdicts(out, verdict="denied")


def test_only_a_flow_a_policy_touches_gets_a_verdict():
    other = _policy("blog", "deny", ingress=[])  # a namespace with none of these pods
    out = policy_facts(_facts([other]), _doc([other]), PLANS)
    assert not _verdicts(out)
    assert _enforcement(out)["verdicts"] == 0


def test_flannel_alone_enforces_nothing():
    deny = _policy("kube-system", "deny", ingress=[])
    flannel = [{"metadata": {"namespace": "kube-flannel", "name": "kube-flannel-ds"},
                "spec": {"template": {"spec": {"containers": [{"name": "kube-flannel"}]}}}}]
    out = policy_facts(_facts([deny]), _doc([deny], daemonsets=flannel), PLANS)
    e = _enforcement(out)
    assert (e["enforcer"], e["enforced"]) == ("none", False)


def test_kube_router_without_its_firewall_enforces_nothing_and_canal_does():
    kr = [{"metadata": {"namespace": "kube-system", "name": "kube-router"},
           "spec": {"template": {"spec": {"containers": [
               {"name": "kube-router", "args": ["--run-router=true", "--run-firewall=false"]}]}}}}]
    deny = _policy("kube-system", "deny", ingress=[])
    assert _enforcement(policy_facts(_facts([deny]), _doc([deny], daemonsets=kr)))[
        "enforced"] is False
    canal = [{"metadata": {"namespace": "kube-system", "name": "canal"},
              "spec": {"template": {"spec": {"containers": [{"name": "calico-node"},
                                                            {"name": "kube-flannel"}]}}}}]
    assert _enforcement(policy_facts(_facts([deny]), _doc([deny], daemonsets=canal)))[
        "enforcer"] == "canal"


def test_enforcer_seen_as_a_node_process_when_the_api_shows_none():
    deny = _policy("kube-system", "deny", ingress=[])
    proc = Fact("process", "n2", {"name": "cilium-agent", "role": "cni_agent",
                                  "running": True, "count": 1, "args": "cilium-agent"}, SRC)
    out = policy_facts(_facts([deny], extra=[proc]), _doc([deny], daemonsets=[]), PLANS)
    e = _enforcement(out)
    assert (e["enforcer"], e["enforced"]) == ("cilium", True)
    assert "process cilium-agent on n2" in e["seen"]


def test_malformed_objects_degrade_and_are_named():
    good = _policy("kube-system", "deny", ingress=[])
    bad = _policy("default", "broken", ingress=[{"from": [{"podSelector": {
        "matchExpressions": [{"key": "a", "operator": "Like"}]}}]}])
    worse = {"metadata": {"namespace": "default", "name": "worse"}, "spec": ["not", "a", "map"]}
    doc = _doc([good, bad, worse, "junk", 7])
    doc["calls"][1]["items"] += ["junk", {"metadata": "x"}, {"metadata": {"namespace": "a",
                                                                          "name": 3}}]
    out = policy_facts(_facts([good, bad, worse], dns_ok=False), doc, PLANS)
    e = _enforcement(out)
    assert "default/broken" in e["unreadable"] and "default/worse" in e["unreadable"]
    # the good policy is still evaluated; a flow in a namespace with an unreadable policy is
    # only ever said to be denied, never allowed
    assert _verdicts(out, check="dns", verdict="denied")
    assert all(f.attrs["verdict"] != "allowed" for f in _verdicts(out, src_namespace="default"))


def test_namespaces_not_listed_fall_back_on_the_name_label():
    allow = _policy("kube-system", "dns-from-default", ingress=[{"from": [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "default"}}}]}])
    out = policy_facts(_facts([allow]), _doc([allow], namespaces=False), PLANS)
    assert _enforcement(out)["namespaces_known"] is False
    srcs = {f.attrs["src"] for f in _verdicts(out, check="none")}
    assert "shop/web-1" in srcs and "default/probe" not in srcs  # default is let in


def test_the_fact_count_is_capped_and_the_cap_said():
    pods = [_pod("kube-system", "coredns-0", "10.244.3.3", "n3", {"k8s-app": "kube-dns"})]
    pods += [_pod(f"ns{i}", "p", f"10.245.{i // 250}.{i % 250}", "n1", {"i": str(i)})
             for i in range(400)]
    deny = _policy("kube-system", "deny", ingress=[])
    out = policy_facts(_facts([deny]), _doc([deny], pods=pods), PLANS)
    e = _enforcement(out)
    assert len(_verdicts(out)) == MAX_VERDICTS == e["shown"] < e["verdicts"]


def test_no_policy_and_no_api_makes_nothing():
    assert policy_facts(_facts([]), None, PLANS) == []
    # an API that answered but holds no policy: nothing either (no fact per cluster for none)
    assert policy_facts(_facts([]), copy.deepcopy(_doc([])), PLANS) == []


# ---------------------------------------------------------------- through the rule base


def _dns_run(policies, daemonsets=None):
    """n1 and n2 query the CoreDNS pod on n3 and time out; n3's own query is answered (a pod
    and its node always talk). What the parse stage adds, then the shipped rules."""
    from kubenetdiag.engine import infer, load_ruleset
    from kubenetdiag.facts.vantage import vantage_facts

    facts = [Fact("network_policy", "cluster", {"namespace": p["metadata"]["namespace"],
                                                "name": p["metadata"]["name"],
                                                "default_deny": True,
                                                "policy_types": "Ingress"}, SRC)
             for p in policies]
    facts.append(Fact("dns_pod", "n3", {"pod": "coredns-0", "ip": "10.244.3.3", "ready": True,
                                        "restarts": 0}, SRC))
    for n, ok in (("n1", False), ("n2", False), ("n3", True)):
        facts.append(Fact("node_status", n, {"reachable": True, "address": n, "reason": None}))
        facts.append(Fact("dns_check", n, {
            "server": "10.244.3.3", "server_kind": "pod",
            "name": "kubernetes.default.svc.cluster.local", "ok": ok, "answer": None,
            "detail": None if ok else "timeout", "rtt_ms": None, "vantage": None}, SRC))
    facts += vantage_facts(facts)
    facts += policy_facts(facts, _doc(policies, daemonsets=daemonsets), {})
    return infer(load_ruleset(), facts)


def test_a_dns_deny_policy_is_the_root_cause_and_the_dns_failures_its_consequences():
    found = _dns_run([_policy("kube-system", "deny-all-ingress", ingress=[])])
    [cause] = [f for f in found if f["rule"] == "network-policy-denies-dns"]
    assert cause["root_cause"] and cause["nodes"] == ["n3"]
    assert "kube-system/deny-all-ingress" in cause["title"]
    assert "kube-system/coredns-0" in cause["title"] and "ingress" in cause["title"]
    # every other alarm on the CoreDNS node is explained by it
    others = [f for f in found if f["severity"] in ("critical", "error", "warning")
              and f["rule"] not in ("network-policy-denies-dns",
                                    "network-policy-blocks-namespace-dns")]
    assert all(not f["root_cause"] for f in others), [(f["rule"], f["nodes"]) for f in others]
    # and the same policy is not reported a second time for the pods no check spoke for
    assert not [f for f in found if f["rule"] == "network-policy-blocks-namespace-dns"]


def test_a_dns_rule_that_selects_kube_system_by_a_label_it_lacks_is_named_with_the_fix():
    egress = _policy("shop", "egress", policyTypes=["Egress"], egress=[
        {"to": [{"namespaceSelector": {"matchLabels": {"name": "kube-system"}}}],
         "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}])
    found = _dns_run([egress])
    [cause] = [f for f in found if f["rule"] == "network-policy-rule-misses-coredns"]
    assert cause["root_cause"] and "shop/egress" in cause["title"]
    # what to change: the selector, and the label kube-system does carry
    assert "namespaces name=kube-system, which kube-system is not " \
           "(kubernetes.io/metadata.name=kube-system)" in cause["explain"]
    # not also reported as a policy with no rule for DNS
    assert not [f for f in found if f["rule"] == "network-policy-blocks-namespace-dns"]


def test_a_policy_that_allows_dns_is_never_blamed_for_a_dns_failure():
    allow = _policy("kube-system", "dns-in", ingress=[{"ports": [
        {"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}])
    found = _dns_run([allow])
    assert not [f for f in found if f["fault"] == "network_policy_denies"]
    # the DNS failure is still reported, by the rules that look for other causes
    assert [f for f in found if f["severity"] in ("critical", "error") and f["root_cause"]]


def test_the_same_deny_on_flannel_alone_is_not_the_cause_and_says_it_is_not_enforced():
    flannel = [{"metadata": {"namespace": "kube-flannel", "name": "kube-flannel-ds"},
                "spec": {"template": {"spec": {"containers": [{"name": "kube-flannel"}]}}}}]
    found = _dns_run([_policy("kube-system", "deny-all-ingress", ingress=[])], flannel)
    assert not [f for f in found if f["fault"] == "network_policy_denies"]
    [warn] = [f for f in found if f["rule"] == "network-policy-not-enforced"]
    assert warn["severity"] == "warning"
    assert [f for f in found if f["rule"] == "network-policy-would-deny"]


def test_pods_past_the_label_set_cap_are_counted_not_silently_dropped(monkeypatch):
    import kubenetdiag.facts.policies as module

    monkeypatch.setattr(module, "MAX_GROUPS", 2)
    deny = _policy("kube-system", "deny", ingress=[])
    e = _enforcement(policy_facts(_facts([deny]), _doc([deny]), PLANS))
    assert e["pods_not_evaluated"] == 2  # 4 non-host pods, 4 label sets, 2 evaluated


def test_a_dns_check_asked_over_the_ssh_channel_is_judged_as_tcp():
    # kube-system lets UDP 53 in only; a node with no dig asked over an SSH channel (TCP)
    udp_only = _policy("kube-system", "dns-udp", ingress=[{"ports": [
        {"port": 53, "protocol": "UDP"}]}])
    channel = Fact("dns_check", "n2", {"server": "10.244.3.3", "server_kind": "pod",
                                       "ok": False, "vantage": None},
                   Source("active.dns.pod.0", "", None, "dns: error=timeout"))
    out = policy_facts(_facts([udp_only], extra=[channel]), _doc([udp_only]), PLANS)
    by_node = {f.attrs["src"]: f.attrs for f in _verdicts(out, check="dns")}
    assert by_node["node n1"]["protocol"] == "UDP" and by_node["node n1"]["verdict"] == "allowed"
    assert by_node["node n2"]["protocol"] == "TCP" and by_node["node n2"]["verdict"] == "denied"


# ---------------------------------------------------------------- a recorded lab bundle


def _lab_with(policies, daemonsets=()):
    from pathlib import Path

    from kubenetdiag.bundle import Bundle
    from kubenetdiag.engine import infer, load_ruleset
    from kubenetdiag.facts.parse import facts_from_records

    bundle = Bundle.read(Path(__file__).parent / "fixtures" / "bundles" / "lab-conntrack-full")
    doc = copy.deepcopy(bundle.cluster)
    for c in doc["calls"]:
        if c["name"] == "networkpolicies":
            c["items"] = policies
        if c["name"] == "daemonsets":
            c["items"] = c["items"] + list(daemonsets)
    facts = facts_from_records(bundle.records, doc, probes=bundle.meta.get("probes"))
    return facts, infer(load_ruleset(), facts)


def test_a_flannel_lab_with_a_deny_policy_is_warned_as_unenforced_never_blamed():
    facts, found = _lab_with([_policy("kube-system", "deny-all-ingress", ingress=[])])
    e = [f.attrs for f in facts if f.kind == "policy_enforcement"]
    assert e and e[0]["enforcer"] == "none" and e[0]["enforced"] is False
    denied = [f for f in facts if f.kind == "policy_verdict" and f.attrs["verdict"] == "denied"]
    assert denied and all(f.attrs["dst"] == "kube-system/coredns-0" for f in denied)
    rules = {f["rule"] for f in found}
    assert "network-policy-not-enforced" in rules and "network-policy-would-deny" in rules
    assert not [f for f in found if f["fault"] == "network_policy_denies"]


def test_checks_that_got_through_a_denying_policy_do_not_blame_it():
    # the API says calico runs, yet every DNS check to the isolated CoreDNS pod was answered:
    # whatever the policy says, it did not stop these flows, so it is no root cause of anything
    calico = {"metadata": {"namespace": "kube-system", "name": "calico-node"},
              "spec": {"template": {"spec": {"containers": [{"name": "calico-node"}]}}}}
    facts, found = _lab_with([_policy("kube-system", "deny-all-ingress", ingress=[])],
                             [calico])
    checked = [f for f in facts if f.kind == "policy_verdict" and f.attrs["check"] == "dns"]
    assert checked and all(f.attrs["failed"] is False for f in checked)
    assert not [f for f in found if f["rule"].startswith("network-policy-denies")]


def test_whether_policies_are_enforced_does_not_wait_for_the_checks():
    # an old bundle without own_pod_check must still say "nothing enforces your policies"
    from kubenetdiag.facts.producers import derived_inputs, observed

    assert "own_pod_check" not in derived_inputs()["policy_enforcement"]
    assert observed(["policy_enforcement"]) >= {"network_policy", "process"}
    assert "own_pod_check" in derived_inputs()["policy_verdict"]


def test_a_node_source_and_the_denying_side_are_said_in_chinese():
    from kubenetdiag.localize import value

    assert value("node n1", "zh-CN", "src") == "节点 n1"
    assert value("node n1 and more", "zh-CN", "src") == "node n1 and more"  # whole values only
    assert value("ingress", "zh-CN", "side") == "入向（目的 Pod）一侧"
    assert value("node n1", "en", "src") == "node n1"
