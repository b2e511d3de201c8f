"""CNI configuration: which file the runtime uses (the first in name order), the plugin
chain, MTU and IPAM.

The directory is the one the container runtime reads: containerd's `conf_dir` where its
configuration names one (k3s and RKE2 generate their own containerd configuration, and k3s
keeps the CNI configuration under /var/lib/rancher/k3s/agent/etc/cni/net.d), else
/etc/cni/net.d, the default of containerd, CRI-O and the kubelet. Reading the default on a
k3s node would find it missing or empty and blame a healthy node. The shell reads the
runtime's configuration itself (no process): the first `conf_dir = "..."` line that is not a
comment.

Secrets are redacted on the node, before anything reaches the bundle: any JSON string whose key
mentions a token, password, secret, credential, private key or auth, and a `kubeconfig` given
inline rather than as a path. Files that are not CNI configs (calico-kubeconfig, which holds a
service-account token) are listed by name only, never read.

Sample output and the facts it gives:

>>> out = (
...     '##knd:file /etc/cni/net.d/10-flannel.conflist\\n'
...     '|{"name": "cbr0", "cniVersion": "0.3.1",\\n'
...     '| "plugins": [{"type": "flannel", "delegate": {"isDefaultGateway'
...     '": true}},\\n'
...     '|             {"type": "portmap", "capabilities": {"portMappings'
...     '": true}}]}\\n'
... )
>>> facts = parse(Section("cni", "", 0, 0.0, out, ""), "node1")
>>> [(f.attrs["file"], f.attrs["active"], f.attrs["primary_type"], f.attrs["types"])
...  for f in facts if f.kind == "cni_config"]
[('/etc/cni/net.d/10-flannel.conflist', True, 'flannel', 'flannel,portmap')]
"""

from __future__ import annotations

import json
import re

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import Probe, Section
from kubenetdiag.probes.text import clip, parts, unprefix

CNI_DIR = "/etc/cni/net.d"
REDACTED = "<redacted>"
# Case-insensitive without GNU extensions: busybox and CentOS 7 sed both take these.
_WORDS = ("token", "passw", "secret", "credential", "private", "auth", "key", "-data")


