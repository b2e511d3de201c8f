"""The rule linter: every problem names its file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kubenetdiag.cli import main
from kubenetdiag.engine import RuleErrors, lint_paths, load_ruleset
from kubenetdiag.errors import InputError

GOOD = """\
rules:
  - id: good
    fault: good_fault
    severity: warning
    title: {en: "good on {node}", zh-CN: "{node} 上的 good"}
    when:
      - sysctl: {node: $node, key: k, number: 0}
    tests:
      - name: fires
        facts:
          - sysctl: {node: n1, key: k, value: "0", number: 0, present: true}
        expect:
          - {nodes: [n1]}
      - name: quiet
        facts: []
        expect: []
"""


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def lint(tmp_path: Path, text: str) -> tuple[Path, list[InputError]]:
    p = write(tmp_path, text)
    return p, lint_paths([p], with_shipped=False)


def where(problems: list[InputError]) -> list[tuple[str, int | None, str]]:
    return [(Path(e.file).name if e.file else "", e.line, e.message) for e in problems]


def one(problems: list[InputError], needle: str) -> InputError:
    hits = [e for e in problems if needle in e.message]
    assert len(hits) == 1, where(problems)
    return hits[0]


def test_good_file_is_clean(tmp_path):
    _, problems = lint(tmp_path, GOOD)
    assert problems == []


def test_shipped_rules_are_clean():
    assert lint_paths([], with_shipped=True) == []


def test_a_file_edited_after_a_clean_lint_is_checked_again(tmp_path):
    # the schema's clean verdicts are remembered by content: an author's next save is new
    # content, and a broken file is reported on every run, not once
    assert lint(tmp_path, GOOD)[1] == []
    broken = GOOD.replace("severity: warning", "severity: loud")
    for _ in range(2):
        p, problems = lint(tmp_path, broken)
        assert (one(problems, "loud").file, one(problems, "loud").line) == (str(p), 4)
    assert lint(tmp_path, GOOD)[1] == []


def test_yaml_syntax_error(tmp_path):
    p, problems = lint(tmp_path, GOOD.replace("    severity: warning", "   severity: warning"))
    (e,) = problems
    assert (e.file, e.line) == (str(p), 4)
    assert "YAML syntax error" in e.message


def test_unknown_field(tmp_path):
    p, problems = lint(tmp_path, GOOD.replace("    severity: warning\n",
                                              "    severity: warning\n    severty: error\n"))
    e = one(problems, "unknown field 'severty'")
    assert (e.file, e.line) == (str(p), 5)
    assert "severity" in e.hint


def test_bad_enum_and_missing_severity(tmp_path):
    p, problems = lint(tmp_path, GOOD.replace("severity: warning", "confidence: sure"))
    assert (one(problems, "'sure' is not one of").line) == 4
    assert one(problems, "'fault' needs 'severity'").line == 3


def test_unknown_operator(tmp_path):
    _, problems = lint(tmp_path, GOOD.replace("number: 0}", "number: {gtt: 0}}"))
    assert one(problems, "unknown field 'gtt'").line == 7


def test_bad_kind_key_and_two_kinds_in_one_condition(tmp_path):
    text = GOOD.replace("- sysctl: {node: $node", "- Sysctl: {node: $node")
    _, problems = lint(tmp_path, text)
    assert one(problems, "'Sysctl' is not a valid key").line == 7
    text = GOOD.replace(
        "      - sysctl: {node: $node, key: k, number: 0}\n",
        "      - sysctl: {node: $node, key: k, number: 0}\n        kernel: {node: $node}\n",
    )
    _, problems = lint(tmp_path, text)
    assert one(problems, "expected exactly one key").line == 7


def test_unknown_fact_kind(tmp_path):
    p, problems = lint(tmp_path, GOOD.replace("- sysctl: {node: $node", "- sysctlz: {node: $node"))
    e = one(problems, "unknown fact kind 'sysctlz'")
    assert (e.file, e.line) == (str(p), 7)


def test_unknown_attribute(tmp_path):
    p, problems = lint(
        tmp_path,
        GOOD.replace(
            "      - sysctl: {node: $node, key: k, number: 0}\n",
            "      - sysctl:\n          node: $node\n          key: k\n          nmber: 0\n",
        ),
    )
    e = one(problems, "unknown attribute 'nmber'")
    assert (e.file, e.line) == (str(p), 10)
    assert "number" in e.hint


def test_literal_type_mismatch(tmp_path):
    text = GOOD.replace("number: 0}\n    tests", "present: maybe}\n    tests")
    _, problems = lint(tmp_path, text)
    assert one(problems, "present is a bool").line == 7


def test_unbound_variables(tmp_path):
    text = GOOD.replace('"good on {node}"', '"good on {nod}"')
    text = text.replace("number: 0}\n    tests", "number: {gt: $limit}}\n    on: $where\n    tests")
    p, problems = lint(tmp_path, text)
    assert one(problems, "{nod}").line == 5
    assert one(problems, "$limit is used before it is bound").line == 7
    assert one(problems, "on: $where").line == 8
    assert all(e.file == str(p) for e in problems)


def test_variable_from_negation_is_not_visible_outside(tmp_path):
    text = GOOD.replace(
        "      - sysctl: {node: $node, key: k, number: 0}\n",
        "      - sysctl: {node: $node, key: k, number: 0}\n"
        "      - not: {iptables_rule: {node: $node, chain: $chain}}\n"
        "    assert:\n"
        "      - symptom: {node: $node, name: x, target: $chain}\n",
    )
    _, problems = lint(tmp_path, text)
    assert one(problems, "$chain is not bound").line == 10


def test_assert_of_non_derived_kind(tmp_path):
    text = GOOD.replace(
        "    tests:",
        "    assert:\n      - sysctl: {node: $node, key: x, present: true}\n    tests:",
    )
    _, problems = lint(tmp_path, text)
    assert one(problems, "sysctl is not a derived kind").line == 9


def test_duplicate_id_across_files(tmp_path):
    a = write(tmp_path, GOOD, "a.yaml")
    b = write(tmp_path, GOOD, "b.yaml")
    problems = lint_paths([tmp_path], with_shipped=False)
    e = one(problems, "duplicate rule id 'good'")
    assert (e.file, e.line) == (str(b), 2)
    assert f"{a}:2" in e.hint


def test_missing_tests(tmp_path):
    p, problems = lint(tmp_path, GOOD.split("    tests:")[0])
    fires = one(problems, "has no test in which it fires")
    quiet = one(problems, "has no test in which it must not fire")
    assert (fires.file, fires.line) == (str(p), 2)
    assert quiet.line == 2


def test_only_a_firing_test_is_not_enough(tmp_path):
    text = GOOD.replace("      - name: quiet\n        facts: []\n        expect: []\n", "")
    _, problems = lint(tmp_path, text)
    assert one(problems, "must not fire").line == 8


def test_test_facts_must_match_registry(tmp_path):
    text = GOOD.replace(
        '- sysctl: {node: n1, key: k, value: "0", number: 0, present: true}',
        '- sysctl: {node: n1, key: k, value: 0, number: 0, presnt: true}',
    )
    _, problems = lint(tmp_path, text)
    assert one(problems, "sysctl.value: 0 is not a str").line == 11
    assert one(problems, "unknown attribute 'presnt'").line == 11
    assert one(problems, "needs 'present'").line == 11


def test_expect_of_another_fault(tmp_path):
    _, problems = lint(tmp_path, GOOD.replace("- {nodes: [n1]}", "- {fault: other, nodes: [n1]}"))
    assert one(problems, "always have fault 'good_fault'").line == 13


def test_bad_variable_name_and_dollar_escape(tmp_path):
    _, problems = lint(tmp_path, GOOD.replace("key: k,", "key: $1bad,"))
    assert one(problems, "not a valid variable name").line == 7
    _, problems = lint(tmp_path, GOOD.replace("key: k,", "key: $$literal,"))
    assert problems == []


def test_empty_file_and_wrong_top_level(tmp_path):
    _, problems = lint(tmp_path, "")
    assert one(problems, "empty").line == 1
    _, problems = lint(tmp_path, "- id: x\n")
    assert one(problems, "expected a mapping").line == 1


def test_all_problems_are_reported_together(tmp_path):
    text = GOOD.replace("sysctl: {node: $node", "sysctlz: {node: $node")
    text += (
        "  - id: second\n"
        "    fault: f2\n"
        "    severity: info\n"
        '    title: "{unbound}"\n'
        "    when:\n"
        "      - sysctl: {node: $node, nope: 1}\n"
    )
    _, problems = lint(tmp_path, text)
    assert [e.line for e in problems] == sorted(e.line for e in problems)
    assert one(problems, "unknown fact kind 'sysctlz'").line == 7
    assert one(problems, "{unbound} names no variable").line == 20
    assert one(problems, "unknown attribute 'nope'").line == 22
    assert one(problems, "rule second has no test in which it fires").line == 17


def test_load_refuses_broken_rules_with_locations(tmp_path):
    write(tmp_path, GOOD.replace("sysctl: {node: $node", "sysctlz: {node: $node"))
    with pytest.raises(RuleErrors) as exc:
        load_ruleset([tmp_path], shipped=False)
    (e,) = exc.value.errors
    assert e.line == 7 and e.file.endswith("rules.yaml")
    assert "rules.yaml:7" in str(exc.value)


def test_load_does_not_require_tests(tmp_path):
    write(tmp_path, GOOD.split("    tests:")[0])
    rs = load_ruleset([tmp_path], shipped=False)
    assert [r.id for r in rs.rules] == ["good"]


def test_missing_rules_dir(tmp_path):
    with pytest.raises(RuleErrors, match="not found"):
        load_ruleset([tmp_path / "nope"], shipped=False)


def test_missing_chinese_text_is_a_lint_problem(tmp_path):
    # Issue 7: every operator-facing text exists in both report languages.
    text = GOOD.replace('{en: "good on {node}", zh-CN: "{node} 上的 good"}', '"good on {node}"')
    _, problems = lint(tmp_path, text)
    assert one(problems, "has no zh-CN text").line == 5


def when(*patterns: str, title: str = "good on {node}", command: str = "") -> str:
    """GOOD with its `when` replaced by `patterns` (and a remediation command, if given)."""
    text = GOOD.replace("      - sysctl: {node: $node, key: k, number: 0}\n",
                        "".join(f"      - {p}\n" for p in patterns))
    text = text.replace('{en: "good on {node}", zh-CN: "{node} 上的 good"}',
                        f'{{en: "{title}", zh-CN: "{title}"}}')
    if command:
        text = text.replace(
            "    tests:\n",
            "    remediate:\n      - text: {en: read it, zh-CN: 读取}\n"
            f"        command: '{command}'\n        changes_state: false\n    tests:\n",
        )
    return text


def test_a_fact_constrained_in_one_pattern_and_bound_in_another_is_rejected(tmp_path):
    # The idiom the guide used to teach: $limit can come from any sysctl on the node with key k,
    # including one whose number is not below 1024.
    p, problems = lint(tmp_path, when(
        "sysctl: {node: $node, key: k, number: {lt: 1024}}",
        "sysctl: {node: $node, key: k, number: $limit}",
        title="{limit} on {node}",
    ))
    e = one(problems, "written twice")
    assert (e.file, e.line) == (str(p), 8)  # the second pattern
    assert "line 7" in e.message and "$limit" in e.message
    assert "number: {lt: 1024, bind: $limit}" in e.hint
    # The linter's business only: the rule still loads and runs as written.
    load_ruleset([p], shipped=False)


def test_binding_first_and_constraining_after_is_the_same_idiom(tmp_path):
    p, problems = lint(tmp_path, when(
        "sysctl: {node: $node, key: k, number: $limit}",
        "sysctl: {node: $node, key: k, number: {lt: 1024}}",
        title="{limit} on {node}",
    ))
    e = one(problems, "written twice")
    assert e.line == 8
    assert "number: {lt: 1024, bind: $limit}" in e.hint


def test_the_bind_form_is_clean_and_binds_what_it_constrains(tmp_path):
    _, problems = lint(tmp_path, when(
        "sysctl: {node: $node, key: k, number: {lt: 1024, bind: $limit}}",
        title="{limit} on {node}",
    ))
    assert problems == []


def test_two_different_facts_told_apart_are_not_the_idiom(tmp_path):
    # Different nodes (a join on another variable), different keys (literals), and a value
    # compared with the other fact's ($a against {ne: $a}): each says two facts are meant.
    for patterns in [
        ("sysctl: {node: $node, key: k, number: {lt: 1024}}",
         "sysctl: {node: $other, key: k, number: $limit}",
         "kernel: {node: $other, major: {ge: 3}}"),
        ("sysctl: {node: $node, key: k, number: {lt: 1024}}",
         "sysctl: {node: $node, key: other, number: $limit}"),
        ("sysctl: {node: $node, key: k, number: $a}",
         "sysctl: {node: $node, key: k, number: {ne: $a}}"),
    ]:
        _, problems = lint(tmp_path, when(*patterns))
        assert [e for e in problems if "written twice" in e.message] == [], patterns


def test_bind_checks_types_and_order(tmp_path):
    _, problems = lint(tmp_path, when(
        "sysctl: {node: $node, key: {startswith: net., bind: $key}}",
        "kernel: {node: $node, major: {gt: 2, bind: $key}}",
    ))
    assert one(problems, "$key holds a str, major is a int").line == 8
    _, problems = lint(tmp_path, when("sysctl: {node: $node, number: {gt: $n, bind: $n}}"))
    assert one(problems, "$n is used before it is bound").line == 7


def test_command_placeholder_nothing_fills_is_rejected(tmp_path):
    p, problems = lint(tmp_path, when(
        "sysctl: {node: $node, key: $key, number: 0}", command="sysctl {key} {limit}",
    ))
    e = one(problems, "{limit}")
    assert (e.file, e.line) == (str(p), 10)
    assert "printed as written" in e.message
    assert "$limit" in e.hint
    assert "{key}" not in " ".join(x.message for x in problems)


def test_braces_that_belong_to_the_command_are_not_placeholders(tmp_path):
    command = (
        "ssh {node} sysctl {key}; echo ${HOME}; curl -w %{http_code} x; "
        "ip -o link | awk {print $2}; awk { print }"
    )
    _, problems = lint(tmp_path, when("sysctl: {node: $node, key: $key, number: 0}",
                                      command=command))
    assert problems == []
    # awk's bare {print} is a placeholder, like everywhere else; the hint says how to keep it
    _, problems = lint(tmp_path, when("sysctl: {node: $node, number: 0}",
                                      command="awk {print}"))
    assert "{ print }" in one(problems, "{print}").hint


def test_a_placeholder_inside_shell_quotes_is_rejected_unless_it_holds_a_number(tmp_path):
    # the value is filled in shell-quoted: inside quotes, its quotes end them (a bridge named
    # `a';reboot` from a node would run), inside double quotes its $(...) would run
    def problems(command: str) -> list[str]:
        text = when("sysctl: {node: $node, key: $key, number: $n}",
                    command=command.replace("'", "''"))
        return [e.message for e in lint(tmp_path, text)[1]]

    [single] = problems("bridge link show | grep -F -- 'master {key}'")
    assert "{key} is inside ' quotes" in single and "would run as a command" in single
    assert "{key} is inside \" quotes" in problems('grep -e "master {key}" x')[0]
    assert "{node} is inside" in problems("echo 'on {node}'")[0]
    for fine in ("b={key}; grep -F -- \"master $b\" x",  # outside quotes, then a variable
                 "printf 'OriginalName=%s\\n' {key}",
                 "grep ':{n} ' x",  # a number cannot hold a quote
                 "echo \"$(grep -F -- {key} x)\"",  # $(...) is unquoted again
                 "echo 'it''s' {key}",  # a quote that YAML doubled, closed before it
                 "echo \\' {key}"):  # an escaped quote opens nothing
        assert problems(fine) == [], fine


def test_rules_lint_cli_shows_the_idiom_with_file_line_and_the_bind_hint(tmp_path, capsys):
    p = write(tmp_path, when(
        "sysctl: {node: $node, key: k, number: {lt: 1024}}",
        "sysctl: {node: $node, key: k, number: $limit}",
        title="{limit} on {node}",
    ))
    assert main(["rules", "lint", str(p)]) == 2
    err = capsys.readouterr().err
    assert f"{p}:8: sysctl is written twice" in err
    assert "number: {lt: 1024, bind: $limit}" in err


READ_ONLY_STEP = GOOD.replace("    when:\n", """\
    remediate:
      - text: {en: "look", zh-CN: "看"}
        command: "iptables -L -n; iptables -F; rm -rf /var/lib/cni"
        changes_state: false
    when:
