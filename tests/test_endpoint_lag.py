"""The API's EndpointSlices against their pods, and kube-controller-manager's lease
(facts/cluster.py: endpoint_lag, controller_lease): what the controller left behind is told
from a pod that changed between the collector's two reads, and from what the controller is
right to leave out."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from kubenetdiag.collect.cluster import _server_date
from kubenetdiag.facts.cluster import cluster_facts
from kubenetdiag.facts.registry import validate_fact

READ = datetime(2026, 12, 6, 5, 0, 0, tzinfo=timezone.utc)


def ago(seconds: float) -> str:
    return (READ - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def pod(name: str, ip: str, ready: bool = True, since: float = 3600, **extra) -> dict:
    meta = {"name": name, "namespace": "default", "labels": {"app": "web"},
            "creationTimestamp": ago(7200), **extra.pop("meta", {})}
    return {
        "metadata": meta,
        "spec": {"nodeName": "node1",
                 "containers": [{"name": "web", "ports": [{"name": "http",
                                                           "containerPort": 8080}]}]},
        "status": {"phase": extra.pop("phase", "Running"), "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                   "lastTransitionTime": ago(since)}]},
    }


def service(target: object = 8080, **spec) -> dict:
    return {"metadata": {"name": "web", "namespace": "default", "creationTimestamp": ago(9000)},
            "spec": {"clusterIP": "10.96.0.20", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": target,
                                "protocol": "TCP"}], **spec}}


def endpoint_slice(*ready: tuple[str, str], changed: float = 1800,
                   manager: str = "endpointslice-controller.k8s.io", not_ready=()) -> dict:
    eps = [{"addresses": [ip], "conditions": {"ready": True},
            "targetRef": {"kind": "Pod", "name": name}} for name, ip in ready]
    eps += [{"addresses": [ip], "conditions": {"ready": False},
             "targetRef": {"kind": "Pod", "name": name}} for name, ip in not_ready]
    return {"metadata": {"name": "web-x1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web",
                                    "endpointslice.kubernetes.io/managed-by": manager},
                         "annotations": {"endpoints.kubernetes.io/last-change-trigger-time":
                                         ago(changed)}},
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}], "endpoints": eps}


def call(name: str, items=None, obj=None, status: str = "ok") -> dict:
    return {"name": name, "path": f"/{name}", "status": status,
            "http_status": 200 if status == "ok" else 404, "reason": None, "duration_s": 0.01,
            "items": items, "object": obj, "read_at": READ.isoformat()}


def facts(pods: list, slices: list, svc: dict | None = None, lease: dict | None = None,
          kind: str = "endpoint_lag") -> list[dict]:
    doc = {"queried": True, "calls": [
        call("nodes", [{"metadata": {"name": "cp1"}}, {"metadata": {"name": "node1"}}]),
        call("pods", pods), call("services", [svc or service()]),
        call("endpointslices", slices),
        call("controller_lease", obj=lease) if lease else call("controller_lease",
                                                               status="not_found")]}
    out = cluster_facts(doc, [("cp1", "198.18.0.1"), ("node1", "198.18.0.11")])
    for f in out:
        assert validate_fact(f) == [], (f.kind, f.attrs)
    assert not [f for f in out if f.kind == "probe_status"]  # a missing lease is no failure
    return [f.attrs for f in out if f.kind == kind]


def test_a_pod_that_went_not_ready_after_the_slices_last_changed_is_still_listed():
    (lag,) = facts([pod("web-1", "10.244.1.2", ready=False, since=80),
                    pod("web-2", "10.244.2.2")],
                   [endpoint_slice(("web-1", "10.244.1.2"), ("web-2", "10.244.2.2"))])
    assert lag == {"namespace": "default", "name": "web", "service": "default/web",
                   "not_listed": "", "still_listed": "10.244.1.2 (web-1: not Ready)",
                   "differences": 1, "behind_s": 80, "slices_changed_s": 1800}


def test_a_new_ready_pod_missing_and_a_deleted_one_still_there():
    (lag,) = facts([pod("web-2", "10.244.2.2"), pod("web-3", "10.244.3.2", since=70)],
                   [endpoint_slice(("web-1", "10.244.1.2"), ("web-2", "10.244.2.2"))])
    assert lag["not_listed"] == "web-3 10.244.3.2"
    assert lag["still_listed"] == "10.244.1.2 (web-1: gone)"
    # the gone pod says nothing about when; the new one was Ready 70 s ago
    assert (lag["differences"], lag["behind_s"]) == (2, 70)


def test_a_pod_that_changed_before_the_slices_did_is_a_race_between_the_reads_not_lag():
    # web-1 was read Ready (since an hour), then went not Ready and the controller wrote the
    # slice before the slices were read: the slice is newer than the pod list
    assert facts([pod("web-1", "10.244.1.2", since=3600)],
                 [endpoint_slice(not_ready=[("web-1", "10.244.1.2")], changed=1)]) == []


def test_what_the_controller_rightly_leaves_out_is_no_difference():
    pods = [
        pod("web-1", "10.244.1.2"),
        pod("web-2", "10.244.2.2", ready=False, since=30),     # listed as not ready: right
        pod("web-3", "", since=30),                             # no address yet
        pod("web-4", "10.244.4.2", meta={"deletionTimestamp": ago(5)}),  # terminating
        pod("web-5", "10.244.5.2", phase="Succeeded"),          # finished
    ]
    slices = [endpoint_slice(("web-1", "10.244.1.2"), not_ready=[("web-2", "10.244.2.2")])]
    assert facts(pods, slices) == []


def test_a_named_target_port_the_pod_does_not_declare_keeps_it_out():
    p = pod("web-2", "10.244.2.2", since=600)
    p["spec"]["containers"][0]["ports"] = [{"name": "metrics", "containerPort": 9100}]
    assert facts([p], [endpoint_slice()], svc=service("http")) == []
    p["spec"]["containers"][0]["ports"][0]["name"] = "http"
    (lag,) = facts([p], [endpoint_slice()], svc=service("http"))
    assert lag["not_listed"] == "web-2 10.244.2.2"


def test_publish_not_ready_addresses_lists_not_ready_pods_as_ready():
    assert facts([pod("web-1", "10.244.1.2", ready=False, since=80)],
                 [endpoint_slice(("web-1", "10.244.1.2"))],
                 svc=service(publishNotReadyAddresses=True)) == []


def test_slices_someone_else_manages_and_services_without_selector_are_not_judged():
    stale = [pod("web-1", "10.244.1.2", ready=False, since=80)]
    mesh = endpoint_slice(("web-1", "10.244.1.2"), manager="mesh.example.com")
    assert facts(stale, [mesh]) == []
    svc = service()
    del svc["spec"]["selector"]
    assert facts(stale, [endpoint_slice(("web-1", "10.244.1.2"))], svc=svc) == []


def test_a_service_the_controller_never_wrote_a_slice_for():
    (lag,) = facts([pod("web-1", "10.244.1.2", since=60)], [])
    # measured from the pod, and the Service's creation stands for the slices' last change
    assert (lag["not_listed"], lag["behind_s"], lag["slices_changed_s"]) == (
        "web-1 10.244.1.2", 60, 9000)


def lease(renewed: float, holder: str = "cp1_4f1c2d", duration: int = 15) -> dict:
    return {"metadata": {"name": "kube-controller-manager", "namespace": "kube-system"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "acquireTime": ago(86400), "renewTime": ago(renewed)}}


@pytest.mark.parametrize(("renewed", "expired"), [(2.5, -13), (95, 80)])
def test_lease_age_and_expiry_by_the_servers_clock(renewed, expired):
    (got,) = facts([], [], lease=lease(renewed), kind="controller_lease")
    assert got == {"name": "kube-controller-manager", "holder": "cp1_4f1c2d",
                   "holder_node": "cp1", "renewed_s": int(renewed), "duration_s": 15,
                   "expired_s": expired}


def test_a_holder_on_no_known_node_and_a_lease_without_times():
    (got,) = facts([], [], lease=lease(10, holder="ip-10-0-0-5.ec2.internal_9a8b"),
                   kind="controller_lease")
    assert got["holder_node"] is None
    bare = lease(10)
    del bare["spec"]["renewTime"], bare["spec"]["acquireTime"]
    (got,) = facts([], [], lease=bare, kind="controller_lease")
    assert (got["renewed_s"], got["expired_s"]) == (None, None)


class _Resp:
    def __init__(self, date: object) -> None:
        self.headers = {"Date": date} if date is not None else {}


def test_the_answers_date_header_is_the_servers_clock():
    assert _server_date(_Resp("Sun, 06 Dec 2026 05:00:00 GMT")) == "2026-12-06T05:00:00+00:00"
    for bad in (None, "yesterday", "Sun, 06 Dec 2026 05:00:00", 5):
        assert _server_date(_Resp(bad)) is None


def test_slices_that_say_nothing_of_when_they_changed_give_the_difference_no_age():
    # the controller writes no trigger time on its first sync after a restart: a pod that
    # flipped between the collector's two reads looks exactly like one it missed
    sl = endpoint_slice(("web-1", "10.244.1.2"))
    del sl["metadata"]["annotations"]
    (lag,) = facts([pod("web-1", "10.244.1.2", ready=False, since=3600)], [sl])
    assert (lag["still_listed"], lag["behind_s"], lag["slices_changed_s"]) == (
        "10.244.1.2 (web-1: not Ready)", None, None)
