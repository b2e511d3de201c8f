"""Which shell commands change a node: lint refuses them in a step labelled read-only.

An SRE pastes a remediation step's command during an outage on the strength of its label: a
step that says `changes_state: false` and flushes a chain is worse than no step. The check
reads the command the way the shell would split it (separators, pipes, `$(...)`, redirections,
wrappers such as sudo, env, timeout, `ip netns exec`, nsenter and `kubectl exec ... --`) and
knows the state-changing verbs of the tools the rules use. It errs towards saying "changes":
a read-only step that trips it can always be written another way.
"""

from __future__ import annotations

import re
import shlex

from kubenetdiag.engine.model import PLACEHOLDER_RE

_UNKNOWN = "KNDPLACEHOLDER"
_ARITHMETIC = re.compile(r"\$\(\([^()]*(?:\([^()]*\)[^()]*)*\)\)")  # $((n - 28)) is a number
_HUMAN_PLACEHOLDER = re.compile(r"<([A-Za-z][^<>\n]*)>")  # "<address of {dst}>": fill me in
_SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "\n", "|&", ";;"}

_IPTABLES = {"iptables", "ip6tables", "iptables-legacy", "ip6tables-legacy", "iptables-nft",
             "ip6tables-nft", "ebtables", "arptables"}
_IPTABLES_WRITE_SHORT = set("AIDRFXNEPZ")
_IPTABLES_WRITE_LONG = {"--append", "--insert", "--delete", "--replace", "--flush",
                        "--delete-chain", "--new-chain", "--rename-chain", "--policy", "--zero",
                        "--new"}
_ALWAYS = {
    "rm", "rmdir", "mv", "cp", "dd", "truncate", "shred", "mkfs", "tee", "chmod", "chown", "ln",
    "touch", "mkdir", "kill", "pkill", "killall", "reboot", "shutdown", "halt", "poweroff",
    "modprobe", "rmmod", "insmod", "ifdown", "ifup", "swapoff", "swapon", "mount", "umount",
    "iptables-restore", "ip6tables-restore", "iptables-legacy-restore", "iptables-nft-restore",
    "ebtables-restore", "brctl", "vconfig", "useradd", "userdel", "passwd", "crontab",
    "update-alternatives", "setenforce", "ufw", "wg", "ovs-vsctl",
}
_READ_ONLY_FORMS = {
    # program: argument words that make it read-only (else it changes the node)
    "ufw": {"status", "show", "app"},
    "modprobe": {"-n", "--dry-run", "--show-depends", "-c", "--showconfig"},
    "wg": {"show", "showconf"},
    "ovs-vsctl": {"show", "list", "get", "find", "list-br", "list-ports", "list-ifaces"},
    "crontab": {"-l"},
}
_VERBS = {
    # program: its verbs that change state (the first verb among its arguments decides)
    "systemctl": {"start", "stop", "restart", "reload", "enable", "disable", "mask", "unmask",
                  "kill", "reset-failed", "daemon-reload", "isolate", "try-restart",
                  "reload-or-restart", "set-property", "edit", "revert", "preset", "link",
                  "reenable", "set-default", "daemon-reexec", "poweroff", "reboot", "halt"},
    "kubectl": {"delete", "apply", "edit", "patch", "create", "replace", "scale", "set", "label",
                "annotate", "drain", "cordon", "uncordon", "taint", "rollout", "expose", "run",
                "cp", "autoscale", "certificate"},
    "crictl": {"rm", "rmi", "rmp", "stop", "stopp", "start", "runp", "run", "create", "update",
               "exec"},
    "docker": {"rm", "rmi", "stop", "kill", "restart", "start", "run", "create", "update",
               "network", "system", "volume", "exec"},
    "ipset": {"create", "add", "del", "destroy", "flush", "rename", "swap", "restore", "-A",
              "-D", "-F", "-X", "-N", "-R", "-E", "-W", "-c"},
    "nft": {"add", "create", "insert", "replace", "delete", "destroy", "flush", "rename",
            "reset", "import", "-f", "--file"},
}
_IP_VERBS = {"add", "del", "delete", "change", "replace", "set", "flush", "append", "prepend",
             "attach", "detach", "save", "restore", "update", "up", "down"}
