"""Turn a bundle's raw node records into facts.

Fail soft: a probe that did not answer, or whose output a parser cannot read, becomes a
`probe_status` fact naming what could not be checked. It never becomes a healthy value, and it
never stops the other probes or nodes.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager

from kubenetdiag.facts.bridges import pod_bridge_facts
from kubenetdiag.facts.cluster import cluster_facts
from kubenetdiag.facts.link_load import link_saturation_facts
from kubenetdiag.facts.lossy_links import lossy_link_facts
from kubenetdiag.facts.model import Fact, Source, excerpt
from kubenetdiag.facts.paths import path_facts
from kubenetdiag.facts.persist import persist_sysctl
from kubenetdiag.facts.pod_names import pod_name_facts
from kubenetdiag.facts.pod_veths import pod_veth_facts
from kubenetdiag.facts.policies import policy_facts
from kubenetdiag.facts.registry import validate_fact
from kubenetdiag.facts.services import service_sync_facts
from kubenetdiag.facts.vantage import vantage_facts
from kubenetdiag.facts.vxlan_peers import vxlan_peer_facts
from kubenetdiag.facts.zones import zone_latency_facts
from kubenetdiag.probes import BY_NAME, PROBES, Probe, Section
from kubenetdiag.probes.active import PREFIX, check_for, checks
from kubenetdiag.probes.active.plan import not_checked
from kubenetdiag.probes.base import CUT_NOTE, CheckContext
from kubenetdiag.vocabulary import ENDPOINTS_PROBE

_DENIED = re.compile(
    r"permission denied|you must be root|operation not permitted|must be run as root", re.I
)


def section_status(section: Section, probe: Probe) -> tuple[str, str] | None:
    """(status, reason) when the probe did not give a full answer, else None."""
    err = section.stderr.strip()
    first_err = err.splitlines()[0][:300] if err else ""
    if section.exit_code is None:
        return "timeout", "did not finish before the node-side time limit"
    if section.exit_code == 124:
        return "timeout", f"killed after {probe.timeout_s}s"
    if section.exit_code == 127 or (section.exit_code != 0 and "command not found" in err):
        tools = ", ".join(probe.tools) or "its command"
        return "missing_tool", first_err or f"{tools} is not installed"
    if _DENIED.search(err):
        return "permission_denied", first_err
    if section.truncated:
        cut = next((line for line in err.splitlines() if line.startswith(CUT_NOTE)), "")
        return "partial", cut or "the output was cut short"
    if section.exit_code not in probe.ok_exit_codes:
        return "failed", first_err or f"exit code {section.exit_code}"
    return None


def _status_fact(node: str, probe: Probe, status: str, reason: str, section: Section | None):
    return Fact(
        "probe_status",
        node,
        {"probe": probe.name, "status": status, "reason": reason, "blocks": probe.blocks},
        Source(
            probe.name,
            probe.command,
            section.exit_code if section else None,
            excerpt(section.stderr if section else reason, 1000),
        ),
    )


def node_facts(record: dict, ran: Collection[str] | None = None, *,
               only: Collection[str] | None = None) -> list[Fact]:
    """Facts of one node record's passive sections. `ran`: the probes the collection ran (a
    probe among them with no section here "did not run" on this node); None: all known ones.
    `only`: parse these probes' sections and no other."""
    name = record["name"]
    facts = [
        Fact(
            "node_status",
            name,
            {
                "reachable": bool(record["reachable"]),
                "address": record.get("address", ""),
                "reason": record.get("error"),
            },
            Source("connect", f"ssh {record.get('address', '')}", None, record.get("error") or ""),
        )
    ]
    if not record["reachable"]:
        return facts
    seen = set()
    for raw in record["sections"]:
        section = Section.from_dict(raw)
        probe = BY_NAME.get(section.probe)
        if probe is None or (only is not None and probe.name not in only):
            continue  # written by a newer version (nothing here knows how to read it), or
            # not asked for
        seen.add(probe.name)
        status = section_status(section, probe)
        if status:
            facts.append(_status_fact(name, probe, *status, section))
            if status[0] == "missing_tool":
                continue  # nothing ran, so there is nothing to parse
        try:
            facts.extend(probe.parse(section, name))
        except Exception as exc:  # a parser bug or garbage output: report it, keep going
            facts.append(
                _status_fact(name, probe, "failed", f"could not parse the output: {exc!r}", section)
            )
    for probe in PROBES:
        if probe.name not in seen and (ran is None or probe.name in ran) \
                and (only is None or probe.name in only):
            facts.append(_status_fact(name, probe, "failed", "the probe did not run", None))
    return persist_sysctl(facts)  # which file a sysctl fix should edit, on the sysctl facts


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Parsing makes hundreds of thousands of small objects (a 500-node bundle: 360,000 facts,
    each with its dict and source) and no reference cycle among them; meanwhile CPython's
    cycle collector walks the growing heap again and again, which was a fifth of the parse's
    CPU at 500 nodes. Anything cyclic made here is collected once the parse is done."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def facts_of_kinds(records: Iterable[dict], cluster: dict | None, kinds: Collection[str]
                   ) -> list[Fact]:
    """The facts of `kinds` the node probes and the API give, parsing nothing else and deriving
    nothing: what the active phase's planner reads (probes.active.plan.INPUTS), at a fraction
    of a whole parse's cost (no packet-path walks)."""
    wanted = {p.name for p in PROBES if set(p.kinds) & set(kinds)}
    records = list(records)
    with _no_cycle_collection():
        facts = [f for rec in records for f in node_facts(rec, wanted, only=wanted)
                 if f.kind in kinds]
    if cluster is not None:
        facts.extend(f for f in cluster_facts(
            cluster, [(r["name"], str(r.get("address") or "")) for r in records])
            if f.kind in kinds)
    return facts


