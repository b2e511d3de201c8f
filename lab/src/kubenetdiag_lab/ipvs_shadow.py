"""kube-proxy's IPVS mode on a kernel without ip_vs: what the recorded IPVS bundles are made of.

This machine's kernel is built without IP_VS (and without the dummy link type), so the real
kube-proxy refuses `--proxy-mode ipvs` and no lab node can hold an IPVS table. What ipvs mode
would program is still kube-proxy's own code's to decide: `knd-ipvs-proxier`
(lab/components/kubernetes/ipvsproxier, built by build.sh) runs kube-proxy's IPVS proxier in
each node beside the node's real iptables-mode kube-proxy, on the same informers, with the
kernel parts ipvs mode cannot have here replaced by kube-proxy's own in-memory fakes (the IPVS
table, the ipsets, iptables, the net/ipv4/vs sysctls). Its kube-ipvs0, with one /32 per Service
VIP, is real: an ifb link made here (no dummy in this kernel), addressed by kube-proxy through
netlink in the node's namespace. The node's traffic keeps flowing through the iptables-mode
rules, so the active probes measure a working (or, under a fault, a broken) Service path.

`lab ipvs start` starts a shadow in every node and waits until each agrees with its node's
kube-proxy. A fault that freezes or restarts kube-proxy (kubeproxy.pids, stop, start) does the
same to the shadow, so a stale kube-proxy is stale in both. `lab ipvs splice BUNDLE` then turns
a bundle collected from the lab into the bundle of the same cluster in ipvs mode:

* `ipvs`: the shadow's table as `ipvsadm -Ln` prints it;
* `iptables`, `nftables` and `ipsets`: the node's own rules with the iptables-mode
  kube-proxy's chains replaced by the IPVS proxier's, loaded into a scratch namespace of the
  lab with the proxier's ipsets and read back by the probes' own commands (iptables-save -c,
  nft -a list ruleset, ipset save), so all three are what the kernel prints for them;
* `modules`: /proc/net/ip_vs present; `links`: kube-ipvs0 shown as the dummy kube-proxy makes;
  `processes` and `sockets`: the shadow's own lines left out (the node's kube-proxy stays);
* cluster.json: the kube-proxy ConfigMap says `mode: ipvs`.

It refuses a node whose shadow disagrees with the bundle's iptables (a Service the one has and
the other not, or other endpoints): the recording is then inconsistent and must be made again.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from ipaddress import ip_address
from pathlib import Path

import yaml

from kubenetdiag_lab import components, kubeproxy, nodehost
from kubenetdiag_lab.errors import LabError
from kubenetdiag_lab.netns import add_netns, delete_netns
from kubenetdiag_lab.paths import LabPaths
from kubenetdiag_lab.runner import NetnsRunner, NodeRunner, Runners
from kubenetdiag_lab.topology import SERVICE_NETWORK, LabNode, Topology

BINARY = "knd-ipvs-proxier"
DEVICE = "kube-ipvs0"
AGREE_TIMEOUT = 60.0
# a line of `ps`/`ss -p` output that is the shadow's (the kernel keeps 15 characters of comm)
_SHADOW_LINE = re.compile(re.escape(BINARY[:15]))
_XT_TABLES = {"filter", "nat", "mangle", "raw", "security"}
_NFT_TABLE = re.compile(r"^table (\S+) (\S+) \{")
_KUBE_CHAIN = re.compile(r"^:(KUBE-\S+) ")
_RULE = re.compile(r"^(?:\[\d+:\d+\] )?-A (\S+)(.*)$")
_COUNTERS = re.compile(r"(?m)^\[\d+:\d+\] ")
_JUMP_KUBE = re.compile(r"\s-[jg] KUBE-")
_SERVICE_ENTRY = re.compile(
    r'^-A KUBE-SERVICES .*--comment "([^"]+) (?:cluster IP|has no endpoints)"')


def state_path(paths: LabPaths, node: str) -> Path:
    return kubeproxy.config_dir(paths, node) / "ipvs-state.json"


def log_path(paths: LabPaths, node: str) -> Path:
    return paths.logs / f"{BINARY}-{node}.log"


def pids(node: LabNode) -> list[int]:
    return nodehost.procs_in(node.netns, BINARY)


def ran(paths: LabPaths, node: str) -> bool:
    """Whether this node had a shadow (its state file exists): a restarted kube-proxy gets its
    shadow back."""
    return state_path(paths, node).exists()


def start(paths: LabPaths, node: LabNode, runner: NodeRunner) -> None:
    """Start the node's shadow (detached, inside the node, as kube-proxy) unless it runs."""
    if pids(node):
        return
    why = components.missing([BINARY])
    if why:
        raise LabError(why)
    cfg = yaml.safe_load((kubeproxy.config_dir(paths, node.name) / "config.yaml").read_text())
    runner.shell(f"ip link show {DEVICE} >/dev/null 2>&1 || ip link add {DEVICE} type ifb")
    argv = [str(components.path_of(BINARY)),
            f"--kubeconfig={cfg['clientConnection']['kubeconfig']}",
            f"--hostname-override={node.name}", f"--node-ip={node.address}",
            f"--cluster-cidr={cfg['clusterCIDR']}",
            f"--masquerade-bit={cfg['iptables']['masqueradeBit']}",
            f"--state={state_path(paths, node.name)}"]
    runner.shell(f"({shlex.join(argv)}) </dev/null >>{shlex.quote(str(log_path(paths, node.name)))}"
                 " 2>&1 &")
    nodehost.wait_started(node.netns, BINARY)


