"""Benign conditions: what healthy clusters have that looks like a fault.

A diagnoser that matches how a fault is usually written also matches these: a distribution's
default that is harmful only in another setting, what Docker or podman installs beside
Kubernetes, an operator's static ARP table. Each breaks nothing here (tests/
test_lab_mechanisms.py proves the traffic still flows and the heal is exact), so a finding at
warning or above on one blames a healthy component: the scenario suite expects none.

They are registered as faults with `benign=True`, injected and healed the same way
(`lab inject benign_docker_installed --node node2`), named benign_* so that no fault code of
the diagnoser's is ever theirs.
"""

from __future__ import annotations

import json
import re
import shlex

from kubenetdiag_lab import coredns, k8s_objects, kubeproxy, nodehost, services
from kubenetdiag_lab.errors import LabError
from kubenetdiag_lab.faults import (
    LIBVIRT_BRIDGE_CONF,
    LOCAL_CLIENTS,
    LOCAL_NODE_PORT,
    LOCAL_SERVICE,
    SECURITY_TABLE,
    Action,
    Fault,
    FaultContext,
    LabNode,
    Params,
    _app_pod,
    _arp_table_tidy,
    _coredns_node,
    _corefile_reloaded,
    _drop_chains,
    _eth0_mac,
    _firewall_off,
    _firewall_on,
    _freeze,
    _ipt_delete,
    _ipt_tidy,
    _kill_matching_in,
    _neigh_right,
    _netprog,
    _nft,
    _noop,
    _peer_client,
    _procs_matching,
    _restore,
    _rp_loose,
    _security_off,
    _security_on,
    _start_daemon_script,
    _start_in,
    _start_in_node,
    _start_in_pod,
    _stop_matching,
    _sysctl,
    _sysctl_file,
    _thaw,
    _wait_listen,
    _wait_local_rules,
    _wait_pod_listen,
    _wait_queue,
    _wait_ss,
    _web_node,
    local_service,
    register,
)
from kubenetdiag_lab.topology import OUTSIDE_HOST, OUTSIDE_PORT, Service, ServicePort, Topology