def probes_ran(records: Iterable[dict], recorded: Iterable[str] | None = None) -> set[str]:
    """The passive probes a bundle's collection ran: meta.json's `probes` where the bundle has
    it, else every probe some node answered for. An older bundle was collected before a probe
    was added; that probe is then not reported as "did not run" on every node."""
    if recorded is not None:
        return set(recorded)
    return {str(s.get("probe")) for r in records for s in r.get("sections") or ()}


# ---------------------------------------------------------------- active checks


def active_facts(node: str, active: dict) -> list[Fact]:
    """Facts from one node record's `active` part (see docs/contracts.md): each section goes to
    the active check its name belongs to, with the plan's target its suffix names."""
    if active.get("skipped"):
        return []  # said once for the whole run, by skipped_fact()
    plan = active.get("plan") or {}
    if active.get("error") and not active.get("sections"):
        return [Fact("probe_status", node, {
            "probe": "active", "status": "failed", "reason": str(active["error"])[:300],
            "blocks": "active probes"}, Source("active", "", None, str(active["error"])))]
    context = CheckContext(node, plan, active.get("podns"))
    facts: list[Fact] = []
    for raw in active.get("sections", []):
        try:
            section = Section.from_dict(raw)
            found = check_for(section.probe)
            if found is None:
                continue  # written by a newer version; nothing here knows how to read it
            check, suffix = found
            parsed = check.parse(section, check.target(plan, suffix), context)
            for fact in parsed:
                # a plan value of the wrong type can reach a fact unread (the DNS name asked)
                problems = validate_fact(fact)
                if problems:
                    raise ValueError(f"the plan gives {problems[0]}")
            facts.extend(parsed)
        # a plan is read back from the bundle: an entry of the wrong type (a hostile or damaged
        # bundle, found by tests/test_fuzz_bundles.py) fails that section, not the run
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
            facts.append(Fact("probe_status", node, {
                "probe": raw.get("probe", "active"), "status": "failed",
                "reason": f"could not parse the output: {exc!r}"[:300],
                "blocks": "active probe"},
                Source(raw.get("probe", "active"), raw.get("command", ""),
                       raw.get("exit_code"), excerpt(raw.get("stdout", ""), 1000))))
    # peers the plan knew no pod address on: their pod layer was not checked, not failed
    facts.extend(not_checked(node, plan))
    return facts