_TC_VERBS = {"add", "del", "delete", "change", "replace", "link", "flush"}
_KEYWORDS = {"do", "then", "else", "elif", "if", "while", "until", "!", "{", "}", "done", "fi"}
_READ_VERBS = {
    "systemctl": {"status", "show", "cat", "is-active", "is-enabled", "is-failed",
                  "list-units", "list-unit-files", "list-timers", "list-dependencies",
                  "list-sockets", "help"},
    "kubectl": {"get", "describe", "logs", "top", "explain", "version", "api-resources",
                "api-versions", "cluster-info", "auth", "config", "events", "wait", "diff",
                "port-forward"},
    "crictl": {"ps", "pods", "images", "inspect", "inspectp", "inspecti", "logs", "info",
               "stats", "statsp", "version", "config"},
    "docker": {"ps", "images", "inspect", "logs", "info", "version", "stats", "top"},
    "ipset": {"list", "save", "test", "-L", "-S", "-T"},
    "nft": {"list", "describe", "monitor", "-a", "-n", "-j", "-s"},
}
_WRAPPERS = {"sudo", "doas", "env", "nice", "ionice", "timeout", "nohup", "stdbuf", "time",
             "command", "exec", "xargs", "watch", "chroot", "setsid", "unshare"}


def state_changes(command: str) -> list[str]:
    """What in `command` would change the node (empty: read-only as far as can be told)."""
    text = PLACEHOLDER_RE.sub(lambda m: _UNKNOWN, command)
    found: list[str] = []
    for words, redirects in _simple_commands(text):
        for target in redirects:
            if target not in ("/dev/null", "/dev/stdout", "/dev/stderr") and not re.fullmatch(
                    r"&?-?\d*-?", target):
                found.append(f"writes {target} (redirection)")
        why = _verdict(words)
        if why:
            found.append(why)
    return found


def _simple_commands(text: str) -> list[tuple[list[str], list[str]]]:
    """Each simple command's words and its output redirection targets. Command substitution
    is read as a command of its own."""
    text = _ARITHMETIC.sub("0", text)
    text = _HUMAN_PLACEHOLDER.sub("ARG", text)
    text = text.replace("$(", " ; ").replace("`", " ; ")
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace = " \t\r"  # a newline separates commands, as ";" does
    lexer.wordchars += "$%@:,+{}[]^!~\\"
    commands: list[tuple[list[str], list[str]]] = [([], [])]
    pending_redirect = False
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: split on whitespace, still check every word
        tokens = text.split()
    for tok in tokens:
        if pending_redirect:
            commands[-1][1].append(tok)
            pending_redirect = False
        elif tok in (">", ">>", ">|", "&>", "&>>", ">&"):
            pending_redirect = True
        elif tok in ("<", "<<", "<<<"):
            continue
        elif tok in _SEPARATORS or set(tok) <= set(";&|()\n"):
            commands.append(([], []))
        else:
            for part in tok.split("\n"):
                if part:
                    commands[-1][0].append(part)
                else:
                    commands.append(([], []))
    return [c for c in commands if c[0] or c[1]]


def _strip_wrappers(words: list[str]) -> list[str]:
    while words:
        w = words[0]
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", w) or w in _KEYWORDS:  # VAR=1 cmd, do cmd
            words = words[1:]
        elif w.rsplit("/", 1)[-1] in _WRAPPERS:
            words = words[1:]
            # their own options and arguments (timeout 5, nice -n 10, xargs -r, sudo -u x)
            while words and (words[0].startswith("-") or re.fullmatch(r"[\d.]+[smhd]?",
                                                                       words[0])):
                takes = words[0] in ("-n", "-u", "-g", "-c", "-p", "-s", "-k", "-I", "-C")
                words = words[2:] if takes else words[1:]
        elif w == "ip" and words[1:3] == ["netns", "exec"]:
            words = words[4:]
        elif w == "nsenter":
            words = words[1:]
            while words and words[0].startswith("-"):
                words = words[2:] if words[0] in ("-t", "--target") else words[1:]
        elif w == "kubectl" and "exec" in words and "--" in words:
            words = words[words.index("--") + 1:]
        else:
            return words
    return words