def _rp_strict_everywhere(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # RHEL 7's /usr/lib/sysctl.d/50-default.conf sets both; every path of the lab is
    # symmetric, so nothing arrives where its route back does not leave
    _sysctl(ctx, node, "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.default.rp_filter=1")


register(Fault(
    "benign_rp_filter_strict",
    "strict reverse-path filtering on every interface of the node, net.ipv4.conf.{all,default}"
    ".rp_filter=1, as RHEL 7 and its rebuilds ship it, on paths that are all symmetric: every "
    "packet arrives where the route back to its source leaves, and nothing is dropped "
    "(rp_filter_strict is this meeting an asymmetric path)",
    _rp_strict_everywhere, _rp_loose, benign=True,
))


DOCKER_BRIDGE = "docker0"
DOCKER_NET = "172.17.0.0/16"  # docker's default bip, the same on every docker host
DOCKER_FILTER_CHAINS = ["DOCKER", "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2",
                        "DOCKER-USER"]
# FORWARD's head as dockerd (20.10 to 27) writes it, top first
DOCKER_FORWARD = [
    ["-j", "DOCKER-USER"],
    ["-j", "DOCKER-ISOLATION-STAGE-1"],
    ["-o", DOCKER_BRIDGE, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
    ["-o", DOCKER_BRIDGE, "-j", "DOCKER"],
    ["-i", DOCKER_BRIDGE, "!", "-o", DOCKER_BRIDGE, "-j", "ACCEPT"],
    ["-i", DOCKER_BRIDGE, "-o", DOCKER_BRIDGE, "-j", "ACCEPT"],
]
DOCKER_NAT = [
    ("PREROUTING", ["-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"]),
    ("OUTPUT", ["!", "-d", "127.0.0.0/8", "-m", "addrtype", "--dst-type", "LOCAL",
                "-j", "DOCKER"]),
    ("POSTROUTING", ["-s", DOCKER_NET, "!", "-o", DOCKER_BRIDGE, "-j", "MASQUERADE"]),
]


def _docker_installed(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # dockerd started on a node where flannel already runs: its bridge, its chains at the head
    # of FORWARD and FORWARD's policy DROP (since docker 1.13). flannel's FLANNEL-FWD accepts
    # the pod network further down, so the pods' forwarded traffic never reaches the policy.
    runner = ctx.node(node)
    runner.run(["ip", "link", "add", DOCKER_BRIDGE, "address", "02:42:5c:7e:11:01",
                "type", "bridge"])
    runner.run(["ip", "address", "add", "172.17.0.1/16", "dev", DOCKER_BRIDGE])
    runner.run(["ip", "link", "set", DOCKER_BRIDGE, "up"])
    # a container that ran and stopped: its veth came and went, and the bridge without a port
    # is left with no carrier (state DOWN), as on every docker host whose containers stopped
    runner.run(["ip", "link", "add", "veth5d1c0a7", "master", DOCKER_BRIDGE, "up",
                "type", "veth", "peer", "name", "veth5d1c0a8"])
    runner.run(["ip", "link", "set", "veth5d1c0a8", "up"])
    runner.run(["ip", "link", "del", "veth5d1c0a7"])
    forward = "".join(f"-I FORWARD {i} {' '.join(spec)}\n"
                      for i, spec in enumerate(DOCKER_FORWARD, 1))
    _restore(ctx, node,
             "*filter\n" + "".join(f":{chain} - [0:0]\n" for chain in DOCKER_FILTER_CHAINS)
             + forward
             + f"-A DOCKER-ISOLATION-STAGE-1 -i {DOCKER_BRIDGE} ! -o {DOCKER_BRIDGE} "
             "-j DOCKER-ISOLATION-STAGE-2\n"
             "-A DOCKER-ISOLATION-STAGE-1 -j RETURN\n"
             f"-A DOCKER-ISOLATION-STAGE-2 -o {DOCKER_BRIDGE} -j DROP\n"
             "-A DOCKER-ISOLATION-STAGE-2 -j RETURN\n"
             "-A DOCKER-USER -j RETURN\nCOMMIT\n"
             "*nat\n:DOCKER - [0:0]\n"
             + "".join(f"-A {chain} {' '.join(spec)}\n" for chain, spec in DOCKER_NAT)
             + f"-A DOCKER -i {DOCKER_BRIDGE} -j RETURN\nCOMMIT\n")
    runner.run(["iptables", "-P", "FORWARD", "DROP"])


def _docker_removed(ctx: FaultContext, node: LabNode, params: Params) -> None:
    runner = ctx.node(node)
    runner.run(["iptables", "-P", "FORWARD", "ACCEPT"])
    for spec in DOCKER_FORWARD:
        _ipt_delete(ctx, node, "FORWARD", spec)
    for chain, spec in DOCKER_NAT:
        _ipt_delete(ctx, node, chain, spec, table="nat")
    for chain in DOCKER_FILTER_CHAINS:
        runner.run(["iptables", "-F", chain], check=False)
    _drop_chains(ctx, node, DOCKER_FILTER_CHAINS)
    runner.run(["iptables", "-t", "nat", "-F", "DOCKER"], check=False)
    runner.run(["iptables", "-t", "nat", "-X", "DOCKER"], check=False)
    runner.run(["ip", "link", "del", DOCKER_BRIDGE], check=False)


register(Fault(
    "benign_docker_installed",
    "docker installed on the node beside Kubernetes, its containers stopped: its bridge "
    "docker0 (172.17.0.1/16, no port, so no carrier and state DOWN), its chains DOCKER-USER, "
    "DOCKER-ISOLATION-STAGE-1/2 and DOCKER at the head of FORWARD, its MASQUERADE for "
    "172.17.0.0/16, and FORWARD's policy DROP, as dockerd sets it; flannel's FLANNEL-FWD "
    "accepts the pod network before the policy is reached",
    _docker_installed, _docker_removed, benign=True,
    modes=("flannel-vxlan", "flannel-host-gw"),
))


def _ntp_untracked(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # a busy NTP server's usual tuning: its queries and answers kept out of conntrack
    _restore(ctx, node, "*raw\n-A PREROUTING -p udp --dport 123 -j NOTRACK\n"
                        "-A OUTPUT -p udp --sport 123 -j NOTRACK\nCOMMIT\n")


def _ntp_tracked(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _ipt_delete(ctx, node, "PREROUTING", ["-p", "udp", "--dport", "123", "-j", "NOTRACK"],
                table="raw")
    _ipt_delete(ctx, node, "OUTPUT", ["-p", "udp", "--sport", "123", "-j", "NOTRACK"],
                table="raw")
    _ipt_tidy(ctx, node, "raw", ["PREROUTING", "OUTPUT"])


register(Fault(
    "benign_ntp_untracked",
    "the node serves NTP and exempts it from connection tracking, as busy time servers are "
    "tuned: NOTRACK for UDP to port 123 in raw PREROUTING and from port 123 in raw OUTPUT. "
    "No Kubernetes traffic is UDP 123 (notrack_rule is such an exemption catching DNS)",
    _ntp_untracked, _ntp_tracked, benign=True,
))


def _arp_pinned(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # a static ARP table kept by configuration management, right for every peer
    for peer in ctx.topology.peers(node):
        ctx.node(node).run(["ip", "neigh", "replace", peer.address, "lladdr",
                            _eth0_mac(ctx, peer), "dev", "eth0", "nud", "permanent"])


register(Fault(
    "benign_static_arp",
    "a permanent neighbour (ARP) entry on the node's eth0 for every peer's node address, each "
    "with the peer's own MAC, as a static ARP table kept by configuration management pins "
    "them (underlay_neighbor_wrong is one of them wrong)",
    _arp_pinned, _neigh_right, benign=True,
))


# podman's default network file, which `dnf install podman` wrote on RHEL 8 and its rebuilds
# (podman 3, CNI backend): it sorts after the cluster's 10-*.conflist, so no runtime takes it
PODMAN_CNI = "87-podman-bridge.conflist"
PODMAN_CONF = {
    "cniVersion": "0.4.0", "name": "podman",
    "plugins": [
        {"type": "bridge", "bridge": "cni-podman0", "isGateway": True, "ipMasq": True,
         "hairpinMode": True,
         "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                  "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall"}, {"type": "tuning"}],
}


def _podman_config(ctx: FaultContext, node: LabNode, params: Params) -> None:
    text = shlex.quote(json.dumps(PODMAN_CONF, indent=2) + "\n")
    ctx.node(node).shell(f"printf %s {text} > /etc/cni/net.d/{PODMAN_CNI}")


def _podman_config_gone(ctx: FaultContext, node: LabNode, params: Params) -> None:
    ctx.node(node).shell(f"rm -f /etc/cni/net.d/{PODMAN_CNI}")


register(Fault(
    "benign_podman_cni_config",
    f"podman's CNI network file /etc/cni/net.d/{PODMAN_CNI} (bridge cni-podman0, "
    "10.88.0.0/16) beside the cluster's, as installing podman on RHEL 8 writes it: it sorts "
    "after the cluster's 10-*.conflist, so the runtime never takes it (cni_config_shadowed "
    "is a file that sorts before)",
    _podman_config, _podman_config_gone, benign=True,
    modes=("flannel-vxlan", "flannel-host-gw"),  # the calico lab writes no CNI configuration
))


# calico's VXLAN device, left by a cluster that ran calico (VXLAN mode) before flannel: the
# uninstall removes the pods, not the node's devices
LEFTOVER_VXLAN = "vxlan.calico"


def _vxlan_left(ctx: FaultContext, node: LabNode, params: Params) -> None:
    ctx.node(node).run(["ip", "link", "add", LEFTOVER_VXLAN, "type", "vxlan", "id", "4096",
                        "dstport", "4789", "dev", "eth0", "nolearning"])


def _vxlan_left_gone(ctx: FaultContext, node: LabNode, params: Params) -> None:
    ctx.node(node).run(["ip", "link", "del", LEFTOVER_VXLAN], check=False)


register(Fault(
    "benign_leftover_vxlan_device",
    f"calico's VXLAN device {LEFTOVER_VXLAN} (VNI 4096, UDP 4789), down, left on the node by a "
    "CNI the cluster ran before flannel: no route, address or neighbour uses it",
    _vxlan_left, _vxlan_left_gone, benign=True,
    modes=("flannel-vxlan", "flannel-host-gw"),
))


# fail2ban's iptables-multiport action after it banned an address that tried SSH passwords:
# an address outside the lab that never sends anything here
F2B_BANNED = "198.51.100.23"
F2B_JUMP = ["-p", "tcp", "-m", "multiport", "--dports", "22", "-j", "f2b-sshd"]


def _fail2ban(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _restore(ctx, node, "*filter\n:f2b-sshd - [0:0]\n"
                        f"-I INPUT 1 {' '.join(F2B_JUMP)}\n"
                        f"-A f2b-sshd -s {F2B_BANNED}/32 -j REJECT "
                        "--reject-with icmp-port-unreachable\n"
                        "-A f2b-sshd -j RETURN\nCOMMIT\n")


def _fail2ban_gone(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _ipt_delete(ctx, node, "INPUT", F2B_JUMP)
    ctx.node(node).run(["iptables", "-F", "f2b-sshd"], check=False)
    _drop_chains(ctx, node, ["f2b-sshd"])


register(Fault(
    "benign_fail2ban",
    "fail2ban guarding the node's sshd, one address banned: INPUT jumps to its chain f2b-sshd "
    f"for TCP 22, which REJECTs {F2B_BANNED} (an address outside the cluster) and RETURNs "
    "the rest",
    _fail2ban, _fail2ban_gone, benign=True,
))


# An anti-ping-flood pair of rules from a hardening template: echo requests accepted at 2 a
# second (a burst of 5), the rest dropped, ahead of everything else in INPUT
PING_LIMIT = ["-p", "icmp", "-m", "icmp", "--icmp-type", "8", "-m", "limit", "--limit", "2/sec",
              "--limit-burst", "5", "-j", "ACCEPT"]
PING_OVER = ["-p", "icmp", "-m", "icmp", "--icmp-type", "8", "-j", "DROP"]


def _ping_limited(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _restore(ctx, node, f"*filter\n-I INPUT 1 {' '.join(PING_LIMIT)}\n"
                        f"-I INPUT 2 {' '.join(PING_OVER)}\nCOMMIT\n")


def _ping_unlimited(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _ipt_delete(ctx, node, "INPUT", PING_OVER)
    _ipt_delete(ctx, node, "INPUT", PING_LIMIT)


register(Fault(
    "benign_icmp_rate_limited",
    "the node's INPUT accepts echo requests at 2 a second (a burst of 5) and drops the rest, "
    "as hardening templates against ping floods write it: every other ping the diagnoser "
    "sends the node is dropped, and none of the cluster's traffic is a ping "
    "(icmp_echo_blocked drops them all)",
    _ping_limited, _ping_unlimited, benign=True,
))


KEEPALIVED_VIP = "198.18.0.100/32"  # on the node network, held by no node of the lab


def _vip(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # keepalived's VRRP master for a control-plane VIP adds it as a /32 beside the node's own
    ctx.node(node).run(["ip", "address", "add", KEEPALIVED_VIP, "dev", "eth0"])


def _vip_gone(ctx: FaultContext, node: LabNode, params: Params) -> None:
    ctx.node(node).run(["ip", "address", "del", KEEPALIVED_VIP, "dev", "eth0"], check=False)


register(Fault(
    "benign_keepalived_vip",
    f"a second address on the node's eth0, {KEEPALIVED_VIP}, as keepalived adds the virtual "
    "address of the control plane on the node that is its VRRP master; the node's own "
    "address stays first",
    _vip, _vip_gone, benign=True,
))


# A load balancer's virtual address that the node serves in direct routing (LVS-DR): held on
# lo so the node accepts what the balancer forwards to it, and kept out of ARP so that only the
# balancer answers for it on the node network
LVS_VIP = "198.18.0.101"


def _lvs_rules(node: LabNode) -> list[list[str]]:
    return [["INPUT", "-d", LVS_VIP, "-j", "DROP"],
            ["OUTPUT", "-s", LVS_VIP, "-j", "mangle", "--mangle-ip-s", node.address]]


def _lvs_real_server(ctx: FaultContext, node: LabNode, params: Params) -> None:
    runner = ctx.node(node)
    runner.run(["ip", "address", "add", f"{LVS_VIP}/32", "dev", "lo"])
    for rule in _lvs_rules(node):
        runner.run(["arptables", "-A", *rule])


def _lvs_gone(ctx: FaultContext, node: LabNode, params: Params) -> None:
    runner = ctx.node(node)
    for rule in _lvs_rules(node):
        while runner.run(["arptables", "-D", *rule], check=False).returncode == 0:
            pass
    _arp_table_tidy(ctx, node)
    runner.run(["ip", "address", "del", f"{LVS_VIP}/32", "dev", "lo"], check=False)


register(Fault(
    "benign_lvs_dr_real_server",
    f"the node serves a load balancer's virtual address {LVS_VIP} in direct routing (LVS-DR), "
    "as the guides set a real server up: the address on lo, and arptables rules that drop "
    "ARP for it and rewrite the node's own ARP from it, so only the balancer answers for it; "
    "no node's ARP is touched (iptables_drop_rule via=arp drops a peer's)",
    _lvs_real_server, _lvs_gone, benign=True,
))


def _htb(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # a QoS template's shaper whose only class is the default one, at the link's full speed
    # and more: every packet goes through it, none waits
    runner = ctx.node(node)
    runner.run(["tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "htb",
                "default", "10"])
    runner.run(["tc", "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:10", "htb",
                "rate", "10gbit", "ceil", "10gbit"])


def _htb_gone(ctx: FaultContext, node: LabNode, params: Params) -> None:
    ctx.node(node).run(["tc", "qdisc", "del", "dev", "eth0", "root"], check=False)


register(Fault(
    "benign_htb_unlimited",
    "an HTB shaper as eth0's root qdisc whose one class, the default, allows 10 Gbit/s, as a "
    "QoS template leaves it before anyone fills in its classes: every packet passes through "
    "it and none waits (link_saturated is a shaper the traffic fills)",
    _htb, _htb_gone, benign=True,
))


def _settings(on: str, off: str) -> tuple[Action, Action]:
    """Inject and heal of a condition that is one sysctl set at run time."""
    return (lambda ctx, node, params: _sysctl(ctx, node, on),
            lambda ctx, node, params: _sysctl(ctx, node, off))


register(Fault(
    "benign_tcp_timestamps_off",
    "net.ipv4.tcp_timestamps=0, as hardening guides set it so that TCP does not leak the "
    "uptime; tcp_tw_recycle is gone from this kernel, so there is nothing for it to meet "
    "(tw_recycle_with_timestamps is the two together)",
    *_settings("net.ipv4.tcp_timestamps=0", "net.ipv4.tcp_timestamps=1"), benign=True,
))
register(Fault(
    "benign_somaxconn_old_default",
    "net.core.somaxconn=128, the kernel's default before Linux 5.4 (CentOS 7, Ubuntu 18.04), "
    "while no listener's queue comes near it (somaxconn_low is a queue it caps overflowing)",
    *_settings("net.core.somaxconn=128", "net.core.somaxconn=4096"), benign=True,
))


def _stub_domain_settled(ctx: FaultContext, node: LabNode, params: Params) -> None:
    """CoreDNS runs the ConfigMap's Corefile as the state has it (with the stub domain's
    server block or without), reloaded and ready."""
    since = coredns.log_path(ctx.paths).stat().st_size
    if _corefile_reloaded(ctx):
        coredns.wait_reloaded(ctx.paths, since)
        coredns.wait_ready(ctx.topology, ctx.paths)


register(Fault(
    "benign_coredns_stub_domain",
    f"a second server block in the coredns ConfigMap's Corefile, {k8s_objects.STUB_ZONE}:53, "
    "forwarding the site's own zone straight to the site's resolver, as a stub domain is "
    "written (kube-dns's stubDomains before CoreDNS), and reloaded as its reload plugin "
    "would: the cluster's names and every other name are answered as before",
    _noop, _noop, benign=True, scope="cluster", default_node=_coredns_node,
    settle=_stub_domain_settled,
))


# a CIS-style baseline that turns forwarding off, sorted before kubeadm's file that turns it
# on again: systemd-sysctl applies /etc/sysctl.d in name order, so the later file wins at boot
HARDENING_EARLY = "10-cis-hardening.conf"


def _overridden_file(ctx: FaultContext, node: LabNode, params: Params) -> None:
    (ctx.paths.node_files(node.name).sysctl_d / HARDENING_EARLY).write_text(
        "# security baseline\nnet.ipv4.ip_forward = 0\n")


def _overridden_file_gone(ctx: FaultContext, node: LabNode, params: Params) -> None:
    (ctx.paths.node_files(node.name).sysctl_d / HARDENING_EARLY).unlink(missing_ok=True)


register(Fault(
    "benign_sysctl_overridden",
    f"/etc/sysctl.d/{HARDENING_EARLY} on the node sets net.ipv4.ip_forward = 0, and "
    "99-kubernetes-cri.conf, applied after it, sets it back to 1: forwarding is on now and "
    "after a reboot (ip_forward_disabled via=file is such a file applied last)",
    _overridden_file, _overridden_file_gone, benign=True,
))


# A Service in front of the site's database, so that pods reach it by a cluster name: no
# selector, and an EndpointSlice written by hand listing the database's address
EXTERNAL_SERVICE = "mysql"
EXTERNAL_VIP = "10.96.0.40"


def external_service(topology: Topology) -> list[Service]:
    return [Service(EXTERNAL_SERVICE, "default", EXTERNAL_VIP,
                    (ServicePort("mysql", OUTSIDE_PORT, "TCP", OUTSIDE_PORT),), "",
                    external=(OUTSIDE_HOST,))]


def _wait_programmed(ctx: FaultContext, name: str, want: set[str] | None) -> None:
    """Until every node's kube-proxy DNATs Service port `name` ("ns/svc:port") to exactly
    `want` (ip:port each), or has no rule for it (None)."""
    nodehost.wait_nodes(
        kubeproxy.BINARY, f"follow Service {name}", list(ctx.topology.nodes),
        lambda n: kubeproxy.programmed(ctx.node(n), ctx.topology.proxy_mode).get(name) == want,
        lambda n: kubeproxy.log_path(ctx.paths, n), kubeproxy.SYNC_TIMEOUT)


def _external_programmed(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _wait_programmed(ctx, f"default/{EXTERNAL_SERVICE}:mysql",
                     {f"{OUTSIDE_HOST}:{OUTSIDE_PORT}"}
                     if ctx.active.params("benign_external_service") else None)


register(Fault(
    "benign_external_service",
    f"a Service without a selector, default/{EXTERNAL_SERVICE} ({EXTERNAL_VIP}:{OUTSIDE_PORT}), "
    "and an EndpointSlice written by hand beside it that lists the middleware outside the "
    f"cluster ({OUTSIDE_HOST}:{OUTSIDE_PORT}), as a database outside is given a cluster name: "
    "no pod backs it, no controller manages its endpoints, and every kube-proxy DNATs it to "
    "an address outside the pod network",
    _noop, _noop, benign=True, scope="cluster", adds_services=external_service,
    settle=_external_programmed,
))


SERVER_TW_PORT = "30081"  # a server on the node that closes each connection first


def _server_time_wait(ctx: FaultContext, node: LabNode, params: Params) -> None:
    # An HTTP/1.0 or banner server: it closes first, so the TIME_WAITs are on its side, one
    # per client address and port, and hold no port of this node's own
    _start_in_node(ctx, node, services.netprog_argv("serve-banner", SERVER_TW_PORT, "bye"))
    _wait_listen(ctx, node, int(SERVER_TW_PORT), "tcp")
    pod = ctx.topology.pods_on(node.name)[0]
    made = ctx.runners.pod(pod.name).run(services.netprog_argv(
        "close-burst", node.address, SERVER_TW_PORT, "3000"), timeout=60).stdout
    if int(made.split()[0]) < 3000:
        raise LabError(f"benign_server_time_wait: the burst ended early: {made.strip()}")


def _server_time_wait_gone(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _stop_matching(ctx, node, f"serve-banner {SERVER_TW_PORT} ")
    ctx.node(node).run(["ss", "-K", "-Htn", "state", "time-wait",
                        f"sport = :{SERVER_TW_PORT}"], check=False)


register(Fault(
    "benign_server_time_wait",
    f"3000 TIME_WAIT sockets on the node from a server on port {SERVER_TW_PORT} that closes "
    "each connection first (an HTTP/1.0 or banner server) after a pod's burst of short "
    "connections: one per client address and port, none holding a local port of the node's "
    "own (time_wait_pileup is a client's, toward one peer)",
    _server_time_wait, _server_time_wait_gone, benign=True,
))


# firewalld (iptables backend) set up for Kubernetes as the kubeadm and flannel guides say:
# the pods' interfaces in the trusted zone, and in the public zone (eth0) the ports the
# cluster uses opened; its daemon running. Its catch-all REJECTs stay, and nothing the
# cluster sends reaches them.
FIREWALLD_TRUSTED = ("cni0", "flannel.1")
# What the install guides open for a flannel node beside SSH: VXLAN, the kubelet, NodePorts
K8S_PORTS = (("udp", "8472"), ("tcp", "10250"), ("tcp", "30000:32767"), ("udp", "30000:32767"))
FIREWALLD_K8S_CHAINS = ["IN_trusted", "FWDI_trusted", "FWDO_trusted"]
FIREWALLD_K8S_RULES = "".join(
    f"-I INPUT_ZONES 1 -i {dev} -g IN_trusted\n-I FORWARD_IN_ZONES 1 -i {dev} -g FWDI_trusted\n"
    f"-I FORWARD_OUT_ZONES 1 -o {dev} -g FWDO_trusted\n" for dev in FIREWALLD_TRUSTED) + (
    "-A IN_trusted -j ACCEPT\n-A FWDI_trusted -j ACCEPT\n-A FWDO_trusted -j ACCEPT\n"
    + "".join(f"-A IN_public_allow -p {proto} -m {proto} --dport {port} "
              "-m conntrack --ctstate NEW,UNTRACKED -j ACCEPT\n"
              for proto, port in K8S_PORTS))


def _firewalld_for_k8s(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _firewall_on(ctx, node, {"via": "firewalld"})
    _restore(ctx, node, "*filter\n" + "".join(
        f":{chain} - [0:0]\n" for chain in FIREWALLD_K8S_CHAINS) + FIREWALLD_K8S_RULES
        + "COMMIT\n")
    _start_daemon_script(ctx, node, "firewalld", ["--nofork", "--nopid"])


def _firewalld_for_k8s_gone(ctx: FaultContext, node: LabNode, params: Params) -> None:
    for line in FIREWALLD_K8S_RULES.splitlines():
        words = line.split()
        if words[0] == "-I":  # -I CHAIN 1 spec...: delete by spec
            _ipt_delete(ctx, node, words[1], words[3:])
    for chain in FIREWALLD_K8S_CHAINS:
        ctx.node(node).run(["iptables", "-F", chain], check=False)
    _firewall_off(ctx, node, {"via": "firewalld"})  # its chains (IN_public_allow flushed)
    _drop_chains(ctx, node, FIREWALLD_K8S_CHAINS)


register(Fault(
    "benign_firewalld_for_kubernetes",
    "firewalld running with its iptables backend, set up for Kubernetes as the install "
    "guides say: cni0 and flannel.1 in the trusted zone, and the public zone (eth0) opened "
    "for SSH, VXLAN (8472/udp), the kubelet (10250/tcp) and the NodePort range; its "
    "catch-all REJECTs in INPUT and FORWARD stay, and nothing the cluster sends reaches them "
    "(host_firewall_active is one that refuses the cluster's traffic)",
    _firewalld_for_k8s, _firewalld_for_k8s_gone, benign=True,
    modes=("flannel-vxlan", "flannel-host-gw"),
))


# A Service over the client pods of every node, so over both zones, without topology-aware
# routing, as most Services spread for availability are; the zones answer each other as fast
# as within one (cross_zone_latency is the same spread over a slow path between them)
ACROSS_SERVICE = "client-all"
ACROSS_VIP = "10.96.0.31"
ACROSS_PORT = 30092


def across_zones_service(topology: Topology) -> list[Service]:
    pods = tuple(pod.name for pod in topology.pods if pod.app == "client")
    return [Service(ACROSS_SERVICE, "default", ACROSS_VIP,
                    (ServicePort("echo", ACROSS_PORT, "TCP", ACROSS_PORT),), "client", pods)]


def _client_pods(ctx: FaultContext) -> list:
    return [pod for pod in ctx.topology.pods if pod.app == "client"]


def _across_listening(ctx: FaultContext, node: LabNode, params: Params) -> None:
    for pod in _client_pods(ctx):
        _start_in_pod(ctx, pod.name, services.netprog_argv(
            "serve-banner", str(ACROSS_PORT), "hello"))
        _wait_pod_listen(ctx, pod.name, ACROSS_PORT)


def _across_stopped(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _kill_matching_in([pod.netns for pod in _client_pods(ctx)], f"serve-banner {ACROSS_PORT} ")


def _across_programmed(ctx: FaultContext, node: LabNode, params: Params) -> None:
    in_force = bool(ctx.active.params("benign_service_across_zones"))
    _wait_programmed(ctx, f"default/{ACROSS_SERVICE}:echo",
                     {f"{pod.ip}:{ACROSS_PORT}" for pod in _client_pods(ctx)}
                     if in_force else None)


register(Fault(
    "benign_service_across_zones",
    f"a Service default/{ACROSS_SERVICE} ({ACROSS_VIP}:{ACROSS_PORT}) whose endpoints are the "
    "client pods of every node, so in both zones, without topology-aware routing, as Services "
    "spread for availability are, each pod answering on the port; the zones answer each "
    "other as fast as within one (cross_zone_latency is this spread over a slow path)",
    _across_listening, _across_stopped, benign=True, scope="cluster",
    adds_services=across_zones_service, settle=_across_programmed,
))


# ufw set up for Kubernetes on an Ubuntu node: `ufw allow` for the overlay, the kubelet and
# the NodePort range beside SSH, its defaults kept (deny incoming, deny routed): flannel's
# FLANNEL-FWD accepts the pods' forwarded traffic before FORWARD's DROP policy is reached.
UFW_K8S_RULES = [f"-A ufw-user-input -p {proto} -m {proto} --dport {port} -j ACCEPT"
                 for proto, port in K8S_PORTS]


def _ufw_for_k8s(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _firewall_on(ctx, node, {"via": "ufw"})
    _restore(ctx, node, "*filter\n" + "\n".join(UFW_K8S_RULES) + "\nCOMMIT\n")


def _ufw_for_k8s_gone(ctx: FaultContext, node: LabNode, params: Params) -> None:
    for rule in UFW_K8S_RULES:
        _ipt_delete(ctx, node, "ufw-user-input", rule.split()[2:])
    _firewall_off(ctx, node, {"via": "ufw"})


register(Fault(
    "benign_ufw_for_kubernetes",
    "ufw enabled on the node and set up for Kubernetes: its chains (as host_firewall_active "
    "via=ufw), policies DROP for INPUT and FORWARD, and `ufw allow` for SSH, VXLAN "
    "(8472/udp), the kubelet (10250/tcp) and the NodePort range; flannel's FLANNEL-FWD "
    "accepts the pods' forwarded traffic before the FORWARD policy (host_firewall_active "
    "via=ufw is the same without the cluster's ports)",
    _ufw_for_k8s, _ufw_for_k8s_gone, benign=True,
    modes=("flannel-vxlan", "flannel-host-gw"),
))


# firewalld 0.9 with its nftables backend set up for Kubernetes: the pod network a source of
# the trusted zone (peers' pods arrive on eth0 in host-gw and BGP modes), the pods' own
# interfaces in it too, and the public zone (eth0) opened for SSH, the overlay or BGP, the
# kubelet and the NodePort range. Its zone chains are laid out as firewalld writes them, most
# of them empty (pre, log, deny, post), and its catch-all rejects stay at the end of INPUT and
# FORWARD: nothing the cluster sends reaches them.
def _firewalld_nft_k8s(topology: Topology) -> str:
    trusted = {"flannel-vxlan": ["cni0", "flannel.1"], "flannel-host-gw": ["cni0"],
               "calico-bgp": ["cali*"]}[topology.cni]
    # nft writes a range with a dash; calico's BGP where flannel has its VXLAN port
    opened = [("tcp", "22"), *((proto, port.replace(":", "-")) for proto, port in K8S_PORTS
                               if topology.cni != "calico-bgp" or port != "8472")]
    if topology.cni == "calico-bgp":
        opened.append(("tcp", "179"))

    def zone(prefix: str, name: str, allow: list[str], final: str) -> list[str]:
        parts = ("pre", "log", "deny", "allow", "post")
        out = [f"\tchain filter_{prefix}_{name} {{",
               *(f"\t\tjump filter_{prefix}_{name}_{part}" for part in parts),
               *([f"\t\t{final}"] if final else []), "\t}"]
        for part in parts:
            out += [f"\tchain filter_{prefix}_{name}_{part} {{",
                    *(f"\t\t{rule}" for rule in (allow if part == "allow" else [])), "\t}"]
        return out

    def dispatch(chain: str, zone_prefix: str, match: str) -> list[str]:
        return [f"\tchain filter_{chain} {{",
                *(f'\t\t{match} "{dev}" goto filter_{zone_prefix}_trusted' for dev in trusted),
                f"\t\tgoto filter_{zone_prefix}_public", "\t}"]

    def source(chain: str, zone_prefix: str, field: str) -> list[str]:
        return [f"\tchain filter_{chain} {{",
                f"\t\tip {field} {topology.pod_network} goto filter_{zone_prefix}_trusted",
                "\t}"]

    def base(hook: str, zones: list[str]) -> list[str]:
        # replies, DNATed and loopback traffic first, then the zones, then the catch-all
        return [f"\tchain filter_{hook.upper()} {{",
                f"\t\ttype filter hook {hook} priority filter + 10; policy accept;",
                "\t\tct state { established, related } accept", "\t\tct status dnat accept",
                '\t\tiifname "lo" accept', *(f"\t\tjump filter_{z}" for z in zones),
                "\t\tct state { invalid } drop",
                "\t\treject with icmpx type admin-prohibited", "\t}"]

    lines = [
        "table inet firewalld {",
        *base("input", ["INPUT_ZONES_SOURCE", "INPUT_ZONES"]),
        *base("forward", ["FORWARD_IN_ZONES_SOURCE", "FORWARD_IN_ZONES",
                          "FORWARD_OUT_ZONES_SOURCE", "FORWARD_OUT_ZONES"]),
        "\tchain filter_OUTPUT {",
        "\t\ttype filter hook output priority filter + 10; policy accept;",
        '\t\toifname "lo" accept', "\t}",
        *source("INPUT_ZONES_SOURCE", "IN", "saddr"),
        *dispatch("INPUT_ZONES", "IN", "iifname"),
        *source("FORWARD_IN_ZONES_SOURCE", "FWDI", "saddr"),
        *dispatch("FORWARD_IN_ZONES", "FWDI", "iifname"),
        *source("FORWARD_OUT_ZONES_SOURCE", "FWDO", "daddr"),
        *dispatch("FORWARD_OUT_ZONES", "FWDO", "oifname"),
        *zone("IN", "trusted", [], "accept"),
        *zone("FWDI", "trusted", [], "accept"),
        *zone("FWDO", "trusted", [], "accept"),
        *zone("IN", "public", [f"{proto} dport {port} ct state {{ new, untracked }} accept"
                               for proto, port in opened],
              "meta l4proto { icmp, ipv6-icmp } accept"),
        *zone("FWDI", "public", [], "meta l4proto { icmp, ipv6-icmp } accept"),
        *zone("FWDO", "public", [], ""),
        "}",
    ]
    return "\n".join(lines) + "\n"


def _firewalld_nft_for_k8s(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _nft(ctx, node, _firewalld_nft_k8s(ctx.topology))
    _start_daemon_script(ctx, node, "firewalld", ["--nofork", "--nopid"])


def _firewalld_nft_for_k8s_gone(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _firewall_off(ctx, node, {"via": "firewalld-nft"})  # its table and its daemon


register(Fault(
    "benign_firewalld_nft_for_kubernetes",
    "firewalld 0.9 running with its nftables backend (its own `table inet firewalld`, nothing "
    "in iptables), set up for Kubernetes as the install guides say: the pod network a source "
    "of the trusted zone and the pods' interfaces in it, the public zone (eth0) opened for "
    "SSH, the overlay (8472/udp) or BGP (179/tcp), the kubelet (10250/tcp) and the NodePort "
    "range; its zone chains as firewalld lays them out, most of them empty, and its "
    "catch-all rejects at the end of INPUT and FORWARD, which nothing the cluster sends "
    "reaches (host_firewall_active via=firewalld-nft is one that refuses it)",
    _firewalld_nft_for_k8s, _firewalld_nft_for_k8s_gone, benign=True,
))


# A calico node that is a virtualisation host too: libvirt's default network bridge (virbr0,
# no guest running) and the file its setup guides drop so that bridged guest traffic skips
# iptables, applied. Calico routes its pods through their veths: no pod traffic crosses a
# bridge, so kube-proxy's NAT still sees every packet (bridge_nf_call_iptables_disabled is the
# same setting where pods hang off cni0).
LIBVIRT_BRIDGE = "virbr0"
BRIDGE_NF_KEYS = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
                  "net.bridge.bridge-nf-call-arptables")


def _libvirt_host(ctx: FaultContext, node: LabNode, params: Params) -> None:
    runner = ctx.node(node)
    runner.run(["ip", "link", "add", LIBVIRT_BRIDGE, "address", "52:54:00:3a:7c:01",
                "type", "bridge", "stp_state", "1"])
    runner.run(["ip", "address", "add", "192.168.122.1/24", "dev", LIBVIRT_BRIDGE])
    runner.run(["ip", "link", "set", LIBVIRT_BRIDGE, "up"])
    _sysctl_file(ctx, node, LIBVIRT_BRIDGE_CONF, "\n".join(f"{key} = 0" for key in BRIDGE_NF_KEYS))


def _libvirt_host_gone(ctx: FaultContext, node: LabNode, params: Params) -> None:
    (ctx.paths.node_files(node.name).sysctl_d / LIBVIRT_BRIDGE_CONF).unlink(missing_ok=True)
    _sysctl(ctx, node, *(f"{key}=1" for key in BRIDGE_NF_KEYS))
    ctx.node(node).run(["ip", "link", "del", LIBVIRT_BRIDGE], check=False)


register(Fault(
    "benign_bridge_nf_off_routed_pods",
    f"a calico node that hosts virtual machines too: libvirt's {LIBVIRT_BRIDGE} bridge "
    "(192.168.122.1/24, no guest running) and /etc/sysctl.d/99-libvirt-bridge.conf setting "
    "net.bridge.bridge-nf-call-{ip,ip6,arp}tables=0, applied; calico's pods are routed "
    "through their veths and never cross a bridge, so kube-proxy's NAT sees all their traffic "
    "(bridge_nf_call_iptables_disabled is the setting where pods hang off cni0)",
    _libvirt_host, _libvirt_host_gone, benign=True, modes=("calico-bgp",),
))


# A host security agent (the one security_software_present runs) whose policy drops forwarded
# traffic, with the exemptions its vendor documents for container hosts: replies, DNATed
# traffic and the pod network both ways accepted before the policy.
AGENT = {"name": "wsssr_defence_daemon", "blocks": "0", "via": "nft"}


def _agent_exempting(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _security_on(ctx, node, AGENT)  # the process only
    pods = ctx.topology.pod_network
    _nft(ctx, node, f"table inet {SECURITY_TABLE} {{\n  chain forward {{\n"
                    "    type filter hook forward priority -5; policy drop;\n"
                    "    ct state established,related accept\n    ct status dnat accept\n"
                    f"    ip saddr {pods} accept\n    ip daddr {pods} accept\n  }}\n}}\n")


register(Fault(
    "benign_security_agent_exempting_cluster",
    f"a host security agent ({AGENT['name']}, as security_software_present runs it) whose "
    f"own nftables table ({SECURITY_TABLE}) drops forwarded traffic by policy, with the "
    "exemptions its vendor documents for container hosts: replies, DNATed traffic and the "
    "pod network both ways accepted first (security_software_present is the same policy "
    "without them)",
    _agent_exempting, lambda ctx, node, params: _security_off(ctx, node, AGENT), benign=True,
))


# The NodePort Service with externalTrafficPolicy Local of nodeport_no_local_endpoint, used the
# way it is meant: the clients (a load balancer that health-checks healthCheckNodePort) connect
# only to the node that runs the web pod. kube-proxy's "has no local endpoints" drops stand on
# the other nodes and count nothing.
def _lb_clients(topology: Topology) -> str:
    return f"connect-retry {topology.node(_web_node(topology)).address} {LOCAL_NODE_PORT}"


def _local_nodeport_settled(ctx: FaultContext, node: LabNode, params: Params) -> None:
    in_force = bool(ctx.active.params("benign_nodeport_local_behind_lb"))
    others = [n for n in ctx.topology.nodes if n.name != _web_node(ctx.topology)]
    _wait_local_rules(ctx, others, in_force)
    if in_force:
        _start_in(ctx, ctx.topology.outside_netns, services.netprog_argv(
            *_lb_clients(ctx.topology).split(), LOCAL_CLIENTS, "1800"))


register(Fault(
    "benign_nodeport_local_behind_lb",
    f"the NodePort Service {LOCAL_SERVICE} with externalTrafficPolicy Local of "
    "nodeport_no_local_endpoint, its clients outside connecting only to the NodePort of the "
    "node that runs the web pod, as a load balancer that health-checks the Service does: "
    "kube-proxy's drop rules for it on the other nodes count nothing "
    "(nodeport_no_local_endpoint sends them traffic)",
    _noop, lambda ctx, node, params: _kill_matching_in([ctx.topology.outside_netns],
                                                       _lb_clients(ctx.topology)),
    benign=True, scope="cluster", default_node=_web_node, settle=_local_nodeport_settled,
    adds_services=lambda topology: [local_service(topology)], proxy_modes=("iptables",),
))


# A pod whose server overflowed and whose UDP receiver dropped in a burst long past, both
# restarted since and keeping up: the pod's counters stay where the burst left them for the
# pod's whole life, and nothing overflows or drops now.
PAST_TCP_PORT, PAST_UDP_PORT = "30088", "30089"


def _pod_counters_from_the_past(ctx: FaultContext, node: LabNode, params: Params) -> None:
    pod = _app_pod(ctx, node)
    client = _peer_client(ctx, node)
    _start_in_pod(ctx, pod.name, services.netprog_argv("listen-stuck", PAST_TCP_PORT, "1"))
    _wait_pod_listen(ctx, pod.name, int(PAST_TCP_PORT))
    _start_in_pod(ctx, pod.name, services.netprog_argv("udp-stuck", PAST_UDP_PORT, "2048"))
    _wait_pod_listen(ctx, pod.name, int(PAST_UDP_PORT), "udp")
    _netprog(ctx, client.name, "connect-burst", pod.ip, PAST_TCP_PORT, "16", "--hold", "1")
    _netprog(ctx, client.name, "udp-flood", pod.ip, PAST_UDP_PORT, "200")
    _kill_matching_in([pod.netns], f"listen-stuck {PAST_TCP_PORT} ",
                      f"udp-stuck {PAST_UDP_PORT} ")
    # restarted, accepting and reading as they should
    _start_in_pod(ctx, pod.name, services.netprog_argv(
        "serve-banner", PAST_TCP_PORT, "lab-app ready", "--backlog", "128"))
    _wait_pod_listen(ctx, pod.name, int(PAST_TCP_PORT))
    _start_in_pod(ctx, pod.name, services.netprog_argv("udp-sink", PAST_UDP_PORT))
    _wait_pod_listen(ctx, pod.name, int(PAST_UDP_PORT), "udp")


def _pod_programs_gone(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _kill_matching_in([_app_pod(ctx, node).netns], f"serve-banner {PAST_TCP_PORT} ",
                      f"udp-sink {PAST_UDP_PORT}")


register(Fault(
    "benign_pod_counters_from_the_past",
    "one of the node's pods (its last that is not CoreDNS) whose server on port "
    f"{PAST_TCP_PORT} overflowed its accept queue and whose UDP receiver on {PAST_UDP_PORT} "
    "dropped datagrams in a burst from another node's pod, both restarted since and keeping "
    "up: the pod's ListenOverflows and UdpRcvbufErrors stay where the burst left them, as a "
    "namespace's counters do for its whole life, and none rises (listen_queue_overflow and "
    "udp_buffer_errors via=pod are the same programs still stuck)",
    _pod_counters_from_the_past, _pod_programs_gone, benign=True,
))


# A consumer slower than its producer: a log collector on the node that reads what a pod sends
# at 32 KiB/s while the pod could send far faster. Its receive queue stays full and the pod
# waits on the window, which is TCP's flow control doing its work: the collector reads all
# the time (socket_recv_queue_backlog is a reader that stopped).
SLOW_READER_PORT = "30071"


def _slow_reader(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _start_in_node(ctx, node, services.netprog_argv(
        "tcp-receiver", SLOW_READER_PORT, "--rate", "32768"))
    _wait_listen(ctx, node, int(SLOW_READER_PORT), "tcp")
    pod = ctx.topology.pods_on(node.name)[0]
    _start_in_pod(ctx, pod.name, services.netprog_argv(
        "tcp-push", node.address, SLOW_READER_PORT, str(8 << 20)))
    _wait_queue(ctx, node, SLOW_READER_PORT)


def _slow_reader_gone(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _kill_matching_in([ctx.topology.pods_on(node.name)[0].netns],
                      f"tcp-push {node.address} {SLOW_READER_PORT} ")
    _stop_matching(ctx, node, f"tcp-receiver {SLOW_READER_PORT} ")


register(Fault(
    "benign_slow_reader",
    f"a log collector on the node (port {SLOW_READER_PORT}) that reads what one of its pods "
    "sends at 32 KiB/s, slower than the pod could send: its receive queue stays full and the "
    "pod waits on TCP's window, while the collector reads all the time "
    "(socket_recv_queue_backlog is a reader that stopped)",
    _slow_reader, _slow_reader_gone, benign=True,
))


# A UDP server on the node (syslog, a DNS cache) that lost datagrams in a burst while it was
# paused, long ago, and has kept up since: its socket's drop count stays for the socket's life,
# and the few datagrams it handles per batch wait in its queue, far from filling it
# (udp_buffer_errors is a socket that stays full).
UDP_PAST_PORT = "30054"


def _udp_drops_from_the_past(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _start_in_node(ctx, node, services.netprog_argv("udp-sink", UDP_PAST_PORT, "--every", "0.2"))
    _wait_listen(ctx, node, int(UDP_PAST_PORT), "udp")
    sink = _procs_matching(node, f"udp-sink {UDP_PAST_PORT} ")
    pod = ctx.topology.pods_on(node.name)[0]
    _freeze(sink, f"the UDP server on {node.name}")
    _netprog(ctx, pod.name, "udp-flood", node.address, UDP_PAST_PORT, "2000")
    _thaw(sink)
    _start_in_pod(ctx, pod.name, services.netprog_argv(
        "udp-trickle", node.address, UDP_PAST_PORT, "50", "1800"))
    _wait_ss(ctx.node(node), ["-luanm", f"sport = :{UDP_PAST_PORT}"], _caught_up,
             f"{node.name}: the UDP server on {UDP_PAST_PORT} did not catch up with the burst")


def _caught_up(ss: str) -> bool:
    """A UDP socket a quarter full or less (skmem's r against rb)."""
    mem = re.search(r"skmem:\(r(\d+),rb(\d+)", ss)
    return bool(mem) and int(mem.group(1)) * 4 < int(mem.group(2))


def _udp_past_gone(ctx: FaultContext, node: LabNode, params: Params) -> None:
    _kill_matching_in([ctx.topology.pods_on(node.name)[0].netns],
                      f"udp-trickle {node.address} {UDP_PAST_PORT} ")
    _stop_matching(ctx, node, f"udp-sink {UDP_PAST_PORT} ")


register(Fault(
    "benign_udp_drops_from_the_past",
    f"a UDP server on the node (port {UDP_PAST_PORT}, as syslog or a DNS cache) that dropped "
    "datagrams in a burst from one of its pods while it was paused, and has kept up since with "
    "that pod's steady 50 datagrams a second, handled in batches every 0.2 s: its socket's drop "
    "count stays for the socket's life and a few datagrams wait in its queue, far from filling "
    "it (udp_buffer_errors is a socket that stays full)",
    _udp_drops_from_the_past, _udp_past_gone, benign=True,
))
