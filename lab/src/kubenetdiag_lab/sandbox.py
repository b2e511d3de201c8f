"""Each pod's sandbox, as the container runtime makes one: a process that lives in the pod's
network namespace with a mount namespace of its own, where /etc/resolv.conf is the file kubelet
writes for the pod (ClusterFirst: the cluster DNS Service, the namespace's search path,
ndots:5), not the node's.

The diagnoser finds a pod's resolver the way it would on a real node: through a process in the
pod's network namespace (/proc/<pid>/root/etc/resolv.conf). The sandbox is started inside the
node's own namespaces, so the node's /proc shows it, and it dies with the node's init.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from kubenetdiag_lab.nodehost import NodeFiles
from kubenetdiag_lab.runner import NodeCommandRunner
from kubenetdiag_lab.topology import DNS_VIP, LabNode, LabPod, Topology

CLUSTER_DOMAIN = "cluster.local"
NAMESPACE = "default"  # every lab pod but CoreDNS is in it; CoreDNS uses the node's (Default)


def resolv_conf(pod: LabPod, nameserver: str = DNS_VIP, domain: str = CLUSTER_DOMAIN) -> str:
    """What the kubelet writes for the pod from its clusterDNS and clusterDomain settings."""
    if pod.app == "coredns":
        # dnsPolicy Default, as CoreDNS's own Deployment sets: the node's resolver
        return ""
    return (f"search {NAMESPACE}.svc.{domain} svc.{domain} {domain}\n"
            f"nameserver {nameserver}\noptions ndots:5\n")


def _conf(files: NodeFiles, pod: LabPod) -> Path:
    return files.dir / f"resolv-{pod.name}.conf"


def rewrite(topology: Topology, node: LabNode, files: NodeFiles, nameserver: str = DNS_VIP,
            domain: str = CLUSTER_DOMAIN) -> None:
    """Give the node's running pods the resolv.conf a kubelet with these settings would have
    written when it created them. Written in place: the file keeps its inode, so each
    sandbox's bind mount shows the new text (a file renamed over it would not)."""
    for pod in topology.pods_on(node.name):
        text = resolv_conf(pod, nameserver, domain)
        if text:
            with _conf(files, pod).open("r+") as f:
                f.truncate(0)
                f.write(text)


def start(topology: Topology, node: LabNode, runner: NodeCommandRunner, files: NodeFiles
          ) -> None:
    files.dir.mkdir(parents=True, exist_ok=True)
    for pod in topology.pods_on(node.name):
        text = resolv_conf(pod)
        bind = ""
        if text:
            conf = _conf(files, pod)
            conf.write_text(text)
            bind = f"mount --bind {shlex.quote(str(conf))} /etc/resolv.conf && "
        netns = shlex.quote(f"/run/netns/cni-{pod.name}")
        inner = f"{bind}exec nsenter --net={netns} sleep infinity"
        # the sandbox outlives this shell: its output goes nowhere, and it is not waited for
        runner.shell(f"setsid unshare --mount --propagation private sh -c {shlex.quote(inner)} "
                     "</dev/null >/dev/null 2>&1 &")