def _verdict(words: list[str]) -> str | None:
    words = _strip_wrappers(words)
    if not words:
        return None
    prog = words[0].rsplit("/", 1)[-1]
    args = words[1:]
    shown = " ".join(words[:4]).replace(_UNKNOWN, "{...}")
    if _UNKNOWN in prog:
        return f"`{shown}`: the program comes from a placeholder, so what it does is unknown"
    if prog in _READ_ONLY_FORMS and any(a in _READ_ONLY_FORMS[prog] for a in args):
        return None
    if prog == "firewall-cmd":
        # queries (--state, --list-*, --get-*, --query-*) read; anything that adds, removes,
        # sets or reloads writes, --direct --add-rule included
        writes = [a for a in args if re.match(r"--(add|remove|set|change|reload|"
                                              r"complete-reload|new|delete|runtime-to|lockdown|"
                                              r"panic|reset)", a)]
        return f"`{shown}` changes the firewall ({writes[0]})" if writes else None
    if prog == "calicoctl":
        words = [a for a in args if not a.startswith("-")]
        if words[:1] in (["get"], ["version"]) or words[:2] in (
                ["node", "status"], ["node", "checksystem"], ["ipam", "show"],
                ["ipam", "check"]):
            return None
        return f"`{shown}` changes the cluster or the node (calicoctl {' '.join(words[:2])})"
    if prog in _ALWAYS:
        return f"`{shown}` changes the node ({prog})"
    if prog in _IPTABLES:
        for a in args:
            if a in _IPTABLES_WRITE_LONG or (
                re.fullmatch(r"-[A-Za-z]+", a) and set(a[1:]) & _IPTABLES_WRITE_SHORT
            ):
                return f"`{shown}` changes the firewall ({a})"
        return None
    if prog == "sysctl":
        if any(a in ("-w", "--write", "-p", "--load", "--system") or "=" in a
               or re.fullmatch(r"-[a-zA-Z]*[wp][a-zA-Z]*", a) for a in args):
            return f"`{shown}` sets kernel parameters"
        return None
    if prog in ("ip", "tc", "bridge"):
        return _ip_like(prog, args, shown)
    if prog == "conntrack":
        if any(a in ("-F", "--flush", "-D", "--delete", "-I", "--create", "-U", "--update")
               for a in args):
            return f"`{shown}` changes the conntrack table"
        return None
    if prog == "ipvsadm":
        if any(re.fullmatch(r"-[AEDCaedR]", a) or a in ("--add-service", "--edit-service",
               "--delete-service", "--clear", "--add-server", "--edit-server",
               "--delete-server", "--restore", "--zero", "-Z", "--set") for a in args):
            return f"`{shown}` changes IPVS"
        return None
    if prog == "sed":
        if any(a == "-i" or a.startswith("--in-place") or re.fullmatch(r"-[a-zA-Z]*i.*", a)
               for a in args):
            return f"`{shown}` edits a file in place"
        return None
    if prog == "ethtool":
        if any(re.fullmatch(r"-[sKGACLEXUNfWr]", a) or a.startswith(("--set", "--change"))
               for a in args):
            return f"`{shown}` changes the interface's settings"
        return None
    if prog == "nstat":
        # without -s it writes its history file, which resets what the operator's next
        # `nstat` shows as new since last time
        if not any(a == "--no-update" or re.fullmatch(r"-[a-zA-Z]*s[a-zA-Z]*", a)
                   for a in args):
            return f"`{shown}` updates nstat's history file (add -s)"
        return None
    if prog == "tcpdump":
        for i, a in enumerate(args):
            target = args[i + 1] if a == "-w" and i + 1 < len(args) else (
                a[2:] if a.startswith("-w") and len(a) > 2 else None)
            if target not in (None, "-", "/dev/null"):
                return f"`{shown}` writes a capture file ({target})"
        return None
    if prog == "curl":
        for i, a in enumerate(args):
            nxt = args[i + 1] if i + 1 < len(args) else ""
            if a in ("-o", "--output") and nxt not in ("-", "/dev/null"):
                return f"`{shown}` writes a file ({nxt})"
            if a in ("-O", "--remote-name", "-d", "--data", "--data-raw", "--data-binary",
                     "-F", "--form", "-T", "--upload-file"):
                return f"`{shown}` writes a file or sends data ({a})"
            if a in ("-X", "--request") and nxt.upper() in ("POST", "PUT", "DELETE", "PATCH"):
                return f"`{shown}` sends {nxt.upper()}"
        return None
    if prog == "wget":
        # -O- and -qO- print to stdout; --spider downloads nothing
        if not any(re.fullmatch(r"-[a-zA-Z]*O-", a) or a == "--spider" or (
                   a in ("-O", "--output-document") and args[i + 1:i + 2] in (["-"],
                                                                              ["/dev/null"]))
                   for i, a in enumerate(args)):
            return f"`{shown}` saves what it downloads to a file"
        return None
    if prog == "service":
        if len(args) >= 2 and args[1] in _VERBS["systemctl"]:
            return f"`{shown}` changes a service"
        return None
    if prog in _VERBS:
        # the first word that is one of the tool's verbs decides (options and their values,
        # -n NAMESPACE, come before it)
        verbs, reads = _VERBS[prog], _READ_VERBS.get(prog, set())
        verb = next((a for a in args if a in verbs or a in reads), None)
        if verb in verbs and not (prog == "nft" and verb.startswith("-") and "list" in args):
            return f"`{shown}` changes the node ({prog} {verb})"
    return None