def stop(node: LabNode) -> None:
    nodehost.kill(pids(node))


def stop_all(topology: Topology, paths: LabPaths, runners: Runners) -> None:
    """Stop every shadow and take away what it left: kube-ipvs0 and its state file (so a
    restarted kube-proxy comes back without one)."""
    for node in topology.nodes:
        stop(node)
        state_path(paths, node.name).unlink(missing_ok=True)
        runners.node(node).run(["ip", "link", "del", DEVICE], check=False)


def read_state(paths: LabPaths, node: str) -> dict:
    try:
        return json.loads(state_path(paths, node).read_text())
    except (OSError, ValueError) as exc:
        raise LabError(f"{node}: no IPVS shadow state ({exc}); run `lab ipvs start` first") from exc


def ipvs_services(ipvsadm: str) -> dict[str, set[str]]:
    """`ipvsadm -Ln` text -> {"VIP:port/PROTO": {real server ip:port, ...}} for the virtual
    servers on a Service VIP (NodePort ones, on node addresses, left out)."""
    out: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in ipvsadm.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] in ("TCP", "UDP", "SCTP"):
            host, _, port = words[1].rpartition(":")
            current = None
            if ip_address(host) in SERVICE_NETWORK:
                current = out.setdefault(f"{host}:{port}/{words[0]}", set())
        elif len(words) >= 2 and words[0] == "->" and current is not None and words[1][0].isdigit():
            current.add(words[1])
    return out


def iptables_services(saved: str) -> dict[str, set[str]]:
    """iptables-save text of an iptables-mode node -> the same map: each KUBE-SERVICES entry's
    -d VIP, -p and --dport, with the endpoints its KUBE-SEP chains DNAT to."""
    saved = _COUNTERS.sub("", saved)
    by_name = kubeproxy._iptables_programmed(saved)
    out: dict[str, set[str]] = {}
    for line in saved.splitlines():
        m = _SERVICE_ENTRY.match(line)
        if not m:
            continue
        words = shlex.split(line)
        opt = {words[i]: words[i + 1] for i in range(len(words) - 1) if words[i].startswith("-")}
        vip = opt.get("-d", "").removesuffix("/32")
        if vip and "--dport" in opt and "-p" in opt:
            out[f"{vip}:{opt['--dport']}/{opt['-p'].upper()}"] = by_name.get(m.group(1), set())
    return out


def disagreements(saved: str, ipvsadm: str) -> list[str]:
    """Where a node's IPVS shadow and its iptables rules say different things."""
    ipt, ipvs = iptables_services(saved), ipvs_services(ipvsadm)
    out = []
    for key in sorted(set(ipt) | set(ipvs)):
        if key not in ipvs:
            out.append(f"{key} in iptables, not in IPVS")
        elif key not in ipt:
            out.append(f"{key} in IPVS, not in iptables")
        elif ipt[key] != ipvs[key]:
            out.append(f"{key}: iptables {sorted(ipt[key])}, IPVS {sorted(ipvs[key])}")
    return out


def start_all(topology: Topology, paths: LabPaths, runners: Runners,
              timeout: float = AGREE_TIMEOUT) -> None:
    """A shadow in every node, then wait until each agrees with its node's kube-proxy."""
    for node in topology.nodes:
        start(paths, node, runners.node(node))
    wait_agree(paths, topology.nodes, runners.node, timeout)