""")


def test_a_state_changing_command_labelled_read_only_is_refused(tmp_path, capsys):
    path, problems = lint(tmp_path, READ_ONLY_STEP)
    hits = [e for e in problems if "changes_state: false" in e.message]
    assert [e.line for e in hits] == [8, 8]  # the command's own line, once per culprit
    assert "iptables -F" in hits[0].message and "rm -rf" in hits[1].message
    assert main(["rules", "lint", str(path)]) == 2
    assert f"{path}:8" in capsys.readouterr().err
    fixed = READ_ONLY_STEP.replace("changes_state: false", "changes_state: true")
    assert lint(tmp_path, fixed)[1] == []


CHANGES = [
    "iptables -F", "iptables -t nat -A POSTROUTING -j MASQUERADE", "ip6tables -nvZ",
    "iptables --delete FORWARD 1", "iptables-restore < saved", "nft add rule inet f c drop",
    "nft flush ruleset", "nft -f rules.nft", "sysctl -w net.ipv4.ip_forward=1",
    "sysctl net.ipv4.ip_forward=1", "sysctl -p", "sysctl --system",
    "ip route add 10.0.0.0/8 via 1.2.3.4", "ip -n pod0 addr del 10.1.1.1/24 dev eth0",
    "ip link set eth0 mtu 1450", "ip netns add x", "ip -b cmds.txt", "tc qdisc del dev eth0 root",
    "bridge fdb append 00:00:00:00:00:00 dev flannel.1 dst 10.0.0.2",
    "systemctl restart kubelet", "service docker stop", "kubectl delete pod x",
    "kubectl -n kube-system delete pod -l k8s-app=kube-proxy", "kubectl apply -f x.yaml",
    "kubectl edit cm x", "kubectl patch node a -p '{}'", "rm -f /etc/cni/net.d/10-x.conf",
    "kill -9 1234", "pkill flanneld", "conntrack -F", "conntrack -D -p udp",
    "ipvsadm -C", "ipvsadm -D -t 10.96.0.1:443", "modprobe br_netfilter", "rmmod vxlan",
    "echo 1 > /proc/sys/net/ipv4/ip_forward", "printf x >> /etc/hosts", "sed -i s/a/b/ f",
    "ethtool -K eth0 tx off", "sudo iptables -F", "timeout 5 nft flush ruleset",
    "ip netns exec pod0 iptables -F", "nsenter -t 1 -n ip route flush cache",
    "kubectl exec -n a p -- rm /tmp/x", "FOO=1 iptables -X", "x=$(iptables -F)",
    "for p in a b; do ip link set \"$p\" type bridge_slave hairpin on; done",
    "ls | xargs -r rm", "ipset flush", "tee /etc/sysctl.d/99.conf", "crictl rmp -f x",
    "tcpdump -ni any -w /tmp/cap.pcap port 8472", "curl -X DELETE https://api/x",
    "curl -o /etc/x https://example.invalid/x", "wget https://example.invalid/x",
    "firewall-cmd --direct --add-rule ipv4 filter FORWARD 0 -j ACCEPT", "firewall-cmd --reload",
    "calicoctl node run", "calicoctl apply -f pool.yaml",
    "nstat -az TcpExtListenDrops",  # its history file: the operator's next nstat starts over
    "{undo}",
]
READS = [
    "iptables -L FORWARD -n -v --line-numbers", "iptables-save -c | grep -n -- '-j DROP'",
    "iptables -t nat -S", "nft list ruleset", "nft -a list ruleset", "sysctl net.ipv4.ip_forward",
    "sysctl -a 2>/dev/null | grep rp_filter", "ip route get 10.1.2.3", "ip -s link show eth0",
    "ip -n pod0 route show table all", "tc -s qdisc show dev eth0", "bridge fdb show dev x",
    "systemctl status kubelet", "systemctl is-active firewalld ufw",
    "kubectl get pods -A -o wide", "kubectl -n kube-system logs ds/kube-proxy",
    "conntrack -S", "conntrack -L -p udp --dport 53", "ipvsadm -Ln", "ss -lnt",
    "cat /proc/net/netstat", "nstat -asz", "nstat --no-update -a",
    "ping -c 3 -M do -s $((1450 - 28)) 10.0.0.2",
    "tcpdump -ni eth0 -c 10 udp port 8472 2>/dev/null", "ethtool -S eth0", "ethtool -k eth0",
    "for s in 1472 1422; do ping -c1 -W1 -M do -s $s <address of {dst}> >/dev/null; done",
    "ip netns exec {vantage} ip -o link show {iface}", "journalctl -u kubelet --since -1h",
    "kubectl exec -n a p -- cat /etc/resolv.conf", "crictl ps -a", "modprobe -n vxlan",
    "ufw status", "firewall-cmd --list-all", "dmesg | tail -50 2>&1",
    "curl -sS -o /dev/null -w '%{http_code}' http://10.96.0.1/healthz",
    "tcpdump -ni any -c 5 -w - port 53 | tcpdump -r -", "wget -qO- http://x/metrics",
    "firewall-cmd --direct --get-all-rules", "firewall-cmd --zone=public --list-all",
    "calicoctl node status", "calicoctl get ippool -o wide",
]


@pytest.mark.parametrize("command", CHANGES)
def test_state_changing_commands_are_recognised(command):
    from kubenetdiag.engine.commands import state_changes

    assert state_changes(command), command


@pytest.mark.parametrize("command", READS)
def test_read_only_commands_are_not_flagged(command):
    from kubenetdiag.engine.commands import state_changes

    assert state_changes(command) == []


def test_every_shipped_state_changing_step_is_recognised():
    """The shipped rules label 80-odd steps as changing the node: the checker must know each
    of them, or its table misses what rule authors actually write."""
    from kubenetdiag.engine.commands import state_changes

    ruleset = load_ruleset()
    missed = [(r.id, s.command) for r in ruleset.rules for s in r.remediate
              if s.command and s.changes_state and not state_changes(s.command)]
    assert missed == []
    assert sum(1 for r in ruleset.rules for s in r.remediate if s.changes_state) > 50
