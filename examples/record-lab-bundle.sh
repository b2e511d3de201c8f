#!/usr/bin/env bash
# Re-record examples/bundles/lab-three-faults from a real lab (root, Linux; the kubenetdiag-lab
# package, `pip install -e ./lab`; see tests/conftest.py).
# Three nodes; node1 gets a REJECT at the top of FORWARD, node2 has IP forwarding turned off,
# node3's sshd is stopped. The bundle is collected over SSH from the lab's client namespace,
# with the active phase (pings, DNS, TCP between the nodes: the report's connectivity heatmap),
# then the README's pictures are taken again from it (needs chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/knd-example.XXXXXX)
out=examples/bundles/lab-three-faults
lab() { python3 -m kubenetdiag_lab "$@" --workdir "$work"; }
trap 'lab down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

lab up --nodes 3 --cni flannel-vxlan --prefix kndex >/dev/null
lab inject forward_chain_reject --node node1
lab inject ip_forward_disabled --node node2
lab inject node_unreachable --node node3
rm -rf "$out"
ip netns exec kndex-client python3 -m kubenetdiag collect --inventory "$work/hosts.yaml" \
  --kubeconfig "$work/kubeconfig" -o "$out" --quiet --connect-timeout 5 --active
# Keep the bundle independent of this machine's temporary paths.
python3 - "$out" <<'PY'
import json, sys, pathlib
meta = pathlib.Path(sys.argv[1]) / "meta.json"
m = json.loads(meta.read_text()); m["inventory"] = "hosts.yaml"
meta.write_text(json.dumps(m, indent=1) + "\n")
cluster = pathlib.Path(sys.argv[1]) / "cluster.json"
if cluster.exists():
    c = json.loads(cluster.read_text())
    if c.get("source"):
        c["source"]["kubeconfig"] = "kubeconfig"
    cluster.write_text(json.dumps(c, indent=1) + "\n")
PY
python3 -m kubenetdiag analyze "$out" --format text >/dev/null || true
echo "recorded $out"
python3 -m kubenetdiag.screenshot "$out" docs/report.png
python3 -m kubenetdiag.screenshot "$out" docs/report-zh-CN.png --lang zh-CN