def wait_agree(paths: LabPaths, nodes: Sequence[LabNode],
               runner_of: Callable[[LabNode], NodeRunner],
               timeout: float = AGREE_TIMEOUT) -> None:
    """Until each node's shadow programs what its kube-proxy does (a fault that freezes both
    must not catch the shadow a sync behind)."""

    def agrees(node: LabNode) -> bool:
        if not state_path(paths, node.name).exists():
            return False
        saved = runner_of(node).run(["iptables-save"], check=False).stdout
        return not disagreements(saved, read_state(paths, node.name)["ipvsadm"])

    nodehost.wait_nodes(BINARY, "agree with kube-proxy", nodes, agrees,
                        lambda name: log_path(paths, name), timeout)


# --- splice: a bundle collected from the lab, as the same cluster in ipvs mode -------------

def _blocks(saved: str) -> list[tuple[str, list[str], list[str]]]:
    """iptables-save text -> [(table, chain declaration lines, rule lines)] in order."""
    out: list[tuple[str, list[str], list[str]]] = []
    for line in saved.splitlines():
        if line.startswith("*"):
            out.append((line[1:], [], []))
        elif out and line.startswith(":"):
            out[-1][1].append(line)
        elif out and _RULE.match(line):
            out[-1][2].append(line)
    return out


def merge(node_saved: str, proxier_saved: str) -> str:
    """iptables-restore input: the node's rules without any KUBE- chain or jump to one (the
    iptables-mode kube-proxy's), plus the IPVS proxier's, whose jumps from the built-in chains
    come first (kube-proxy prepends them)."""
    mine = {table: (decls, rules) for table, decls, rules in _blocks(proxier_saved)}
    lines: list[str] = []
    tables = [t for t, _, _ in _blocks(node_saved)]
    for table, decls, rules in _blocks(node_saved) + [
            (t, [], []) for t in mine if t not in tables]:
        extra_decls, extra_rules = mine.get(table, ([], []))
        kept = [d for d in decls if not _KUBE_CHAIN.match(d)]
        names = {d.split()[0] for d in kept}
        kept += [d for d in extra_decls if d.split()[0] not in names]
        builtin = [r for r in extra_rules if not _RULE.match(r).group(1).startswith("KUBE-")]
        own = [r for r in extra_rules if r not in builtin]
        theirs = [r for r in rules if not _RULE.match(r).group(1).startswith("KUBE-")
                  and not _JUMP_KUBE.search(r)]
        lines += [f"*{table}", *kept, *builtin, *theirs, *own, "COMMIT"]
    return "\n".join(lines) + "\n"


def _replay(netns: str, v4: str, v6: str, ipsets: str) -> tuple[str, str, str]:
    """Load the merged rulesets and the proxier's ipsets into a scratch namespace and read them
    back as the iptables, nftables and ipsets probes do."""
    add_netns([netns])
    try:
        def ns(argv: list[str], stdin: str | None = None) -> str:
            return NetnsRunner(netns).run(argv, input=stdin).stdout

        ns(["ipset", "restore"], ipsets)
        ns(["iptables-restore", "-c"], v4)
        ns(["ip6tables-restore", "-c"], v6)
        return (ns(["iptables-save", "-c"]), ns(["nft", "-a", "list", "ruleset"]),
                ns(["ipset", "save"]))
    finally:
        delete_netns([netns])


def _foreign_nft_tables(listed: str) -> list[str]:
    return [f"{m.group(1)} {m.group(2)}" for m in map(_NFT_TABLE.match, listed.splitlines())
            if m and not (m.group(1) in ("ip", "ip6") and m.group(2) in _XT_TABLES)]


def _present(stdout: str) -> str:
    """modules section: ip_vs's files among those present."""
    lines = stdout.split("\n")
    try:
        at = lines.index("##knd:present")
    except ValueError:
        return stdout
    end = at + 1
    while end < len(lines) and lines[end].startswith("/"):
        end += 1
    present = sorted(set(lines[at + 1:end]) | {"/proc/net/ip_vs", "/sys/module/ip_vs"})
    return "\n".join(lines[:at + 1] + present + lines[end:])


