"""What the CNI plugins last did for each pod: libcni's cached results in /var/lib/cni/results.

Every runtime that calls its plugins through libcni (containerd, CRI-O, cri-dockerd, cnitool)
keeps one file per pod interface, `<network>-<container id>-<ifname>`: the pod's sandbox and
arguments (the kubelet passes K8S_POD_NAMESPACE and K8S_POD_NAME) and the plugins' result (the
interfaces made, the host side of the pod's veth among them, and the pod's addresses). It
names the pod behind a veth even when the kernel no longer can: a veth set down or taken out of
its bridge has no learned addresses left, a deleted one has nothing at all.

Two forms: libcni 0.7 and later wrap the result (`"kind": "cniCacheV1"`, with `containerId`,
`ifName`, `networkName`, `netns`, `cniArgs` and `result`); libcni 0.6 wrote the plugins' result
alone, which names no pod. Results in the 0.2.0 format give the address as `ip4.ip`.

On the node, before anything reaches the bundle: the network config libcni caches with each
result (`config`, base64, where a CNI config's credentials would be) is emptied, and the
capability arguments (`capabilityArgs`: containerd passes the pod's annotations there) are left
out. Each file is read by the shell itself (regular files only, no process).

Sample output and the facts it gives:

>>> out = (
...     '##knd:file /var/lib/cni/results/cbr0-5c1f-eth0\\n'
...     '|{"kind":"cniCacheV1","containerId":"5c1f","config":"","ifName":"eth0",'
...     '"networkName":"cbr0","netns":"/var/run/netns/cni-1","cniArgs":[["K8S_POD_NAMESPACE",'
...     '"default"],["K8S_POD_NAME","web-0"]],"result":{"cniVersion":"0.3.1","interfaces":'
...     '[{"name":"cni0"},{"name":"veth3a9f01"},{"name":"eth0","sandbox":"/var/run/netns/cni-1"}],'
...     '"ips":[{"address":"10.244.1.5/24","gateway":"10.244.1.1","interface":2}]}}\\n'
... )
>>> [(f.attrs["pod"], f.attrs["host_veth"], f.attrs["bridge"], f.attrs["addresses"])
...  for f in parse(Section("cni_results", "", 0, 0.0, out, ""), "node1")]
[('default/web-0', 'veth3a9f01', 'cni0', '10.244.1.5')]
"""

from __future__ import annotations

import ipaddress
import json

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import Probe, Section, unread_lines
from kubenetdiag.probes.text import clip, parts, unprefix

RESULTS_DIR = "/var/lib/cni/results"

# Each file is one line of JSON. `config` is a base64 string (no quote inside): what lies
# between its quotes goes. capabilityArgs comes after cniArgs and before result in every libcni
# version that writes it. `"result":{` can only be the top-level result (the last one): inside
# capabilityArgs, an annotation named result holds a string, and no other argument nests one.
# Without a result, everything from capabilityArgs on goes.
COMMAND = (
    f"d={RESULTS_DIR}; if [ ! -d $d ]; then echo '##knd:nodir'; return 0; fi; "
    'for f in "$d"/*; do [ -f "$f" ] || continue; '
    'if [ ! -r "$f" ]; then echo "##knd:denied $f"; continue; fi; '
    'l=; { IFS= read -r l || [ -n "$l" ]; } <"$f"; '
    r"""case $l in *'"config":"'*) h=${l%%'"config":"'*}; t=${l#*'"config":"'}; """
    r"""t=${t#*\"}; l="$h\"config\":\"\"$t";; esac; """
    r"""case $l in *'"capabilityArgs":'*'"result":{'*) h=${l%%'"capabilityArgs":'*}; """
    r"""t=${l##*'"result":{'}; l="$h\"result\":{$t";; """
    r"""*'"capabilityArgs":'*) l=${l%%'"capabilityArgs":'*}; l="${l%,}}";; esac; """
    'printf "##knd:file %s\\n|%s\\n" "$f" "$l"; done; return 0'
)