def _any_case(word: str) -> str:
    """A sed pattern matching `word` in any case."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


_SED = " ".join(
    f"-e 's/\\(\"[^\"]*{_any_case(word)}[^\"]*\"[[:space:]]*:[[:space:]]*\\)"
    f"\"[^\"]*\"/\\1\"{REDACTED}\"/g'"
    for word in _WORDS
) + (
    f" -e 's/\\(\"[^\"]*{_any_case('kubeconfig')}[^\"]*\"[[:space:]]*:[[:space:]]*\\)"
    f"\"[^/\"][^\"]*\"/\\1\"{REDACTED}\"/g'"
)

# The runtimes' configurations that may name the directory, most specific first: a k3s or
# RKE2 node also has /etc/containerd/config.toml when containerd was installed beside them.
RUNTIME_CONFIGS = ("/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
                   "/var/lib/rancher/rke2/agent/etc/containerd/config.toml",
                   "/etc/containerd/config.toml")

COMMAND = (
    f"d=; for c in {' '.join(RUNTIME_CONFIGS)}; do [ -r \"$c\" ] || continue; "
    'while IFS= read -r l || [ -n "$l" ]; do l=${l#"${l%%[![:space:]]*}"}; case $l in conf_dir*=*) '
    'v=${l#*=}; v=${v#"${v%%[![:space:]]*}"}; case $v in '
    "\\\"*) v=${v#\\\"}; v=${v%%\\\"*};; \\'*) v=${v#\\'}; v=${v%%\\'*};; *) v=;; esac; "
    '[ -z "$v" ] || { d=$v; echo "##knd:dirfrom $c"; }; break;; esac; done < "$c"; '
    '[ -z "$d" ] || break; done; '
    f'[ -n "$d" ] || d={CNI_DIR}; echo "##knd:dir $d"; '
    "if [ ! -d \"$d\" ]; then echo '##knd:nodir'; return 0; fi; "
    'for f in "$d"/*; do [ -f "$f" ] || continue; case "$f" in '
    f"*.conf|*.conflist|*.json) echo \"##knd:file $f\"; sed {_SED} -e 's/^/|/' -e '2000q' \"$f\";; "
    '*) echo "##knd:other $f";; esac; done; return 0'
)

_SECRET_KEY = re.compile("|".join(_WORDS), re.I)


def _redact(obj: object) -> tuple[object, bool]:
    """Belt and braces for the node-side sed: a secret on a line sed could not see whole."""
    hit = False
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(v, str) and (
                _SECRET_KEY.search(str(k)) or (str(k).lower() == "kubeconfig"
                                               and not v.startswith("/"))
            ):
                out[k], hit = REDACTED, hit or v != REDACTED
            else:
                out[k], h = _redact(v)
                hit = hit or h
        return out, hit
    if isinstance(obj, list):
        items = [_redact(v) for v in obj]
        return [v for v, _ in items], any(h for _, h in items)
    return obj, False


def _plugins(conf: dict) -> list[dict]:
    if isinstance(conf.get("plugins"), list):
        return [p for p in conf["plugins"] if isinstance(p, dict)]
    return [conf]


def parse(section: Section, node: str) -> list[Fact]:
    files: list[tuple[str, list[str]]] = []
    others: list[str] = []
    nodir = False
    directory, chosen_by = CNI_DIR, None  # bundles from before the runtime's was read
    for name, path, lines in parts(section.stdout):
        if name == "file":
            files.append((path, unprefix(lines)))
        elif name == "other":
            others.append(path)
        elif name == "nodir":
            nodir = True
        elif name == "dir" and path:
            directory = path
        elif name == "dirfrom" and path:
            chosen_by = path
    facts: list[Fact] = []
    active_seen = False
    for path, lines in sorted(files):
        text = "\n".join(lines)
        try:
            conf = json.loads(text)
            valid = isinstance(conf, dict)
        except ValueError:
            conf, valid = {}, False
        conf, hit = _redact(conf) if valid else ({}, False)
        hit = hit or REDACTED in text
        plugins = _plugins(conf) if valid else []
        types = [str(p.get("type")) for p in plugins if p.get("type")]
        first = plugins[0] if plugins else {}
        delegate = first.get("delegate") if isinstance(first.get("delegate"), dict) else {}
        ipam = first.get("ipam") if isinstance(first.get("ipam"), dict) else {}
        mtu = first.get("mtu", delegate.get("mtu"))
        active = valid and bool(types) and not active_seen
        active_seen = active_seen or active
        facts.append(Fact("cni_config", node, {
            "file": clip(path, 200),
            "valid": valid and bool(types),
            "active": active,
            "name": clip(str(conf.get("name")), 100) if valid and conf.get("name") else None,
            "cni_version": clip(str(conf.get("cniVersion")), 20) if valid and conf.get(
                "cniVersion") else None,
            "types": clip(",".join(types), 200) or None,
            "primary_type": clip(types[0], 60) if types else None,
            "mtu": mtu if isinstance(mtu, int) and not isinstance(mtu, bool) else None,
            "ipam_type": clip(str(ipam["type"]), 60) if ipam.get("type") else None,
            "redacted": hit,
        }, Source("cni", f"cat {path}", section.exit_code,
                  clip(json.dumps(conf) if valid else text, 1500))))
    facts.append(Fact("cni_config_dir", node, {
        "dir": clip(directory, 200),
        "configured_in": clip(chosen_by, 200) if chosen_by else None,
        "exists": not nodir,
        "config_files": len(files),
        "other_files": clip(",".join(o.rsplit("/", 1)[-1] for o in others), 300) or None,
        "active_file": next((f.attrs["file"] for f in facts if f.attrs.get("active")), None),
    }, Source("cni", f"ls {directory}", section.exit_code,
              clip("\n".join([p for p, _ in files] + others) or "(empty)", 500))))
    return facts


PROBE = Probe(
    name="cni",
    command=COMMAND,
    parse=parse,
    kinds=("cni_config", "cni_config_dir"),
    blocks="CNI configuration (plugin, MTU, which config file is in use)",
    tools=("sed",),
    timeout_s=5,
)
