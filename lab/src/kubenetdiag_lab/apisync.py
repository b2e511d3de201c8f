"""Keep the real kube-apiserver's objects equal to what `k8s_objects.build(state)` says.

The lab has no kubelet and runs no controller but the EndpointSlice ones, so it writes what the
others would: objects at creation (POST), their status through the status subresource (nodes
and pods as the kubelet, DaemonSets as their controller), and again whenever lab.json changes
(an injected or healed fault). EndpointSlices are kube-controller-manager's own (it follows the
pods' Ready condition), so the lab writes one only for a Service without a selector, which no
controller manages (k8s_objects.external_slices); after a sync that wrote pods or Services,
`sync` waits until the controller's slices say what lab.json's services' `endpoints` say.

`sync(admin, state, applied)` reconciles against `applied`, the objects this module wrote last
time (kept by the caller, e.g. in a file): changed objects are replaced (PUT) or have their
status patched, new ones are created, ones no longer built are deleted. Only the lab's own
objects are ever touched: the apiserver's `default/kubernetes` Service (which the apiserver
maintains itself) is left out of the build.

Comparing with what was applied, not with what the server holds, keeps a sync that changes
nothing free (no request at all), which matters because every lab.json write syncs.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from kubenetdiag_lab import k8s_objects
from kubenetdiag_lab.controlplane import AdminClient, ApiError, collection_path
from kubenetdiag_lab.errors import LabError
from kubenetdiag_lab.topology import pod_labels

# Set by the server; a body that carried them would be refused (uid) or conflict
# (resourceVersion), and creationTimestamp is the server's to set.
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp")
# Whose status the lab writes as kubelet or a controller would.
STATUS_KINDS = ("Node", "Pod", "DaemonSet")
# Objects a real component writes to as well (flanneld annotates its Node and sets its
# NetworkUnavailable condition): patched, never replaced, so its entries stay.
SHARED_KINDS = ("Node",)
IPPOOL_CRD = "ippools.crd.projectcalico.org"
CRD_TIMEOUT = 30.0
# The EndpointSlice controller's label value on the slices it manages.
SLICE_MANAGER = "endpointslice-controller.k8s.io"
ENDPOINTS_TIMEOUT = 30.0

Obj = dict[str, Any]


def ippool_crd() -> Obj:
    """calico's IPPool CRD, cut to what the lab serves: a cluster-scoped v1 kind whose spec the
    server keeps as given (the diagnoser reads spec.cidr, ipipMode, vxlanMode, natOutgoing)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": IPPOOL_CRD},
        "spec": {
            "group": "crd.projectcalico.org",
            "names": {"kind": "IPPool", "listKind": "IPPoolList", "plural": "ippools",
                      "singular": "ippool"},
            "scope": "Cluster",
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {"type": "object",
                                            "x-kubernetes-preserve-unknown-fields": True}},
                }},
            }],
        },
    }


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    return "/".join((obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"]))


def _is_apiservers_own(obj: Mapping[str, Any]) -> bool:
    meta = obj["metadata"]
    return (obj["kind"] == "Service" and meta.get("namespace") == "default"
            and meta["name"] == "kubernetes")


def desired(state: Mapping[str, Any]) -> dict[str, Obj]:
    """{key: object} the server should hold for this lab.json, server-set fields removed."""
    out: dict[str, Obj] = {}
    for items in k8s_objects.build(dict(state)).values():
        for obj in items:
            if _is_apiservers_own(obj):
                continue
            meta = {k: v for k, v in obj["metadata"].items() if k not in SERVER_FIELDS}
            out[_key(obj)] = {**obj, "metadata": meta}
    return out


def _body(obj: Mapping[str, Any]) -> Obj:
    return {k: v for k, v in obj.items() if k != "status"}


def _item_path(obj: Mapping[str, Any]) -> str:
    return f"{collection_path(obj)}/{obj['metadata']['name']}"


def _ensure_ippool_crd(admin: AdminClient) -> None:
    admin.create(ippool_crd(), exist_ok=True)
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{IPPOOL_CRD}"
    deadline = time.monotonic() + CRD_TIMEOUT
    while True:
        conditions = admin.get(path).get("status", {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True"
               for c in conditions):
            return
        if time.monotonic() > deadline:
            raise LabError(f"CRD {IPPOOL_CRD} not Established after {CRD_TIMEOUT:.0f}s: "
                           f"{conditions}")
        time.sleep(0.1)


def sync(admin: AdminClient, state: Mapping[str, Any],
         applied: Mapping[str, Obj] | None = None) -> dict[str, Obj]:
    """Make the server hold desired(state); return it (the caller's next `applied`).

    applied=None means nothing is known to exist: every object is written (an existing one
    replaced)."""
    want = desired(state)
    have = dict(applied or {})
    endpoints_may_change = False
    namespaces = sorted({o["metadata"]["namespace"] for o in want.values()
                         if o["metadata"].get("namespace")} - {"default"})
    new_namespaces = [ns for ns in namespaces
                      if not any(o["metadata"].get("namespace") == ns for o in have.values())]
    for ns in new_namespaces:
        admin.ensure_namespace(ns)
    if any(o["kind"] == "IPPool" for o in want.values()) and not any(
            o["kind"] == "IPPool" for o in have.values()):
        _ensure_ippool_crd(admin)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for key, obj in want.items():
        old = have.get(key)
        if obj["kind"] == "Pod" and obj.get("status"):
            obj["status"] = _stamp_transitions(obj["status"], (old or {}).get("status"), now)
        if old is None:
            _create(admin, obj)
            changed_status = True
        else:
            if _body(old) != _body(obj):
                if obj["kind"] in SHARED_KINDS:
                    admin.patch(_item_path(obj), _body(obj))
                else:
                    # PUT, not POST: a Service POST fails on its taken cluster IP (422)
                    # before the name conflict
                    admin.replace(_body(obj))
            changed_status = old.get("status") != obj.get("status")
            endpoints_may_change |= obj["kind"] in ("Pod", "Service") and (
                changed_status or _body(old) != _body(obj))
        endpoints_may_change |= old is None and obj["kind"] in ("Pod", "Service")
        if changed_status and obj["kind"] in STATUS_KINDS and obj.get("status"):
            admin.patch_status(_item_path(obj), obj["status"])
    for key in sorted(set(have) - set(want)):
        path = _item_path(have[key])
        if have[key]["kind"] == "Pod":
            # at once: a graceful delete waits for the kubelet to confirm the containers are
            # gone, and the lab has none, so the pod would stay Terminating (and listed as a
            # terminating endpoint of its Services) for good
            path += "?gracePeriodSeconds=0"
        admin.delete(path)
        endpoints_may_change |= have[key]["kind"] in ("Pod", "Service")
    if any(o["kind"] == "IPPool" for o in have.values()) and not any(
            o["kind"] == "IPPool" for o in want.values()):
        # the CRD is the lab's too: without calico, ippools are a 404 as on a real cluster
        admin.delete(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{IPPOOL_CRD}")
    if endpoints_may_change:
        wait_endpoints(admin, state)
    return want


def _stamp_transitions(status: Obj, old: Obj | None, now: str) -> Obj:
    """The pod's conditions with the lastTransitionTime the kubelet gives them: when their
    status last changed (now, for one that changed or is new), kept from what was written
    before otherwise, so that a sync that changes nothing still writes nothing."""
    before = {c.get("type"): c for c in (old or {}).get("conditions") or []}
    conditions = []
    for c in status.get("conditions") or []:
        prev = before.get(c.get("type"))
        same = prev is not None and prev.get("status") == c.get("status")
        when = prev.get("lastTransitionTime") if same and prev.get("lastTransitionTime") else now
        conditions.append({**c, "lastTransitionTime": when})
    return {**status, "conditions": conditions}


Endpoints = dict[tuple[str, str], tuple[set[str], set[str]]]  # (ns, svc): (all, ready) IPs


def expected_endpoints(state: Mapping[str, Any]) -> Endpoints:
    """What the EndpointSlice controller should list for lab.json's services that carry
    `endpoints`: every address of the pods their selector picks (their `app`'s pods, or
    the pods whose labels match a `selector` a fault gave them), and the addresses of the
    pods `endpoints` names as the ready ones."""
    pods = [p for p in state.get("pods") or [] if isinstance(p, dict) and p.get("ip")]
    out: Endpoints = {}
    for svc in state.get("services") or []:
        if not isinstance(svc, dict) or not svc.get("app") or "endpoints" not in svc:
            continue
        ns = svc.get("namespace") or "default"
        selector = svc.get("selector")
        if isinstance(selector, dict) and selector:
            want = {str(k): str(v) for k, v in selector.items()}.items()
            mine = [p for p in pods if want <= pod_labels(str(p.get("app") or "")).items()
                    and (p.get("namespace") or ns) == ns]
        else:
            mine = [p for p in pods if p.get("app") == svc["app"]
                    and (p.get("namespace") or ns) == ns]
        ready = set(svc["endpoints"] or [])
        out[(ns, svc["name"])] = ({p["ip"] for p in mine},
                                  {p["ip"] for p in mine if p["name"] in ready})
    return out


def served_endpoints(admin: AdminClient) -> Endpoints:
    """(all, ready) addresses per service in the controller's EndpointSlices. An address is
    ready only in a slice with ports: where a Service's named targetPort resolves on none of
    its pods, the controller still lists them, in a slice without ports, which kube-proxy
    programs as no endpoint at all."""
    selector = urllib.parse.quote(f"endpointslice.kubernetes.io/managed-by={SLICE_MANAGER}")
    found = admin.get(f"/apis/discovery.k8s.io/v1/endpointslices?labelSelector={selector}")
    out: Endpoints = {}
    for item in found.get("items") or []:
        meta = item["metadata"]
        key = (meta["namespace"], meta.get("labels", {}).get("kubernetes.io/service-name", ""))
        every, ready = out.setdefault(key, (set(), set()))
        for endpoint in item.get("endpoints") or []:
            addresses = endpoint.get("addresses") or []
            every.update(addresses)
            if (endpoint.get("conditions") or {}).get("ready") and item.get("ports"):
                ready.update(addresses)
    return out


def wait_endpoints(admin: AdminClient, state: Mapping[str, Any],
                   timeout: float = ENDPOINTS_TIMEOUT) -> None:
    """Wait until kube-controller-manager's EndpointSlices match lab.json's services: the
    lab's writes of pods and Services reach the slices (and kube-proxy) through it."""
    want = expected_endpoints(state)
    deadline = time.monotonic() + timeout
    while True:
        have = served_endpoints(admin)
        wrong = {key: have.get(key) for key, value in want.items() if have.get(key) != value}
        if not wrong:
            return
        if time.monotonic() > deadline:
            detail = "; ".join(f"{ns}/{name}: (all, ready) {got}, want {want[(ns, name)]}"
                               for (ns, name), got in sorted(wrong.items()))
            raise LabError(f"kube-controller-manager's EndpointSlices do not match lab.json "
                           f"after {timeout:.0f}s (is it running?): {detail}")
        time.sleep(0.05)



def _create(admin: AdminClient, obj: Mapping[str, Any]) -> None:
    try:
        admin.create(_body(obj))
    except ApiError as exc:
        # already there (a sync whose record was lost): 409, or 422 for a Service whose
        # cluster IP it holds itself
        if exc.status not in (409, 422):
            raise
        try:
            admin.get(_item_path(obj))
        except ApiError:
            raise exc from None
        admin.replace(_body(obj))
