"""Run every node's active script at the same time, over each node's open SSH connection.

The product is the node record's `active` part (docs/contracts.md): the plan, one section per
check with its raw output, and what the node had for tools. Checks the node has no tool for
(DNS, HTTP) are then asked through a direct-tcpip channel from that node, and recorded as
sections of the same name, so `analyze` reads both the same way.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from kubenetdiag.active import channel
from kubenetdiag.active import script as active_script
from kubenetdiag.active.parse import RS
from kubenetdiag.collect import local, ssh
from kubenetdiag.collect.script import new_marker
from kubenetdiag.inventory import Host

OUTPUT_LIMIT = 8 * 1024 * 1024
ProgressFn = Callable[[str, str, str], None]


def split(stdout: str, marker: str, plan: dict, duration_s: float) -> dict:
    """The script's lines -> {tools, podns, sections}. Only ids this plan has are accepted: a
    forged marker line from a hostile node cannot add a check that was never sent."""
    commands = dict(active_script.checks(plan))
    tools: list[str] = []
    podns = None
    sections = []
    for line in stdout.split("\n"):
        if not line.startswith(marker + ":"):
            continue
        rest = line[len(marker) + 1:]
        kind, _, rest = rest.partition(":")
        if kind == "tools":
            tools = rest.split()
        elif kind == "podns":
            podns = rest.strip() or None
        elif kind == "chk":
            cid, rc, cs, out = (rest.split(":", 3) + ["", "", ""])[:4]
            if cid not in commands:
                continue
            sections.append({
                "probe": f"active.{cid}", "command": commands[cid],
                "exit_code": int(rc) if rc.lstrip("-").isdigit() else None,
                "duration_s": int(cs) / 100 if cs.isdigit() else 0.0,
                "stdout": out.replace(RS, "\n"), "stderr": "", "truncated": False,
            })
        elif kind == "cap" and plan.get("vxlan"):
            rc, _, out = rest.partition(":")
            vx = plan["vxlan"]
            sections.append({
                "probe": "active.capture",
                "command": f"tcpdump -nni {vx['dev']} udp port {vx['port']}",
                "exit_code": int(rc) if rc.isdigit() else None,
                "duration_s": round(duration_s, 2),
                "stdout": out.replace(RS, "\n"), "stderr": "", "truncated": False,
            })
    return {"tools": tools, "podns": podns, "sections": sections}


def _channel_checks(host: Host, plan: dict, result: dict, open_stream: Callable) -> None:
    """Replace DNS/HTTP checks that had no tool on the node with channel-based ones."""
    for i, section in enumerate(result["sections"]):
        if section["exit_code"] != 127:
            continue
        kind, _, idx = section["probe"].removeprefix("active.").partition(".")
        if kind not in ("dns", "http") or not idx.isdigit():
            continue
        started = time.monotonic()
        if kind == "dns":
            target = plan["dns"][int(idx)]["server"]
            port, what = 53, f"DNS over TCP to {target}:53 for {plan['dns_name']}"
        else:
            url = plan["http"][int(idx)]["url"]
            hostport = url.split("//", 1)[1].split("/", 1)[0]
            target, port = hostport.rsplit(":", 1)[0], int(hostport.rsplit(":", 1)[1])
            what = f"HTTP GET {url}"
        try:
            stream = open_stream(target, port, 2.0)
        except (ssh.CollectError, OSError) as exc:
            text = ("dns: error=" if kind == "dns" else "http_code=000 error=") + \
                ("refused" if "refused" in str(exc).lower() else "timeout"
                 if "timed out" in str(exc).lower() else "connect_failed") + f" ({exc})"
        else:
            try:
                text = (channel.dns_over(stream, plan["dns_name"]) if kind == "dns"
                        else channel.http_over(stream, f"{target}:{port}", "/metrics"))
            finally:
                stream.close()
        result["sections"][i] = {
            "probe": section["probe"],
            "command": f"ssh direct-tcpip from {host.name}: {what} (no tool on the node)",
            "exit_code": 0, "duration_s": round(time.monotonic() - started, 3),
            "stdout": text, "stderr": "", "truncated": False,
        }


def _local_stream(address: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((address, port), timeout=timeout)


def run_node(host: Host, plan: dict, connector: ssh.Connector) -> dict:
    started = time.monotonic()
    marker = new_marker()
    text = active_script.build(plan, marker)
    limit_s = active_script.deadline(plan)
    record: dict = {"plan": plan, "tools": [], "podns": None, "sections": [], "error": None}
    try:
        if host.connection == "local":
            out, err, status, _ = local.run_script(text, limit_s + 5, OUTPUT_LIMIT)
            opener: Callable = _local_stream
        else:
            out, err, status, _ = connector.run_script(host, text, OUTPUT_LIMIT, limit_s)

            def opener(address: str, port: int, timeout: float):  # noqa: ANN202
                return connector.open_channel(host, address, port, timeout)
        record.update(split(out, marker, plan, time.monotonic() - started))
        if status not in (0, None):
            record["error"] = f"active script exit status {status}: {err.strip()[:300]}"
        _channel_checks(host, plan, record, opener)
    except ssh.CollectError as exc:
        record["error"] = str(exc)
    except Exception as exc:  # one odd node must not stop the others
        record["error"] = f"unexpected error: {exc!r}"
    record["duration_s"] = round(time.monotonic() - started, 3)
    return record


def run_active(
    hosts: Sequence[Host],
    plans: dict[str, dict],
    connector: ssh.Connector,
    *,
    parallel: int = 32,
    progress: ProgressFn | None = None,
) -> dict[str, dict]:
    """node name -> its `active` record; every planned node runs at the same time (bounded by
    `parallel`, as the passive phase)."""
    todo = [h for h in hosts if h.name in plans]
    if not todo:
        return {}

    def one(host: Host) -> tuple[str, dict]:
        if progress:
            progress(host.name, "connecting", "active probes")
        rec = run_node(host, plans[host.name], connector)
        if progress:
            progress(host.name, "failed" if rec["error"] and not rec["sections"] else "done",
                     rec["error"] or "")
        return host.name, rec

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(todo))),
                            thread_name_prefix="active") as pool:
        return dict(pool.map(one, todo))
