"""The host itself: disk space and inodes per local filesystem (a full disk or inode table
breaks kubelet, the runtime and logging before it breaks anything visibly), and the node's
/etc/resolv.conf (what the node, and dnsPolicy: Default pods, resolve with). The OS release
is no longer read: no rule decided on it (the kernel fact carries what the rules need), and a
bundle that still has the section is read without it.

`df -l` keeps to local filesystems, so a hung NFS mount cannot stall the probe.

Sample output and the facts it gives:

>>> out = (
...     '##knd:df\\n'
...     'Filesystem     1024-blocks     Used Available Capacity Mounted o'
...     'n\\n'
...     '/dev/sda1         20960236 20960236         0     100% /\\n'
... )
>>> facts = parse(Section("host", "", 0, 0.0, out, ""), "node1")
>>> [(f.kind, f.attrs.get("mount"), f.attrs.get("use_pct")) for f in facts]
[('filesystem', '/', 100)]
"""

from __future__ import annotations

from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.probes.base import Probe, Section, read_files
from kubenetdiag.probes.text import clip, parts, to_int, unprefix

# GNU df gives space and inodes in one call (--output); busybox's and older ones, two POSIX
# listings.
DF_OUTPUT = "df -l --output=source,size,used,avail,pcent,itotal,iused,iavail,ipcent,target"
COMMAND = (
    f"if o=$({DF_OUTPUT} 2>/dev/null); then printf '##knd:dfo\\n%s\\n' \"$o\"; else "
    "echo '##knd:df'; df -P -l 2>/dev/null || df -P; "
    "echo '##knd:dfi'; df -P -i -l 2>/dev/null || df -P -i; fi; "
    "if [ -r /etc/resolv.conf ]; then "
    + read_files("/etc/resolv.conf", "|", 100, head="##knd:resolv") + "; "
    "else echo '##knd:noresolv'; fi"
)
# Per-container mounts: hundreds on a busy node, and each only repeats its backing filesystem.
_CONTAINER_MOUNTS = ("/var/lib/kubelet/pods/", "/run/containerd/", "/var/lib/docker/",
                     "/var/lib/containers/storage/", "/run/k3s/", "/var/run/containerd/",
                     "/run/netns/", "/var/run/netns/", "/run/docker/")


def _df(lines: list[str]) -> dict[str, tuple[str, list[int | None], str]]:
    """mount -> (device, [total, used, free, pct], raw). Mount points may contain spaces."""
    out = {}
    for line in lines:
        w = line.split()
        if len(w) < 6 or not w[4].endswith("%") and w[4] != "-":
            continue
        nums = [to_int(w[1]), to_int(w[2]), to_int(w[3]), to_int(w[4].rstrip("%"))]
        if nums[0] is None:
            continue
        out[" ".join(w[5:])] = (w[0], nums, line)
    return out


def _df_output(lines: list[str]) -> tuple[dict, dict]:
    """The DF_OUTPUT listing -> (space, inodes), each as `_df` gives them."""
    space, inodes = {}, {}
    for line in lines:
        w = line.split()
        if len(w) < 10 or to_int(w[1]) is None:
            continue  # the header, or a line cut short
        mount = " ".join(w[9:])
        space[mount] = (w[0], [to_int(w[1]), to_int(w[2]), to_int(w[3]),
                               to_int(w[4].rstrip("%"))], line)
        inodes[mount] = (w[0], [to_int(w[5]), to_int(w[6]), to_int(w[7]),
                                to_int(w[8].rstrip("%"))], "")
    return space, inodes


def parse(section: Section, node: str) -> list[Fact]:
    facts: list[Fact] = []
    space: dict = {}
    inodes: dict = {}
    df_command = "df -P -l; df -P -i -l"

    def src(cmd: str, text: str) -> Source:
        return Source("host", cmd, section.exit_code, clip(text, 800))

    for name, _, lines in parts(section.stdout):
        if name == "dfo":
            space, inodes = _df_output(lines)
            df_command = DF_OUTPUT
        elif name == "df":
            space = _df(lines)
        elif name == "dfi":
            inodes = _df(lines)
        elif name == "resolv":
            ns, search, options = [], [], []
            for line in unprefix(lines):
                w = line.split("#", 1)[0].split()
                if len(w) >= 2 and w[0] == "nameserver":
                    ns.append(w[1])
                elif w and w[0] in ("search", "domain"):
                    search = w[1:]
                elif w and w[0] == "options":
                    options += w[1:]
            ndots = next((to_int(o[6:]) for o in options if o.startswith("ndots:")), None)
            facts.append(Fact("resolv_conf", node, {
                "nameservers": clip(",".join(ns), 300) or None,
                "nameserver_count": len(ns),
                "search": clip(" ".join(search), 300) or None,
                "options": clip(" ".join(options), 200) or None,
                "ndots": ndots,
                "loopback_nameserver": any(n.startswith(("127.", "::1")) for n in ns),
            }, src("cat /etc/resolv.conf", "\n".join(unprefix(lines)[:20]))))
        elif name == "noresolv":
            facts.append(Fact("resolv_conf", node, {
                "nameservers": None, "nameserver_count": 0, "search": None, "options": None,
                "ndots": None, "loopback_nameserver": False,
            }, src("cat /etc/resolv.conf", "/etc/resolv.conf is missing or unreadable")))
    for mount in list(dict.fromkeys([*space, *inodes])):
        if mount.startswith(_CONTAINER_MOUNTS):
            continue
        dev, s, raw = space.get(mount, ("", [None] * 4, ""))
        idev, i, iraw = inodes.get(mount, ("", [None] * 4, ""))
        facts.append(Fact("filesystem", node, {
            "mount": clip(mount, 200),
            "device": clip(dev or idev, 200),
            "size_kb": s[0], "used_kb": s[1], "avail_kb": s[2], "use_pct": s[3],
            "inodes": i[0], "inodes_used": i[1], "inodes_free": i[2], "inodes_use_pct": i[3],
        }, src(df_command, f"{raw}\n{iraw}".strip())))
    return facts


PROBE = Probe(
    name="host",
    command=COMMAND,
    parse=parse,
    kinds=("filesystem", "resolv_conf"),
    blocks="OS release, disk space and inodes, the node's resolv.conf",
    tools=("df",),
    timeout_s=10,
)
