"""A clone out of the collector's reach, recorded from the lab's scenario suite: node3's eth0
given node1's MAC and announced (`lab inject underlay_mac_duplicate --node node3`), so the
switch hands that MAC's frames to whichever of the two sent last. The collector never got
through to node3. Before its peers' neighbour tables were read for it, the report said only
that node3 was unreachable and cut off; node2's table holds node1's and node3's addresses
behind one MAC, which is node1's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kubenetdiag.cli import main

BUNDLE = Path(__file__).parent / "fixtures" / "bundles" / "lab-mac-clone-unreached"


def _analyze(bundle: Path) -> dict:
    out = bundle.parent / "r.json"
    assert main(["analyze", str(bundle), "--format", "json", "--report", str(out)]) == 1
    return json.loads(out.read_text())


def test_both_nodes_sharing_the_mac_are_named_although_the_clone_was_not_reached(tmp_path):
    bundle = tmp_path / BUNDLE.name
    shutil.copytree(BUNDLE, bundle)
    report = _analyze(bundle)
    roots = [(f["fault"], f["nodes"]) for f in report["findings"] if f["root_cause"]]
    assert roots == [("underlay_mac_duplicate", ["node1", "node3"])]
    (shared,) = [f for f in report["findings"] if f["rule"] == "underlay-mac-shared-by-nodes"]
    seen = {e["node"]: e["attrs"]["seen"] for e in shared["evidence"] if e["kind"] == "shared_mac"}
    assert seen == {"node1": "its eth0",
                    "node3": "node2's neighbour entry for its address 198.18.0.13"}
    # node3 is still reported as out of reach, as the consequence it is
    (lost,) = [f for f in report["findings"] if f["fault"] == "node_unreachable"]
    assert lost["nodes"] == ["node3"] and lost["explained_by"] == ["underlay-mac-shared-by-nodes"]


def test_without_the_peers_neighbour_tables_the_clone_is_only_unreachable(tmp_path):
    # the same bundle as an older version recorded it: the overlay sections without node2's
    # dynamic entries, so nothing says whose MAC node3's address answers to
    bundle = tmp_path / BUNDLE.name
    shutil.copytree(BUNDLE, bundle)
    path = bundle / "nodes" / "node2.json"
    record = json.loads(path.read_text())
    for section in record["sections"]:
        if section["probe"] == "overlay":
            head, _, rest = section["stdout"].partition("##knd:neighbours json\n")
            entries, _, tail = rest.partition("\n")
            kept = [e for e in json.loads(entries) if e["dev"] != "eth0"]
            section["stdout"] = f"{head}##knd:neighbours json\n{json.dumps(kept)}\n{tail}"
    path.write_text(json.dumps(record))
    report = _analyze(bundle)
    roots = [(f["fault"], f["nodes"]) for f in report["findings"] if f["root_cause"]]
    assert roots == [("node_unreachable", ["node3"])]