def no_endpoints_fact() -> Fact:
    """One 'not checked' entry when the active checks ran but the inventory declares no
    endpoint: nothing was connected to outside the cluster, so a timeout to a database or other
    middleware (node -> endpoint, then pod -> endpoint) was not looked for, which is not the
    same as it being fine."""
    reason = ("no endpoint is declared in the inventory, so no node or pod connected to a "
              "service outside the cluster (a database, a cache, other middleware). Declare the "
              "ones your pods use as host:port under kubenetdiag_endpoints, e.g. in all: vars: "
              "kubenetdiag_endpoints: [\"10.0.0.5:3306\"]")
    return Fact("probe_status", "cluster", {
        "probe": ENDPOINTS_PROBE, "status": "not_queried", "reason": reason,
        "blocks": "connect timeouts to middleware: node to endpoint, pod to endpoint, and "
                  "which of the two fails"}, Source(ENDPOINTS_PROBE, "", None, reason))


def skipped_fact(reason: str) -> Fact:
    """One 'not checked' entry for a run whose active phase was not asked for."""
    return Fact("probe_status", "cluster", {
        "probe": "active", "status": "not_queried", "reason": reason,
        "blocks": "active probes: pod-network matrix, MTU, VXLAN direction, CoreDNS checks, "
                  "declared endpoints; run diagnose without --no-active (or collect --active)",
    }, Source("active", "", None, reason))


class _Sharing:
    """Makes equal values of different facts one object.

    Most of what nodes report is the same on every node: sysctl keys, counter names, process
    names, kube-proxy's iptables rules and the raw lines behind them. At 5,000 nodes (about a
    million facts) one copy of each instead of one per node takes the facts from 0.8 GB to 0.5.
    """

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.sources: dict[Source, Source] = {}

    def __call__(self, facts: list[Fact]) -> list[Fact]:
        values, sources = self.values, self.sources
        for f in facts:
            attrs = f.attrs
            for k, v in attrs.items():
                if type(v) is str:
                    attrs[k] = values.setdefault(v, v)
            if f.source is not None:
                f.source = sources.setdefault(f.source, f.source)
        return facts


NOT_COLLECTED = "not_collected"


def not_collected(node: str, ran: Collection[str], version: str | None) -> list[Fact]:
    """A `not_collected` probe_status for every probe this version has that the bundle's
    collection did not run: the bundle was made before the probe existed. Nothing failed, but
    nothing was read either, so the rules that read its facts were not evaluated."""
    made_by = f"kubenetdiag {version}" if version else "an older kubenetdiag"
    reason = f"not collected by the version that made this bundle ({made_by})"
    return [_status_fact(node, probe, NOT_COLLECTED, reason, None)
            for probe in PROBES if probe.name not in ran]


def checks_ran(records: Iterable[dict], recorded: Iterable[str] | None = None) -> set[str]:
    """The active checks a bundle's collection had: meta.json's `active_checks` where it has
    it, else every check some node has a section of (as probes_ran does for probes)."""
    if recorded is not None:
        return set(recorded)
    ran = set()
    for r in records:
        active = r.get("active")
        for s in (active.get("sections") or ()) if isinstance(active, dict) else ():
            found = check_for(str(s.get("probe")))
            if found:
                ran.add(found[0].name)
    return ran


