"""Which part of a collection produces each fact kind, and so what a failed probe leaves unknown.

A rule that found nothing on a node says "healthy" only if the facts it reads were collected
there. The report therefore turns every probe that gave no answer into the rules it leaves
unevaluated: this module gives the fact kinds behind each `probe_status` probe name, and
`kubenetdiag.engine.needs` the kinds each rule reads.

Nothing here is a hand-kept table of kinds: every producer declares what it makes where it is
written, and tests/test_producers.py checks each declaration against what the code produces:

* a passive probe: `Probe.kinds`; an active check: `ActiveCheck.kinds`;
* the Kubernetes API: `facts.cluster.CALL_KINDS`, per call;
* kinds derived in the parse stage from other facts (`DERIVERS`: path, lossy_links, vantage,
  zones, census,
  services, bridges, vxlan_peers, policies, link_load, pod_veths, pod_names):
  the deriving module's `PRODUCES` and `INPUTS` (or, for one kind that reads fewer of them,
  its `KIND_INPUTS`), so a rule on a derived kind needs what it is made from.
  Its `CONTEXT` kinds only widen what is derived (more flows, names for targets): when they are
  missing, their own not-checked entry says so, and the derived facts are still right;
* kinds that rules assert (`derived: true` in the registry) are followed by the engine, which
  knows the rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from kubenetdiag.facts import (
    bridges,
    census,
    link_load,
    lossy_links,
    paths,
    pod_names,
    pod_veths,
    policies,
    services,
    vantage,
    vxlan_peers,
    zones,
)
from kubenetdiag.facts.cluster import CALL_KINDS
from kubenetdiag.probes import BY_NAME, PROBES
from kubenetdiag.probes.active import PREFIX as ACTIVE_PREFIX
from kubenetdiag.probes.active import check_for, checks

# Made by the collection itself, not by a probe: a node is reached or not (the report lists an
# unreachable node on its own), a probe answered or not, the API was asked or not.
COLLECTION = frozenset({"node_status", "probe_status", "cluster_api"})
ALL_PROBES = "all"  # the probe of the entry for a node that was not reached
API = "api"  # the probe of the entry for an API that did not answer, or was not asked


# The parse stage's deriving modules, each declaring PRODUCES, INPUTS and CONTEXT.
DERIVERS = (paths, lossy_links, vantage, zones, census, services, bridges, vxlan_peers, policies,
            link_load, pod_veths, pod_names)
# what their facts name as their source: no command ran, so there is no exit code
DERIVED_SOURCES = frozenset(module.PROBE for module in DERIVERS)


@cache
def derived_inputs() -> dict[str, frozenset[str]]:
    """Kind -> the kinds it is derived from, for the kinds the parse stage and the engine derive
    from other facts before any rule runs."""
    out: dict[str, frozenset[str]] = {}
    for module in DERIVERS:
        # a module may say that one of its kinds reads fewer of its inputs (KIND_INPUTS)
        narrower = getattr(module, "KIND_INPUTS", {})
        for kind in module.PRODUCES:
            out[kind] = frozenset(narrower.get(kind, module.INPUTS)) - COLLECTION
    return out


@cache
def api_kinds() -> frozenset[str]:
    return frozenset(k for kinds in CALL_KINDS.values() for k in kinds)


@cache
def active_kinds() -> frozenset[str]:
    return frozenset(k for c in checks() for k in c.kinds)


@cache
def node_kinds() -> frozenset[str]:
    """Every kind that a node's own probes and checks make: unknown on a node not reached."""
    return frozenset(k for p in PROBES for k in p.kinds) | active_kinds()


def blocked_kinds(probe: str, declared: str | None = None) -> frozenset[str]:
    """The fact kinds left unknown by a `probe_status` with this `probe` (or a not-checked
    entry: `all` for a node not reached, `api` for the whole API). `declared`: the fact's own
    `kinds` attribute, when the probe answered in part and said which kinds it could not read.
    A name nothing here knows (written by a newer version) blocks nothing it can name.
    """
    if declared is not None:
        return frozenset(k.strip() for k in declared.split(",") if k.strip())
    if probe == ALL_PROBES:
        return node_kinds()
    if probe == API:
        return api_kinds()
    if probe.startswith(API + ":"):
        return frozenset(CALL_KINDS.get(probe.split(":", 1)[1].split("/")[0], ()))
    if probe == ACTIVE_PREFIX.rstrip("."):
        return active_kinds()
    if probe.startswith(ACTIVE_PREFIX):
        found = check_for(probe)
        return frozenset(found[0].kinds) if found else frozenset()
    known = BY_NAME.get(probe)
    return frozenset(known.kinds) if known else frozenset()


def observed(kinds: Iterable[str]) -> frozenset[str]:
    """`kinds` with every derived kind replaced by the kinds it is derived from, recursively:
    what probes and the API must have given for facts of these kinds to be complete."""
    inputs = derived_inputs()
    out: set[str] = set()
    todo = list(kinds)
    seen: set[str] = set()
    while todo:
        kind = todo.pop()
        if kind in seen:
            continue
        seen.add(kind)
        if kind in inputs:
            todo.extend(inputs[kind])
        elif kind not in COLLECTION:
            out.add(kind)
    return frozenset(out)
