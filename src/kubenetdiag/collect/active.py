"""Run the active script on every planned node at once and keep every raw answer.

The product is each node record's `active` part (docs/contracts.md): the plan, one section per
check with its raw output, and what the node had for tools. Checks that must see every peer's
traffic (the DROP counters' second read) run once all nodes' scripts are done. Checks the node
has no tool for and that can be asked another way (their ActiveCheck has `channel`, as DNS and
HTTP do) are then asked through a direct-tcpip channel from that node, and recorded as sections
of the same name, so `analyze` reads both the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from kubenetdiag.collect import channel
from kubenetdiag.collect.script import new_marker
from kubenetdiag.collect.ssh import Connector
from kubenetdiag.collect.transport import Transport
from kubenetdiag.errors import CollectError
from kubenetdiag.inventory import Host
from kubenetdiag.probes.active import PREFIX, check_for, checks
from kubenetdiag.probes.active import script as active_script
from kubenetdiag.probes.active.plan import NodePlan

OUTPUT_LIMIT = 8 * 1024 * 1024
ProgressFn = Callable[[str, str, str], None]


def _section(probe: str, command: str, exit_code: int | None, duration_s: float, stdout: str
             ) -> dict:
    return {"probe": probe, "command": command, "exit_code": exit_code,
            "duration_s": duration_s, "stdout": stdout, "stderr": "", "truncated": False}


def split(stdout: str, marker: str, plan: NodePlan, duration_s: float) -> dict:
    """The script's lines -> {tools, podns, sections}. Only ids this plan has are accepted: a
    forged marker line from a hostile node cannot add a check that was never sent."""
    commands = dict(active_script.jobs(plan))
    around = active_script.window_check(plan)
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
            cid, rc, centis, out = (rest.split(":", 3) + ["", "", ""])[:4]
            if cid not in commands:
                continue
            sections.append(_section(
                PREFIX + cid, commands[cid], int(rc) if rc.lstrip("-").isdigit() else None,
                int(centis) / 100 if centis.isdigit() else 0.0,
                out.replace(active_script.RS, "\n")))
        elif kind == "cap" and around:
            check, target = around
            rc, _, out = rest.partition(":")
            sections.append(_section(
                PREFIX + check.name, check.command(plan, target) if check.command else "",
                int(rc) if rc.isdigit() else None, round(duration_s, 2),
                out.replace(active_script.RS, "\n")))
    return {"tools": tools, "podns": podns, "sections": sections}


def _channel_checks(host: Host, plan: NodePlan, result: dict, node: Transport) -> None:
    """Replace checks that had no tool on the node with channel-based ones where the check
    says how (ActiveCheck.channel)."""
    for i, section in enumerate(result["sections"]):
        if section["exit_code"] != 127:
            continue
        found = check_for(section["probe"])
        if found is None or found[0].channel is None:
            continue
        check, suffix = found
        request = check.channel(plan, check.target(plan, suffix))
        started = time.monotonic()
        try:
            stream = node.open_stream(request.address, request.port, 2.0)
        except (CollectError, OSError) as exc:
            text = channel.no_connection(request.protocol, exc)
        else:
            try:
                text = channel.SPEAKERS[request.protocol](
                    stream, f"{request.address}:{request.port}", request.query)
            finally:
                stream.close()
        result["sections"][i] = _section(
            section["probe"],
            f"ssh direct-tcpip from {host.name}: {request.what} (no tool on the node)",
            0, round(time.monotonic() - started, 3), text)


def run_node(host: Host, plan: NodePlan, connector: Connector) -> dict:
    started = time.monotonic()
    marker = new_marker()
    text = active_script.build(plan, marker)
    record: dict = {"plan": plan, "tools": [], "podns": None, "sections": [], "error": None}
    try:
        node = connector.for_host(host)
        result = node.run_script(text, limit=OUTPUT_LIMIT, timeout=active_script.deadline(plan))
        record.update(split(result.stdout, marker, plan, time.monotonic() - started))
        if result.status not in (0, None):
            record["error"] = (f"active script exit status {result.status}: "
                               f"{result.stderr.strip()[:300]}")
        _channel_checks(host, plan, record, node)
    except CollectError as exc:
        record["error"] = str(exc)
    except Exception as exc:  # one odd node must not stop the others
        record["error"] = f"unexpected error: {exc!r}"
    record["duration_s"] = round(time.monotonic() - started, 3)
    return record


AFTER_TIMEOUT_S = 20.0


def run_after(host: Host, plan: NodePlan, record: dict, connector: Connector) -> None:
    """The checks that read the node once every node's checks are done (ActiveCheck.
    after_command), each kept as a section of the node's record like any other check's."""
    for check in checks():
        if check.after_command is None or not check.targets(plan):
            continue
        command = check.after_command(plan)
        started = time.monotonic()
        try:
            result = connector.for_host(host).run_script(
                command, limit=OUTPUT_LIMIT, timeout=AFTER_TIMEOUT_S)
            rc, out = result.status, result.stdout
        except CollectError as exc:
            rc, out = None, f"kubenetdiag: {exc}"
        except Exception as exc:  # one odd node must not stop the others
            rc, out = None, f"kubenetdiag: unexpected error: {exc!r}"
        record["sections"].append(_section(
            PREFIX + check.section_id(""), command, rc,
            round(time.monotonic() - started, 3), out))


def run_checks(
    hosts: Sequence[Host],
    plans: dict[str, NodePlan],
    connector: Connector,
    *,
    parallel: int = 32,
    progress: ProgressFn | None = None,
) -> dict[str, dict]:
    """node name -> its `active` record without the after-checks; every planned node runs at
    the same time (bounded by `parallel`, as the passive phase)."""
    todo = [h for h in hosts if h.name in plans]

    def one(host: Host) -> tuple[str, dict]:
        if progress:
            progress(host.name, "connecting", "active probes")
        rec = run_node(host, plans[host.name], connector)
        if progress:
            progress(host.name, "failed" if rec["error"] and not rec["sections"] else "done",
                     rec["error"] or "")
        return host.name, rec

    if not todo:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(todo))),
                            thread_name_prefix="active") as pool:
        return dict(pool.map(one, todo))


def run_afters(hosts: Sequence[Host], plans: dict[str, NodePlan], results: dict[str, dict],
               connector: Connector, *, parallel: int = 32) -> None:
    """The after-checks of every node whose checks ran, added to its record in `results`.
    Called only once no node is sending checks any more: a counter read here counts all of
    their traffic."""
    todo = [h for h in hosts if results.get(h.name, {}).get("sections")]
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(todo))),
                            thread_name_prefix="active") as pool:
        list(pool.map(lambda h: run_after(h, plans[h.name], results[h.name], connector), todo))