def _ip_like(prog: str, args: list[str], shown: str) -> str | None:
    """ip/tc/bridge OBJECT VERB ...: options first (some take a value), then the object."""
    with_value = {"-n", "-netns", "--netns", "-f", "-family", "-rc", "-rcvbuf", "-l", "-loops"}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in ("-b", "-batch", "-force"):
            return f"`{shown}` runs a batch file of {prog} commands"
        i += 2 if args[i] in with_value else 1
    rest = args[i:]
    if len(rest) >= 2 and rest[1] in (_IP_VERBS if prog != "tc" else _TC_VERBS):
        return f"`{shown}` changes the node ({prog} {rest[0]} {rest[1]})"
    # ip link set dev X up: "set" is the verb already; "ip netns add NAME" likewise
    return None


def quoted_placeholders(command: str) -> list[tuple[str, str]]:
    """The `{name}` placeholders of `command` that sit inside shell quotes, each as (name, the
    quote: ' or "). The renderer fills a placeholder with the value shell-quoted ('...'), which
    is one word only where the shell reads it unquoted: inside single quotes its own quotes end
    the outer ones, inside double quotes a `$(...)` in it runs. A `$(...)` opens unquoted
    context again, as the shell reads it."""
    spans = {m.start(): m for m in PLACEHOLDER_RE.finditer(command)}
    found: list[tuple[str, str]] = []
    stack = [""]  # "" unquoted, "'" or '"' inside quotes, "(" a $( ) opened inside them
    i = 0
    while i < len(command):
        c, state = command[i], stack[-1]
        if i in spans and state in ("'", '"'):
            found.append((spans[i].group(1), state))
        if state == "'":
            if c == "'":
                stack.pop()
        elif c == "\\":
            i += 1  # the next character is taken as it is
        elif state == '"' and c == '"':
            stack.pop()
        elif command.startswith("$(", i):
            stack.append("(")
            i += 1
        elif state == "(" and c == ")":
            stack.pop()
        elif state != '"' and c in "'\"":
            stack.append(c)
        i += 1
    return found
