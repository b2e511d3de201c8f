"""Inventory loading, against YAML files written the way SREs write them.

Every error case asserts the exact file and line: during an outage "somewhere in your inventory"
is not an answer.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubenetdiag import inventory
from kubenetdiag.errors import InputError
from kubenetdiag.inventory import MAX_HOSTS, Host, expand_host_pattern, load_inventory

FIX = Path(__file__).parent / "fixtures" / "inventory"


def by_name(hosts: list[Host]) -> dict[str, Host]:
    return {h.name: h for h in hosts}


def load_error(rel: str) -> InputError:
    with pytest.raises(InputError) as info:
        load_inventory(FIX / rel)
    return info.value


# --------------------------------------------------------------------------- a real cluster


@pytest.fixture(scope="module")
def cluster() -> dict[str, Host]:
    return by_name(load_inventory(FIX / "cluster" / "inventory.yml"))


def test_cluster_hosts_in_file_order_each_once() -> None:
    names = [h.name for h in load_inventory(FIX / "cluster" / "inventory.yml")]
    assert names == [
        "cp1.prod.example.com",
        "cp2.prod.example.com",
        "cp3.prod.example.com",
        "node01",
        "node02",
        "node03",
        "node04",
        "node05",
        "bastion.prod.example.com",
    ]


def test_accepts_str_path(cluster: dict[str, Host]) -> None:
    hosts = load_inventory(str(FIX / "cluster" / "inventory.yml"))
    assert by_name(hosts) == cluster


def test_cluster_connection_settings(cluster: dict[str, Host]) -> None:
    cp2 = cluster["cp2.prod.example.com"]
    assert cp2.address == "cp2.prod.example.com"  # no ansible_host: the name is the address
    assert cp2.port == 22
    assert cp2.user == "ops"
    assert cp2.connection == "ssh"
    assert cp2.password is None
    assert cp2.become is False
    # Relative paths are relative to the inventory, not to the current directory.
    assert cp2.key_file == str(FIX / "cluster" / "keys" / "ops_ed25519")
    assert cp2.known_hosts == str(FIX / "cluster" / "known_hosts")
    assert cp2.strict_host_key == "accept-new"
    assert cp2.proxy_jump is None
    assert cp2.groups == ("all", "k8s", "control_plane")
    assert cp2.vars["kube_role"] == "control-plane"
    assert cp2.vars["pod_cidr"] == "10.244.0.0/16"


def test_group_vars_file_overrides_inline_vars_of_same_group(cluster: dict[str, Host]) -> None:
    assert cluster["cp1.prod.example.com"].vars["ntp_server"] == "ntp2.internal"
    assert cluster["node03"].vars["mtu"] == 1450  # group_vars/workers/ beats inline workers vars


def test_group_vars_directory_is_read_in_name_order_skipping_non_vars_files(
    cluster: dict[str, Host],
) -> None:
    # 20-ssh.yaml comes after 10-net.yml; README.md, .swap.yml and 30-old.yml~ are not YAML
    # and would fail to parse if they were read.
    node = cluster["node02"]
    assert node.vars["cni"] == "cilium"
    assert node.proxy_jump == "ops@bastion.prod.example.com:2222"
    assert node.known_hosts == os.path.expanduser("~/.ssh/prod_known_hosts")
    # The workers' args replace the all-level args, which held the accept-new opt-in.
    assert node.strict_host_key == "yes"


def test_host_vars_files_with_and_without_extension(cluster: dict[str, Host]) -> None:
    node01 = cluster["node01"]
    assert node01.address == "10.0.0.101"
    assert node01.become is True  # "yes" as a quoted string, as Ansible accepts it
    assert node01.become_user == "root"
    assert cluster["cp1.prod.example.com"].user == "admin"
    assert cluster["cp2.prod.example.com"].user == "ops"
    assert cluster["node05"].address == "10.0.0.105"


def test_inline_port_and_args(cluster: dict[str, Host]) -> None:
    bastion = cluster["bastion.prod.example.com"]
    assert bastion.port == 2222
    assert bastion.groups == ("all", "bastions")
    assert bastion.known_hosts is None
    assert bastion.strict_host_key == "yes"


def test_vars_are_read_only_and_not_shared(cluster: dict[str, Host]) -> None:
    node = cluster["node02"]
    with pytest.raises(TypeError):
        node.vars["mtu"] = 9000  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.port = 2200  # type: ignore[misc]
    assert hash(node) == hash(cluster["node02"])


# --------------------------------------------------------------------------- precedence


@pytest.fixture(scope="module")
def prec() -> dict[str, Host]:
    return by_name(load_inventory(FIX / "precedence" / "inventory.yml"))


def test_child_group_beats_parent_beats_all(prec: dict[str, Host]) -> None:
    w1 = prec["w1"]
    assert w1.vars["layer"] == "workers"
    assert w1.vars["only_all"] == "a"
    assert w1.vars["only_k8s"] == "k"
    assert w1.groups == ("all", "k8s", "workers")


def test_host_vars_beat_group_vars(prec: dict[str, Host]) -> None:
    assert prec["w3"].vars["layer"] == "host"
    assert prec["w2"].vars["layer"] == "host_vars"  # host_vars/w2.yml beats the inline host var


def test_group_vars_files_follow_ansible_order(prec: dict[str, Host]) -> None:
    # As in ansible-playbook: every group_vars/ file outranks every inline group var, and among
    # files the deeper group wins. workers.yaml is shadowed by workers.yml, as in Ansible.
    w1 = prec["w1"]
    assert w1.vars["shared"] == "file-all"
    assert w1.vars["group_file"] == "workers"


def test_sibling_groups_tie_break_by_name_then_priority(prec: dict[str, Host]) -> None:
    assert prec["t1"].vars["layer"] == "beta"  # beta sorts after alpha, so it wins
    assert prec["t1"].groups == ("all", "alpha", "beta")
    assert prec["t2"].vars["layer"] == "gamma"  # ansible_group_priority: 5 outranks the name


# --------------------------------------------------------------------------- multi-group hosts


def test_host_in_several_groups_is_one_host() -> None:
    hosts = load_inventory(FIX / "multigroup.yml")
    assert [h.name for h in hosts] == ["cp1", "cp2", "node1", "lonely"]
    h = by_name(hosts)
    cp1 = h["cp1"]
    assert cp1.groups == ("all", "control_plane", "etcd")
    assert cp1.vars["etcd_member"] is True
    assert cp1.user == "admin"
    assert cp1.address == "192.168.0.11"  # the later host entry wins, as in Ansible
    assert h["cp2"].groups == ("all", "control_plane", "etcd")
    assert h["node1"].groups == ("all", "workers")
    assert h["lonely"].groups == ("all", "ungrouped")


# --------------------------------------------------------------------------- ranges and ports


def test_range_fixture_names_and_ports() -> None:
    hosts = load_inventory(FIX / "ranges.yml")
    assert [(h.name, h.port) for h in hosts] == [
        ("node01", 22),
        ("node02", 22),
        ("node03", 22),
        ("db1", 22),
        ("db5", 22),
        ("db9", 22),
        ("racka-n1", 22),
        ("racka-n2", 22),
        ("rackb-n1", 22),
        ("rackb-n2", 22),
        ("edge08.example.com", 2222),
        ("edge09.example.com", 2222),
        ("edge10.example.com", 2222),
        ("10.0.0.1", 22),
        ("10.0.0.2", 22),
        ("fd00::10", 2200),
        ("fd00::20", 22),
        ("gpu09", 22),
        ("gpu12", 22),
        ("webA", 22),
        ("webB", 22),
        ("plain", 2200),
    ]
    assert by_name(hosts)["edge09.example.com"].vars["ansible_port"] == 2222


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("node1", ["node1"]),
        ("node[1:3]", ["node1", "node2", "node3"]),
        ("node[08:11]", ["node08", "node09", "node10", "node11"]),
        ("n[001:003]", ["n001", "n002", "n003"]),
        ("n[8:11]", ["n8", "n9", "n10", "n11"]),
        ("n[01:20:9]", ["n01", "n10", "n19"]),
        ("n[:2]", ["n0", "n1", "n2"]),
        ("[x:z]-gw", ["x-gw", "y-gw", "z-gw"]),
        ("r[a:e:2]", ["ra", "rc", "re"]),
        ("r[1:2]n[a:b]", ["r1na", "r1nb", "r2na", "r2nb"]),
        ("n[5:5]", ["n5"]),
    ],
)
def test_expand_host_pattern(pattern: str, expected: list[str]) -> None:
    assert expand_host_pattern(pattern) == expected


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("n[01:100]", "different widths"),
        ("n[1:010]", "different widths"),
        ("n[3:1]", "backwards"),
        ("n[c:a]", "backwards"),
        ("n[a:C]", "upper and lower case"),
        ("n[1:c]", "bad host range"),
        ("n[1-3]", "bad host range"),
        ("n[1:3:0]", "bad step"),
        ("n[1:3:x]", "bad step"),
        ("n[1:2:3:4]", "bad host range"),
        ("n[1:3", "unbalanced"),
        ("n1:3]", "unbalanced"),
        ("n[0:99999999]", "limit"),
    ],
)
def test_bad_patterns(pattern: str, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        expand_host_pattern(pattern)
    assert fragment in info.value.message
    assert info.value.hint


@given(
    start=st.integers(0, 5000),
    length=st.integers(0, 400),
    step=st.integers(1, 25),
    extra_width=st.integers(0, 3),
)
def test_numeric_range_yields_expected_count(
    start: int, length: int, step: int, extra_width: int
) -> None:
    end = start + length
    width = len(str(end)) + extra_width
    pattern = f"n[{str(start).zfill(width)}:{str(end).zfill(width)}:{step}].lab"
    names = expand_host_pattern(pattern)
    assert len(names) == length // step + 1
    assert names == [f"n{str(v).zfill(width)}.lab" for v in range(start, end + 1, step)]


@given(
    first=st.integers(0, 25),
    span=st.integers(0, 25),
    step=st.integers(1, 5),
    upper=st.booleans(),
    numbers=st.integers(1, 30),
)
def test_letter_and_combined_ranges_multiply(
    first: int, span: int, step: int, upper: bool, numbers: int
) -> None:
    last = min(first + span, 25)
    base = ord("A" if upper else "a")
    letters = f"[{chr(base + first)}:{chr(base + last)}:{step}]"
    letter_count = (last - first) // step + 1
    assert len(expand_host_pattern(f"rack{letters}")) == letter_count
    names = expand_host_pattern(f"rack{letters}-n[1:{numbers}]")
    assert len(names) == letter_count * numbers
    assert len(set(names)) == len(names)


@given(start=st.integers(1, 99), zeros=st.integers(1, 6), end_digits=st.integers(2, 4))
def test_zero_padded_widths_must_match(start: int, zeros: int, end_digits: int) -> None:
    begin = "0" * zeros + str(start)  # a leading zero makes the width significant
    end = "9" * end_digits
    if len(begin) == len(end):
        assert len(expand_host_pattern(f"n[{begin}:{end}]")) == int(end) - start + 1
    else:
        with pytest.raises(InputError, match="different widths"):
            expand_host_pattern(f"n[{begin}:{end}]")


# --------------------------------------------------------------------------- ssh settings


@pytest.fixture(scope="module")
def conn() -> dict[str, Host]:
    return by_name(load_inventory(FIX / "connections.yml"))


def test_local_connection(conn: dict[str, Host]) -> None:
    assert conn["localhost"].connection == "local"
    assert conn["jumpy"].connection == "ssh"


def test_jump_flag_and_quoted_option(conn: dict[str, Host]) -> None:
    jumpy = conn["jumpy"]
    assert jumpy.proxy_jump == "ops@jump.example.com"
    assert jumpy.known_hosts == "/etc/kubenetdiag/known_hosts"
    assert jumpy.become is True
    assert jumpy.key_file == os.path.expanduser("~/.ssh/id_ed25519")


def test_option_value_as_separate_word(conn: dict[str, Host]) -> None:
    assert conn["spaced"].known_hosts == "/srv/known_hosts"
    assert conn["spaced"].strict_host_key == "accept-new"


def test_ssh_spellings_and_string_values(conn: dict[str, Host]) -> None:
    spelled = conn["spelled"]
    assert spelled.address == "10.1.1.1"
    assert spelled.user == "core"
    assert spelled.port == 2200
    assert spelled.proxy_jump == "bastion"
    assert spelled.strict_host_key == "yes"  # `ask` cannot be answered in a batch run
    assert spelled.become is False


def test_first_ssh_option_wins_like_ssh(conn: dict[str, Host]) -> None:
    assert conn["override"].strict_host_key == "accept-new"


# --------------------------------------------------------------------------- secrets


def test_to_dict_redacts_secrets_and_is_json_safe() -> None:
    node1 = by_name(load_inventory(FIX / "secrets.yml"))["node1"]
    assert node1.password == "hunter2-secret-0"  # still usable by the collector
    d = node1.to_dict()
    text = json.dumps(d)
    assert "secret-" not in text
    assert d["password"] == "***"
    assert d["vars"]["ansible_password"] == "***"
    assert d["vars"]["ansible_become_pass"] == "***"
    assert d["vars"]["k8s_api_token"] == "***"
    assert d["vars"]["registry"] == {"url": "registry.internal", "password": "***"}
    assert d["vars"]["cert_blob"] == "***"
    assert d["vars"]["provisioned_on"] == "2024-05-01"
    assert d["name"] == "node1"
    assert d["groups"] == ["all", "ungrouped"]


def test_to_dict_without_password() -> None:
    node2 = by_name(load_inventory(FIX / "secrets.yml"))["node2"]
    d = node2.to_dict()
    assert d["password"] is None
    assert "ansible_password" not in d["vars"]


def test_repr_and_str_never_show_secrets() -> None:
    hosts = load_inventory(FIX / "secrets.yml")
    for text in (repr(hosts), str(hosts[0]), f"{hosts[0]}", f"{hosts[0]!r}"):
        assert "secret-" not in text
    assert "node1" in repr(hosts[0])


# --------------------------------------------------------------------------- errors

ERRORS = [
    # (inventory, file the error must name (None: the inventory), line, message, hint)
    ("errors/not_mapping.yml", None, 2, "must be a mapping of group names", "all:"),
    ("errors/host_under_group.yml", None, 4, "only hosts, vars, children", "under `hosts:`"),
    ("errors/typo_key.yml", None, 4, "unexpected key 'host'", "did you mean `hosts:`"),
    ("errors/range_padding.yml", None, 4, "different widths", "[001:100]"),
    ("errors/range_backwards.yml", None, 5, "runs backwards", "START <= END"),
    ("errors/range_syntax.yml", None, 3, "bad host range [1-5]", "[START:END]"),
    ("errors/range_mixed.yml", None, 3, "bad host range [1:c]", "single letters"),
    ("errors/port_suffix.yml", None, 4, "port '70000'", "NAME:PORT"),
    ("errors/port_var.yml", None, 6, "ansible_port 'ssh' is not an integer 1-65535", "2222"),
    ("errors/no_hosts.yml", None, None, "no hosts", "hosts:"),
    ("errors/empty.yml", None, None, "empty", "hosts:"),
    ("errors/ini/hosts", None, 4, "INI inventory", "--list -y"),
    ("errors/ini/flat", None, 1, "INI inventory", "ansible-inventory -i"),
    ("errors/vault_value.yml", None, 5, "Vault", "ssh-agent"),
    ("errors/vault_json.yml", None, 5, "Vault", "ansible_ssh_private_key_file"),
    ("errors/vault_file/inventory.yml", "errors/vault_file/group_vars/all.yml", 1, "Vault", "key"),
    ("errors/cycle.yml", None, 9, "group cycle: workers -> k8s -> workers", "remove 'k8s'"),
    ("errors/all_child.yml", None, 7, "`all` is listed as a child", "remove it"),
    ("errors/strict_no.yml", None, 7, "StrictHostKeyChecking=no", "accept-new"),
    (
        "errors/strict_group_vars/inventory.yml",
        "errors/strict_group_vars/group_vars/workers.yml",
        3,
        "StrictHostKeyChecking=off",
        "never accepts unknown host keys silently",
    ),
    ("errors/host_key_checking.yml", None, 3, "turns off host key checking", "accept-new"),
    ("errors/hosts_list.yml", None, 4, "not a list", "node1:"),
    ("errors/host_scalar.yml", None, 4, "host 'node2'", "ansible_host: 10.0.0.2"),
    ("errors/connection_winrm.yml", None, 4, "'winrm' is not supported", "ssh or local"),
    ("errors/numeric_password.yml", None, 5, "ansible_password must be text", "quotes"),
    ("errors/template_host.yml", None, 6, "Jinja template", "literal value"),
    ("errors/top_level_hosts.yml", None, 1, "top-level keys are group names", "all:"),
    ("errors/plugin.yml", None, 1, "amazon.aws.aws_ec2", "--list -y"),
    ("errors/duplicate_host.yml", None, 5, "duplicate key 'node1'", "merge"),
    ("errors/conflicting_ports.yml", None, 8, "port 2200 here and with port 2222", "one port"),
    ("errors/boolean_host.yml", None, 4, "not text", "quote it"),
    ("errors/become_word.yml", None, 4, "'maybe'", "yes or no"),
    ("errors/tab_indent.yml", None, 3, "YAML syntax error", "tabs"),
    ("errors/bad_quotes.yml", None, 4, "No closing quotation", "quotes"),
]


@pytest.mark.parametrize(
    ("rel", "error_file", "line", "message", "hint"), ERRORS, ids=[e[0] for e in ERRORS]
)
def test_errors_name_file_line_and_hint(
    rel: str, error_file: str | None, line: int | None, message: str, hint: str, monkeypatch
) -> None:
    # what a machine without ansible-core says (with it, INI, vault and plugin inventories are
    # read through Ansible: tests/test_inventory_ansible.py)
    monkeypatch.setattr(inventory, "ansible_available", lambda: False)
    err = load_error(rel)
    assert err.file == str(FIX / (error_file or rel))
    assert err.line == line
    assert message in err.message
    assert hint in err.hint


def test_password_error_does_not_echo_the_value() -> None:
    text = str(load_error("errors/numeric_password.yml"))
    assert "012345" not in text and "5349" not in text  # YAML reads 012345 as octal 5349


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "inventory.yml"
    with pytest.raises(InputError) as info:
        load_inventory(missing)
    assert str(missing) in str(info.value)


def test_unknown_variables_are_kept() -> None:
    node = by_name(load_inventory(FIX / "cluster" / "inventory.yml"))["node04"]
    assert node.vars["cni"] == "cilium"
    assert node.vars["ntp_server"] == "ntp2.internal"


def test_range_limit_is_generous() -> None:
    assert MAX_HOSTS >= 10_000
    assert len(expand_host_pattern("n[1:10000]")) == 10_000


def test_host_patterns_are_limited_in_all_not_only_each(tmp_path) -> None:
    """30 patterns of 100,000 hosts each used to expand to 3 million (149 s, 2.9 GB)."""
    lines = ["all:", "  hosts:"] + [f"    g{i}-n[1:100000]:" for i in range(30)]
    inv = tmp_path / "hosts.yaml"
    inv.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        load_inventory(inv)
    err = info.value
    assert "more than 100000 hosts in all" in err.message
    assert err.file == str(inv) and err.line == 4  # the pattern that crosses the limit