def _as_dummy(stdout: str) -> str:
    """links section: kube-ipvs0 as `ip -d -j link` shows kube-proxy's dummy device."""
    out = []
    for line in stdout.split("\n"):
        if line.startswith("[") and f'"ifname":"{DEVICE}"' in line:
            links = json.loads(line)
            for link in links:
                if link.get("ifname") == DEVICE:
                    link["linkinfo"] = {"info_kind": "dummy"}
                    link["txqlen"] = 1000
            line = json.dumps(links, separators=(",", ":"))
        out.append(line)
    return "\n".join(out)


def _without_shadow(stdout: str) -> str:
    return "\n".join(line for line in stdout.split("\n") if not _SHADOW_LINE.search(line))


def splice_node(doc: dict, state: dict, ip6_saved: str, scratch: str) -> None:
    """Rewrite one node's collected document (nodes/<node>.json) in place."""
    sections = {s["probe"]: s for s in doc.get("sections", [])}
    name = doc.get("name")
    for probe in ("iptables", "nftables", "ipsets", "ipvs", "modules", "links"):
        if probe not in sections:
            raise LabError(f"{name}: the bundle has no {probe} section")
    saved = sections["iptables"]["stdout"]
    problems = disagreements(saved, state["ipvsadm"])
    if problems:
        raise LabError(f"{name}: the IPVS shadow and kube-proxy disagree ({'; '.join(problems)})"
                       ": record again")
    foreign = _foreign_nft_tables(sections["nftables"]["stdout"])
    if foreign:
        raise LabError(f"{name}: nftables tables other than iptables-nft's ({', '.join(foreign)})"
                       " cannot be carried over; record without them")
    ipt, nft, sets = _replay(scratch, merge(saved, state["iptables_save"]),
                       merge(ip6_saved, state["ip6tables_save"]), state["ipset_save"])
    sections["iptables"]["stdout"] = ipt
    sections["nftables"]["stdout"] = nft
    sections["ipsets"]["stdout"] = sets
    sections["ipvs"]["stdout"] = "##knd:table ipvsadm\n" + state["ipvsadm"]
    sections["modules"]["stdout"] = _present(sections["modules"]["stdout"])
    sections["links"]["stdout"] = _as_dummy(sections["links"]["stdout"])
    for probe in ("processes", "sockets"):
        if probe in sections:
            sections[probe]["stdout"] = _without_shadow(sections[probe]["stdout"])


def splice_cluster(doc: dict) -> None:
    """cluster.json: the kube-proxy ConfigMap in ipvs mode."""
    for call in doc.get("calls", []):
        data = (call.get("object") or {}).get("data") if call.get("name") == "kube_proxy_config" \
            else None
        if data and "config.conf" in data:
            data["config.conf"] = re.sub(r"(?m)^mode: .*$", "mode: ipvs", data["config.conf"])


def splice(topology: Topology, paths: LabPaths, runners: Runners, bundle: Path,
           nodes: Sequence[LabNode] | None = None) -> list[str]:
    """Rewrite `bundle` (collected from this lab, shadows running) as the same cluster with
    kube-proxy in ipvs mode; the nodes rewritten."""
    missing = [t for t in ("ipset", "iptables-restore", "ip6tables-restore", "nft")
               if shutil.which(t) is None]
    if missing:
        raise LabError(f"ipvs splice needs {', '.join(missing)} (packages ipset, iptables, "
                       "nftables)")
    done = []
    scratch = f"{topology.prefix}-ipvsrec"
    for node in nodes or topology.nodes:
        path = bundle / "nodes" / f"{node.name}.json"
        if not path.exists():
            continue
        doc = json.loads(path.read_text())
        ip6 = runners.node(node).run(["ip6tables-save", "-c"]).stdout
        splice_node(doc, read_state(paths, node.name), ip6, scratch)
        path.write_text(json.dumps(doc, indent=1) + "\n")
        done.append(node.name)
    cluster = bundle / "cluster.json"
    if cluster.exists():
        doc = json.loads(cluster.read_text())
        splice_cluster(doc)
        cluster.write_text(json.dumps(doc, indent=1) + "\n")
    for stale in ("facts.json", "report.json"):  # made from the rules before the splice
        (bundle / stale).unlink(missing_ok=True)
    return done


def wait_quiet(paths: LabPaths, nodes: Sequence[LabNode], quiet: float = 3.0) -> None:
    """Until no shadow's state changed for `quiet` seconds."""
    while True:
        newest = max((state_path(paths, n.name).stat().st_mtime for n in nodes
                      if state_path(paths, n.name).exists()), default=0.0)
        if time.time() - newest >= quiet:
            return
        time.sleep(0.5)
