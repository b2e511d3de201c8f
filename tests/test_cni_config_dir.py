"""Which CNI configuration directory the cni probe reads: the one the container runtime's own
configuration names (k3s and RKE2 generate a containerd configuration whose conf_dir is not
/etc/cni/net.d), else the default. The probe's real command runs under dash with its paths moved
into a temporary directory."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes import BY_NAME
from kubenetdiag.probes.base import Section
from kubenetdiag.probes.cni import CNI_DIR, COMMAND, RUNTIME_CONFIGS
from probe_sections import section

PROBE = BY_NAME["cni"]
K3S, RKE2, CONTAINERD = RUNTIME_CONFIGS
K3S_DIR = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
CONFLIST = '{"name": "cbr0", "cniVersion": "1.0.0", "plugins": [{"type": "flannel"}]}\n'


def run(root: Path, files: dict[str, str]) -> tuple[list[Fact], str]:
    """The probe's command with every absolute path it reads under `root`, on those files
    (`@ROOT@` in a file's text stands for root)."""
    for path, text in files.items():
        target = root / path.lstrip("/")
        if path.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text.replace("@ROOT@", str(root)))  # a named directory, moved too
    # each path where it starts, not inside another (k3s's ends in /etc/containerd/...)
    paths = sorted((*RUNTIME_CONFIGS, CNI_DIR), key=len, reverse=True)
    command = re.sub(r"(?<![\w/])(" + "|".join(map(re.escape, paths)) + ")",
                     lambda m: f"{root}{m.group(1)}", COMMAND)
    proc = subprocess.run(["dash", "-c", f"f() {{ {command}; }}; f"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.replace(str(root), "")
    return PROBE.parse(Section("cni", COMMAND, 0, 0.0, out, ""), "node1"), out


def _dir(facts: list[Fact]) -> dict:
    return next(f.attrs for f in facts if f.kind == "cni_config_dir")


def test_k3s_names_its_own_directory_and_an_empty_default_is_not_read(tmp_path: Path):
    facts, _ = run(tmp_path, {
        K3S: ('[plugins."io.containerd.grpc.v1.cri".cni]\n'
              '  bin_dir = "/var/lib/rancher/k3s/data/current/bin"\n'
              f'  conf_dir = "@ROOT@{K3S_DIR}"\n'),
        CONTAINERD: '# conf_dir = "/opt/elsewhere"\n',
        f"{K3S_DIR}/10-flannel.conflist": CONFLIST,
        f"{CNI_DIR}/": ""})  # left behind empty, which the runtime does not read
    d = _dir(facts)
    assert (d["dir"], d["configured_in"], d["exists"], d["config_files"], d["active_file"]) == (
        K3S_DIR, K3S, True, 1, f"{K3S_DIR}/10-flannel.conflist")


def test_containerd_2_single_quotes_and_no_spaces(tmp_path: Path):
    facts, _ = run(tmp_path, {
        CONTAINERD: ("version = 3\n[plugins.'io.containerd.cri.v1.runtime'.cni]\n"
                     "\tconf_dir='@ROOT@/etc/kubernetes/cni/net.d'\n"),
        "/etc/kubernetes/cni/net.d/10-calico.conflist": CONFLIST})
    d = _dir(facts)
    assert (d["dir"], d["configured_in"], d["config_files"]) == (
        "/etc/kubernetes/cni/net.d", CONTAINERD, 1)


def test_a_last_line_without_its_newline_is_read(tmp_path: Path):
    facts, _ = run(tmp_path, {CONTAINERD: '[plugins."io.containerd.grpc.v1.cri".cni]\n'
                                          '  conf_dir = "@ROOT@/opt/cni/conf"',
                              "/opt/cni/conf/10-bridge.conf": CONFLIST})
    assert (_dir(facts)["dir"], _dir(facts)["config_files"]) == ("/opt/cni/conf", 1)


def test_no_runtime_configuration_or_none_naming_a_directory_is_the_default(tmp_path: Path):
    facts, _ = run(tmp_path, {CONTAINERD: 'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n',
                              RKE2: 'conf_dir = ""\n', f"{CNI_DIR}/10-flannel.conflist": CONFLIST})
    d = _dir(facts)
    assert (d["dir"], d["configured_in"], d["config_files"]) == (CNI_DIR, None, 1)
    facts, out = run(tmp_path / "bare", {})
    assert "##knd:nodir" in out and _dir(facts)["exists"] is False


def test_a_k3s_node_as_the_probe_prints_it():
    # tests/fixtures/probes/cni/k3s-conf-dir.txt: written in the probe's output form
    facts = PROBE.parse(section("cni", "k3s-conf-dir"), "node1")
    conf = next(f.attrs for f in facts if f.kind == "cni_config")
    assert (conf["file"], conf["primary_type"], conf["types"]) == (
        f"{K3S_DIR}/10-flannel.conflist", "flannel", "flannel,portmap,bandwidth")
    d = _dir(facts)
    assert (d["dir"], d["configured_in"], d["active_file"]) == (K3S_DIR, K3S, conf["file"])
    assert next(f for f in facts if f.kind == "cni_config_dir").source.command == f"ls {K3S_DIR}"


def test_bundles_from_before_name_the_default():
    facts = PROBE.parse(section("cni", "calico-secrets-redacted"), "node1")
    assert (_dir(facts)["dir"], _dir(facts)["configured_in"]) == (CNI_DIR, None)