def _args(raw: object) -> dict[str, str]:
    """cniArgs ([[key, value], ...]) as a dict."""
    out = {}
    for pair in raw if isinstance(raw, list) else []:
        if isinstance(pair, list) and len(pair) == 2:
            out[str(pair[0])] = str(pair[1])
    return out


def _addresses(result: dict) -> list[str]:
    """The pod's addresses, without prefix length: `ips` (0.3.0 and later) or ip4/ip6 (0.2.0)."""
    found = [ip.get("address") for ip in result.get("ips") or [] if isinstance(ip, dict)]
    found += [result[k].get("ip") for k in ("ip4", "ip6") if isinstance(result.get(k), dict)]
    out = []
    for text in found:
        try:
            out.append(str(ipaddress.ip_interface(str(text)).ip))
        except ValueError:
            continue
    return out


def _interfaces(result: dict) -> tuple[list[str], str | None]:
    """(host-side interfaces in result order, the sandbox's interface)."""
    host, sandbox = [], None
    for iface in result.get("interfaces") or []:
        if not isinstance(iface, dict) or not iface.get("name"):
            continue
        if iface.get("sandbox"):
            sandbox = sandbox or str(iface["name"])
        else:
            host.append(str(iface["name"]))
    return host, sandbox


def parse(section: Section, node: str) -> list[Fact]:
    facts: list[Fact] = []
    unread: list[str] = []
    denied: list[str] = []
    for name, path, lines in parts(section.stdout):
        if name == "denied":
            denied.append(path)
        if name != "file":
            continue
        text = "\n".join(unprefix(lines))
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            unread.append(f"{path}: {text}")
            continue
        wrapped = isinstance(doc.get("result"), dict)
        result = doc["result"] if wrapped else doc
        args = _args(doc.get("cniArgs"))
        host, sandbox = _interfaces(result)
        pod = (f"{args['K8S_POD_NAMESPACE']}/{args['K8S_POD_NAME']}"
               if args.get("K8S_POD_NAMESPACE") and args.get("K8S_POD_NAME") else None)
        addresses = _addresses(result)
        file_name = path.rsplit("/", 1)[-1]
        facts.append(Fact("cni_attachment", node, {
            "file": clip(path, 300),
            "network": clip(str(doc.get("networkName") or ""), 100) or None,
            "container_id": clip(str(doc.get("containerId") or ""), 80) or None,
            "ifname": clip(str(doc.get("ifName") or sandbox or ""), 30) or None,
            "netns": clip(str(doc.get("netns") or ""), 200) or None,
            "pod": clip(pod, 260) if pod else None,
            # the bridge plugin lists [bridge, host veth, pod's interface]; ptp and Calico the
            # host veth alone on the host side: the host veth is the last there
            "host_veth": clip(host[-1], 30) if host else None,
            "bridge": clip(host[0], 30) if len(host) > 1 else None,
            "addresses": ",".join(addresses) or None,
        }, Source("cni_results", f"cat {path}", section.exit_code,
                  clip(f"{file_name}: pod {pod or '(not named: a result without arguments)'}"
                       f", host side {host[-1] if host else '(none)'}, addresses "
                       f"{','.join(addresses) or '(none)'}", 500))))
    if denied:
        # libcni writes them 0600: a login that is not root (and no sudo) sees the names only
        facts.append(Fact("probe_status", node, {
            "probe": "cni_results", "status": "permission_denied",
            "reason": clip(f"{len(denied)} cached CNI result(s) not readable by this login "
                           f"(libcni writes them for root only): {', '.join(denied[:3])}", 300),
            "blocks": "which pod is behind those veths, where the kernel no longer says",
            "kinds": "cni_attachment",
        }, Source("cni_results", f"ls -l {RESULTS_DIR}", section.exit_code,
                  clip("\n".join(denied), 1000))))
    return facts + unread_lines(section, node, unread, "a pod's cached CNI result")


PROBE = Probe(
    name="cni_results",
    command=COMMAND,
    parse=parse,
    kinds=("cni_attachment",),
    blocks="which pod is behind each veth when the kernel no longer says (CNI results cache)",
    timeout_s=5,
)
