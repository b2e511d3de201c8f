"""`kubenetdiag lab ...` (and `python -m kubenetdiag_lab ...`): drive the lab by hand.

    lab up [--nodes N] [--cni MODE] [--proxy-mode iptables|nftables]
           [--network-policy none|kube-router] [--light]
                                          build it (default 2 nodes, flannel-vxlan, iptables,
                                          no NetworkPolicy enforcer); --light: nodes without
                                          flanneld and kube-proxy, up to 950 of them
    lab status [--json]                   client netns, nodes, pods, paths, active faults
    lab exec -- CMD...                    run CMD in the client namespace, exit with its code
    lab inject FAULT [--node N] [--param k=v]...   break it; `lab inject --list` lists faults
    lab heal [FAULT] [--node N]           undo faults (all active ones if none named)
    lab down                              tear it down (also after a crashed run)

Every command takes --workdir (default /tmp/kubenetdiag-lab); up and down take --prefix.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubenetdiag_lab.errors import LabError
from kubenetdiag_lab.netns import exec_argv
from kubenetdiag_lab.paths import DEFAULT_WORKDIR
from kubenetdiag_lab.topology import (
    CNI_MODES,
    DEFAULT_CNI,
    DEFAULT_PROXY_MODE,
    LOGIN_MODES,
    NETWORK_POLICY_MODES,
    PROXY_MODES,
)

if TYPE_CHECKING:
    from kubenetdiag_lab.lab import Lab


def register(subparsers: Any) -> None:
    """The `kubenetdiag.commands` entry point: add `lab` to the product CLI's subparsers.

    The product CLI dispatches with `args.handler(args)`, so it needs no lab import of its own.
    """
    parser = subparsers.add_parser("lab", help="the network-namespace cluster lab (root)",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_commands(parser)
    parser.set_defaults(handler=run)


def add_commands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="lab_cmd", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="build the lab")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--cni", choices=CNI_MODES, default=DEFAULT_CNI)
    up.add_argument("--proxy-mode", choices=PROXY_MODES, default=DEFAULT_PROXY_MODE,
                    help="kube-proxy's mode (default %(default)s)")
    up.add_argument("--network-policy", choices=NETWORK_POLICY_MODES, default="none",
                    help="what enforces NetworkPolicies: none (default), or kube-router's "
                         "policy controller in every node")
    up.add_argument("--login", choices=LOGIN_MODES, default="node",
                    help="whose shell start-up files an SSH login to a node runs: the node's "
                         "own (default, as on a real node) or this machine's")
    up.add_argument("--light", action="store_true",
                    help="light nodes: sshd, init, agents and pods, no flanneld or kube-proxy "
                         "(pod routes written as flannel's host-gw backend does; needs --cni "
                         "flannel-host-gw); required above 200 nodes, for benchmarks of scale")
    status = sub.add_parser("status", help="describe the running lab")
    status.add_argument("--json", action="store_true", help="machine-readable")
    ex = sub.add_parser("exec", help="run a command in the lab's client namespace")
    ex.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    inject = sub.add_parser("inject", help="inject a fault (--list: the faults)")
    inject.add_argument("fault", nargs="?")
    inject.add_argument("node_pos", nargs="?", metavar="NODE", help=argparse.SUPPRESS)
    inject.add_argument("--node")
    inject.add_argument("--param", action="append", default=[], metavar="K=V")
    inject.add_argument("--list", action="store_true", help="list the faults and exit")
    inject.add_argument("--format", choices=["text", "json"], default="text",
                        help="with --list: text (tab-separated when stdout is not a terminal) "
                        "or json")
    heal = sub.add_parser("heal", help="undo faults (every active one if none named)")
    heal.add_argument("fault", nargs="?")
    heal.add_argument("node_pos", nargs="?", metavar="NODE", help=argparse.SUPPRESS)
    heal.add_argument("--node")
    down = sub.add_parser("down", help="tear the lab down (also after a crashed run)")
    ipvs = sub.add_parser(
        "ipvs", help="kube-proxy's IPVS proxier beside each node's kube-proxy, and bundles "
        "rewritten as ipvs mode (this kernel has no ip_vs: see ipvs_shadow.py)",
        description="start: run kube-proxy's IPVS proxier (knd-ipvs-proxier) in every node "
        "and wait until each agrees with its node's kube-proxy. splice BUNDLE: rewrite a "
        "bundle collected from the lab while they ran as the same cluster in ipvs mode "
        "(tests/fixtures/bundles/record-ipvs.sh records the IPVS fixtures this way). stop: "
        "stop them and remove kube-ipvs0.")
    ipvs.add_argument("action", choices=["start", "splice", "stop"])
    ipvs.add_argument("bundle", nargs="?", type=Path, help="splice: the bundle directory")
    for command in (up, status, ex, inject, heal, down, ipvs):
        command.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    for command in (up, down):
        command.add_argument("--prefix", default="knd")


def fault_rows() -> list[dict]:
    """Every fault the lab can inject, as plain data (`lab inject --list --format json`)."""
    from kubenetdiag_lab.faults import FAULTS  # only when listing: it loads every injector

    return [{
        "name": name,
        "description": spec.description,
        "fixture_only": bool(spec.fixture_only),
        "benign": bool(spec.benign),
        "params": dict(spec.params or {}),
        "cni": list(spec.modes or ()),
        "kube_proxy": list(spec.proxy_modes or ()),
        "via": {via: list(modes or ()) for via, modes in (spec.mechanisms or {}).items()},
    } for name, spec in sorted(FAULTS.items())]


def fault_list(tty: bool = True) -> str:
    """The faults for a reader (aligned columns) or, when stdout is not a terminal, one fault a
    line with tab-separated fields: name, description, params, cni, kube-proxy, via."""
    lines = [] if tty else ["name\tdescription\tparams\tcni\tkube_proxy\tvia"]
    for row in fault_rows():
        params = ", ".join(f"{key}={value}" for key, value in row["params"].items())
        via = "|".join(v + (f" (cni {'|'.join(m)})" if m else "") for v, m in row["via"].items())
        if not tty:
            fields = [row["name"], _kind(row) + row["description"], params, "|".join(row["cni"]),
                      "|".join(row["kube_proxy"]), via]
            lines.append("\t".join(" ".join(f.split()) for f in fields))
            continue
        if row["fixture_only"]:
            lines.append(f"{row['name']:34} fixture only: {row['description']}")
            continue
        extra = [label + value for label, value in (
            ("params ", params), ("cni ", "|".join(row["cni"])),
            ("kube-proxy ", "|".join(row["kube_proxy"])), ("via ", via)) if value]
        tail = f" [{'; '.join(extra)}]" if extra else ""
        lines.append(f"{row['name']:34} {_kind(row)}{row['description']}{tail}")
    return "\n".join(lines)


def _kind(row: dict) -> str:
    return ("fixture only: " if row["fixture_only"] else
            "benign, expect no finding: " if row["benign"] else "")


def _params(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LabError(f"--param {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def status_view(lab: Lab) -> dict[str, Any]:
    state = json.loads(lab.state_path.read_text())
    return {
        "prefix": state["prefix"],
        "workdir": state["workdir"],
        "cni": state["cni"],
        "kube_proxy_mode": state.get("kube_proxy_mode", DEFAULT_PROXY_MODE),
        "network_policy": state.get("network_policy", "none"),
        "client_netns": state["client"]["netns"],
        "client_address": state["client"]["address"],
        "nodes": [{"name": node["name"], "netns": node["netns"], "address": node["address"],
                   "pod_cidr": node["pod_cidr"], "zone": node["zone"]}
                  for node in state["nodes"]],
        "pods": state["pods"],
        "services": state["services"],
        "inventory": state["inventory"],
        "kubeconfig": state["kubeconfig"],
        "faults": state["faults"],
    }


def _print_status(view: dict[str, Any]) -> None:
    enforcer = "" if view.get("network_policy", "none") == "none" else \
        f", policies: {view['network_policy']}"
    print(f"lab {view['prefix']} ({view['cni']}, kube-proxy {view['kube_proxy_mode']}"
          f"{enforcer}) in {view['workdir']}")
    print(f"  client netns {view['client_netns']} ({view['client_address']})")
    for node in view["nodes"]:
        print(f"  {node['name']:8} {node['netns']:18} {node['address']:14} "
              f"pods {node['pod_cidr']} {node['zone']}")
    print(f"  inventory  {view['inventory']}\n  kubeconfig {view['kubeconfig']}")
    faults = [f"{entry['fault']}@{entry['node']}" for entry in view["faults"]]
    print(f"  faults     {', '.join(faults) or 'none'}")


def run(args: argparse.Namespace) -> int:
    """Run a parsed `lab` command; returns the exit code."""
    try:
        return _run(args)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    # Here, not at the top: the product CLI imports this module to build its parser, and
    # `diagnose` should not load the whole lab for that.
    from kubenetdiag_lab.lab import Lab

    cmd = args.lab_cmd
    if cmd == "up":
        lab = Lab(args.workdir, nodes=args.nodes, prefix=args.prefix, cni_mode=args.cni,
                  proxy_mode=args.proxy_mode, network_policy=args.network_policy,
                  login=args.login, light=args.light)
        lab.up()
        enforcer = "" if lab.network_policy == "none" else f", {lab.network_policy}"
        if lab.topology.light:
            enforcer += ", light nodes"
        print(f"lab up ({lab.cni}, kube-proxy {lab.proxy_mode}{enforcer}, {len(lab.nodes)} "
              f"nodes) in {lab.timings['up_s']:.2f}s; "
              f"inventory {lab.inventory_path}; client netns {lab.client_netns}")
        return 0
    if cmd == "down":
        # Without state, the prefix alone is enough to find and remove everything.
        try:
            lab = Lab.load(args.workdir)
        except LabError:
            lab = Lab(args.workdir, prefix=args.prefix)
        lab.down()
        print(f"lab {lab.prefix} down in {lab.timings['down_s']:.2f}s")
        return 0
    if cmd == "inject" and args.list:
        if args.format == "json":
            print(json.dumps(fault_rows(), indent=2))
        else:
            print(fault_list(tty=sys.stdout.isatty()))
        return 0
    lab = Lab.load(args.workdir)
    if cmd == "status":
        view = status_view(lab)
        if args.json:
            print(json.dumps(view, indent=2))
        else:
            _print_status(view)
        return 0
    if cmd == "exec":
        argv = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not argv:
            raise LabError("exec: nothing to run; usage: lab exec -- CMD [ARGS...]")
        env = {**os.environ, "KUBENETDIAG_LAB": str(lab.workdir)}
        return subprocess.call(exec_argv(lab.client_netns, argv), env=env)
    if cmd == "inject":
        if not args.fault:
            raise LabError("inject: name a fault (see `lab inject --list`)")
        lab.inject(args.fault, args.node or args.node_pos, _params(args.param))
        return 0
    if cmd == "heal":
        lab.heal(args.fault, args.node or args.node_pos)
        return 0
    if cmd == "ipvs":
        from kubenetdiag_lab import ipvs_shadow

        if args.action == "start":
            ipvs_shadow.start_all(lab.topology, lab.paths, lab.runners)
            print(f"IPVS proxier running beside kube-proxy on {len(lab.nodes)} nodes")
            return 0
        if args.action == "stop":
            ipvs_shadow.stop_all(lab.topology, lab.paths, lab.runners)
            return 0
        if args.bundle is None or not (args.bundle / "meta.json").is_file():
            raise LabError("ipvs splice: name a bundle directory collected from this lab")
        ipvs_shadow.wait_quiet(lab.paths, lab.nodes)
        done = ipvs_shadow.splice(lab.topology, lab.paths, lab.runners, args.bundle)
        print(f"{args.bundle}: {', '.join(done)} rewritten as kube-proxy ipvs mode")
        return 0
    raise LabError(f"unknown lab command {cmd!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubenetdiag_lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_commands(parser)
    return run(parser.parse_args(argv))
