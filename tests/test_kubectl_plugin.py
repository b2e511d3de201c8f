"""`kubectl netdiag ...`: kubectl's plugin convention (an executable `kubectl-netdiag` on PATH,
given the words after `netdiag`), reading the kubeconfig kubectl reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

from kubenetdiag.cli import build_parser, kubectl_kubeconfig

ROOT = Path(__file__).resolve().parent.parent


def _plugin(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    code = ("import sys; from kubenetdiag.cli import kubectl_main; "
            f"sys.argv = ['kubectl-netdiag', *{list(args)!r}]; sys.exit(kubectl_main())")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={"HOME": str(home), "PATH": "/usr/bin:/bin"})


def test_the_plugin_is_installed_under_kubectls_name():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl-netdiag"] == "kubenetdiag.entry:kubectl_main"


def test_with_no_command_it_diagnoses_and_says_so_as_kubectl_netdiag(tmp_path):
    proc = _plugin("--help", home=tmp_path)
    assert proc.returncode == 0 and "usage: kubectl netdiag" in proc.stdout
    proc = _plugin("--inventory", str(tmp_path / "missing.yaml"), home=tmp_path)
    # diagnose ran and refused the inventory, naming it
    assert proc.returncode == 2 and "missing.yaml" in proc.stderr, proc.stderr


def _args(*argv: str):
    return build_parser().parse_args(["diagnose", "--local", *argv])


def test_it_reads_kubectls_kubeconfig_unless_told_otherwise(tmp_path):
    config = tmp_path / ".kube" / "config"
    config.parent.mkdir()
    config.write_text("apiVersion: v1\nkind: Config\n")
    args = _args()
    kubectl_kubeconfig(args, {}, tmp_path)
    assert args.kubeconfig == str(config)
    # --kubeconfig, $KUBECONFIG and --in-cluster each win, as they do for kubectl
    for argv, env in ((["--kubeconfig", "/x"], {}), ([], {"KUBECONFIG": "/y"}),
                      (["--in-cluster"], {})):
        args = _args(*argv)
        kubectl_kubeconfig(args, env, tmp_path)
        assert args.kubeconfig in (None, "/x")
    # no kubeconfig at all: the API is not asked, as before
    args = _args()
    kubectl_kubeconfig(args, {}, tmp_path / "elsewhere")
    assert args.kubeconfig is None