def checks_not_collected(node: str, active: dict, ran: Collection[str],
                         version: str | None) -> list[Fact]:
    """A `not_collected` probe_status for each active check this version has, and would have
    sent from this node by its plan, that the bundle's version did not have."""
    plan = active.get("plan")
    if active.get("skipped") or not isinstance(plan, dict):
        return []
    made_by = f"kubenetdiag {version}" if version else "an older kubenetdiag"
    reason = f"not collected by the version that made this bundle ({made_by})"
    out = []
    for check in checks():
        if check.name in ran or not check.kinds:
            continue
        try:
            targets = check.targets(plan)
        except (KeyError, IndexError, TypeError, ValueError):
            continue  # a plan shaped by an older version: nothing this check can aim at
        if targets:
            name = PREFIX + check.name
            out.append(Fact("probe_status", node, {
                "probe": name, "status": NOT_COLLECTED, "reason": reason,
                "blocks": check.blocks(targets[0][1])}, Source(name, "", None, reason)))
    return out


def facts_from_records(
    records: Iterable[dict],
    cluster: dict | None = None,
    *,
    probes: Iterable[str] | None = None,
    active_checks: Iterable[str] | None = None,
    version: str | None = None,
) -> list[Fact]:
    """Facts of every node record, plus the cluster facts when the bundle has cluster.json.
    `probes`, `active_checks`: meta.json's lists of the passive probes and active checks the
    collection had, when it has them; `version`: meta.json's `tool_version`, named where a
    probe was not collected."""
    with _no_cycle_collection():
        return _facts_from_records(list(records), cluster, probes, active_checks, version)


def _facts_from_records(records: list[dict], cluster: dict | None,
                        probes: Iterable[str] | None, active_checks: Iterable[str] | None,
                        version: str | None) -> list[Fact]:
    ran = probes_ran(records, probes)
    had_checks = checks_ran(records, active_checks)
    facts: list[Fact] = []
    skipped = None
    planned = declared = False  # an active plan was made / one of them had endpoints
    plans: dict[str, dict] = {}  # node -> its active plan: the addresses the checks aimed at
    shared = _Sharing()
    for rec in records:
        mine = node_facts(rec, ran)
        if rec["reachable"]:
            mine.extend(not_collected(rec["name"], ran, version))
        active = rec.get("active")
        if isinstance(active, dict) and rec.get("reachable"):
            # The active phase's raw output (bundle: the node record's `active` part).
            mine.extend(active_facts(rec["name"], active))
            mine.extend(checks_not_collected(rec["name"], active, had_checks, version))
            skipped = skipped or active.get("skipped")
            plan = active.get("plan")
            if isinstance(plan, dict) and not active.get("skipped"):
                plans[rec["name"]] = plan
                planned = True
                declared = declared or bool(plan.get("endpoints"))
        facts.extend(shared(mine))
    if skipped:
        facts.append(skipped_fact(str(skipped)))
    elif planned and not declared:
        facts.append(no_endpoints_fact())
    if cluster is not None:
        facts.extend(
            cluster_facts(cluster, [(r["name"], str(r.get("address") or "")) for r in records])
        )
    # Derived from the facts above, never from a node: where each flow would die (docs/paths.md)
    facts.extend(path_facts(facts))
    # a link losing packets at random: the checks that failed across it only by chance are
    # set aside (listed in its fact) before anything reads them as a fault of what they aimed at
    lossy, aside = lossy_link_facts(facts)
    if aside:
        facts = [f for f in facts if id(f) not in aside]
    facts.extend(lossy)
    facts.extend(vantage_facts(facts))  # where the active checks' failures localize
    facts.extend(zone_latency_facts(facts))  # what calls between a Service's zones pay
    facts.extend(link_saturation_facts(facts, cluster))  # links carrying what they can
    facts.extend(service_sync_facts(facts))  # each node's kube-proxy rules against the API
    facts.extend(pod_bridge_facts(facts, cluster))  # the pods' bridge, its hairpin mode
    facts.extend(pod_veth_facts(facts, cluster))  # the pod behind each pod veth
    facts.extend(pod_name_facts(facts, cluster))  # the pod of each namespace read
    facts.extend(vxlan_peer_facts(facts))  # each peer's VXLAN entries against the peer's device
    # NetworkPolicy verdicts on the flows the checks sent and DNS needs, and who enforces them
    facts.extend(policy_facts(facts, cluster, plans))
    return facts
