"""Values that come from nodes, probes and the collector, in the report's language.

Rule texts are written in each language by their authors, but the values a text shows (an SSH
error, a direction, a verdict, where the path walk stopped) and the report's own tables (probe
statuses, what a failed probe leaves unchecked) come from code that speaks English. This module
says the ones it knows in Simplified Chinese; a value it does not know is shown as it is, so an
unfamiliar message is never lost, only left untranslated.

Spacing convention of the zh-CN texts (tests/test_texts.py checks it): one ASCII space between
Chinese and a Latin word or a number ("Pod 网络", "第 1 条"), none between two Chinese characters
and none on either side of full-width punctuation (，。：；（）“”、). `tidy_zh` applies the second
half to a text after its placeholders were filled, where a value that became Chinese would
otherwise leave the space the template kept for a Latin value.
"""

from __future__ import annotations

import re
from collections.abc import Callable

ZH = "zh-CN"

_CJK = "\u3400-\u4dbf\u4e00-\u9fff"
# Full-width and CJK punctuation, plus the curly quotes and the ellipsis Chinese text uses.
_CJK_PUNCT = "\u3000-\u303f\uff00-\uffef\u2018\u2019\u201c\u201d\u2026\u2014"
_SPACE_BETWEEN_CJK = re.compile(
    f"(?<=[{_CJK}{_CJK_PUNCT}]) +(?=[{_CJK}])|(?<=[{_CJK}]) +(?=[{_CJK_PUNCT}])"
)
_SPACE_AFTER_PUNCT = re.compile(f"(?<=[{_CJK_PUNCT}]) +")
_SPACE_BEFORE_PUNCT = re.compile(f" +(?=[{_CJK_PUNCT}])")


def tidy_zh(text: str) -> str:
    """`text` without spaces between Chinese characters or next to full-width punctuation."""
    text = _SPACE_BETWEEN_CJK.sub("", text)
    text = _SPACE_AFTER_PUNCT.sub("", text)
    return _SPACE_BEFORE_PUNCT.sub("", text)


# Probe statuses (probe_status.status, not_checked[].status) and the "all" probe of a node that
# could not be reached.
PROBE_STATUS_ZH = {
    # the same words as the report's own status labels (reports/i18n.py: status_*)
    "failed": "执行失败",
    "error": "出错",
    "missing_tool": "缺少工具",
    "permission_denied": "权限不足",
    "timeout": "超时",
    "unreachable": "节点连不上",
    "not_queried": "未查询",
    "not_collected": "生成该采集包的版本还没有这项探测",
    "partial": "部分输出无法解析",
    "ok": "正常",
}
PROBE_NAME_ZH = {"all": "全部探测"}

# Values of rule placeholders that are words, not names: by placeholder.
_WORDS_ZH: dict[str, dict[str, str]] = {
    "direction": {"inbound": "入方向", "outbound": "出方向", "both": "双向",
                  "node_to_pod": "节点到 Pod", "pod_to_node": "Pod 到节点",
                  # link_saturation.direction
                  "send": "发送", "receive": "接收"},
    # link_saturation.limit: what sets a link's capacity
    "limit": {"tbf rate": "tbf 限速", "link speed": "链路速率"},
    "verdict": {"drop": "丢弃", "reject": "拒绝", "unknown": "未知", "accept": "放行"},
    "owner": {"unknown": "未知"},
    "kind": {"service": "Service VIP", "pod": "Pod IP", "node": "节点解析器"},
    # the connectivity matrix's layers, as the report's own tables name them
    # which side of a flow a NetworkPolicy denies on (policy_verdict.denied_on)
    "side": {"ingress": "入向（目的 Pod）一侧", "egress": "出向（源 Pod）一侧", "both": "两侧"},
    # pod_bridge.addresses of a bridge that holds none
    "addresses": {"none": "无"},
    "layer": {"pod": "Pod 网络", "underlay": "节点地址", "vxlan": "VXLAN 隧道", "bgp": "BGP 会话"},
    # pod_veth.holder of a veth whose pod is not known
    "holder": {"a pod": "某个 Pod"},
}
# What an active check saw when it failed (probes/active: ping, tcp, dns, http), in any
# placeholder or cell.
_ANY_ZH = {
    # host_firewall.evidence (probes/processes.py)
    "firewalld process running": "firewalld 进程正在运行",
    "no firewalld process": "没有 firewalld 进程",
    "no /etc/ufw/ufw.conf": "没有 /etc/ufw/ufw.conf",
    "timeout": "超时",
    "refused": "连接被拒绝",
    "reset": "连接被重置",
    "unreachable": "不可达",
    # a ping answered with an ICMP error only a packet filter's REJECT sends
    "rejected": "被拒绝（ICMP 差错）",
    "network unreachable": "网络不可达",
    "not permitted": "操作不被允许",
    "unresolved": "无法解析",
    # the sources of the facts the parse stage derives from other facts (facts/*.py)
    "every node's active checks, read together": "所有节点的主动检查，合并分析",
    "the underlay pings between the zones' nodes": "各可用区节点之间的底层网络 ping",
    "every node's settings, side by side": "所有节点的设置，逐项对比",
    "each node's kube-proxy rules against the API's Services":
        "各节点的 kube-proxy 规则与 API 中的 Service 对比",
    "the pod bridge's ports (interface facts)": "Pod 网桥的端口（interface 事实）",
    "interface facts and cached CNI results": "interface 事实与缓存的 CNI 结果",
    "NetworkPolicy semantics on the flows the cluster needs": "集群所需流量上的 NetworkPolicy 语义",
    "NetworkPolicy enforcers in the API and on the nodes": "API 与各节点上的 NetworkPolicy 执行者",
}

# Whole values of any placeholder or table cell that follow a known English form.
_Render = Callable[[re.Match[str]], str]
# A render is a template filled with the match's named groups, or a function for the few that
# translate a part again or pick a word.
_PATTERNS: list[tuple[re.Pattern[str], str | _Render]] = []


def _pattern(regex: str, template: str) -> None:
    _PATTERNS.append((re.compile(regex, re.S), template))


def _pattern_fn(regex: str) -> Callable[[_Render], _Render]:
    def register(fn: _Render) -> _Render:
        _PATTERNS.append((re.compile(regex, re.S), fn))
        return fn

    return register


# pod_veth.holder of a veth whose pod is known: "pod <namespace>/<name>" (facts/pod_veths.py).
_pattern(r"pod (?P<name>[a-z0-9][a-z0-9.-]*/[a-z0-9][a-z0-9.-]*)", "Pod {name}")
# A node's own traffic as a NetworkPolicy verdict names its source (facts/policies.py).
_pattern(r"node (?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)", "节点 {name}")


# Where the path walk stopped in the packet filter (facts/paths/netfilter.py: Stop.at).
_pattern(r"(?P<table>\S+(?: \S+)?) (?P<chain>\S+) rule (?P<n>\d+)",
         "{table} 表 {chain} 链第 {n} 条规则")


_pattern(r"(?P<table>\S+(?: \S+)?) (?P<chain>\S+) policy (?P<policy>[A-Z]+)",
         "{table} 表 {chain} 链的默认策略 {policy}")


# The collector's connection errors (collect/ssh.py, collect/hostkeys.py, collect/local.py).
_pattern(r"connection refused on (?P<where>\S+): is sshd running\?",
         "{where} 拒绝连接（sshd 是否在运行？）")


_pattern(r"no answer from (?P<where>\S+) within (?P<s>[\d.]+)s \(host down or filtered\)",
         "{where} 在 {s} 秒内没有应答（主机宕机或被过滤）")


_pattern(r"cannot resolve (?P<host>\S+): (?P<why>.+)",
         "无法解析 {host}：{why}")


_pattern(r"cannot connect to (?P<where>\S+): (?P<why>.+)",
         "无法连接 {where}：{why}")


@_pattern_fn(r"authentication failed for (?P<who>.+?): (?P<why>.+)")
def _auth(m: re.Match[str]) -> str:
    return f"{m['who']} 认证失败：{value_zh(m['why'])}"


_pattern(r"HOST KEY CHANGED for (?P<host>\S+) \((?P<detail>.+?)\): possible man-in-the-middle; "
         r"verify the node's key and fix known_hosts before trusting it",
         "{host} 的主机密钥已变更（{detail}）：可能存在中间人攻击；"
         "请先核实节点的密钥并修正 known_hosts，再信任它")


_pattern(r"unknown host key for (?P<host>\S+) \((?P<fp>.+?)\), not in (?P<path>\S+): "
         r"verify it and add it to known_hosts, or rerun with --accept-new-host-keys to trust "
         r"first-seen keys",
         "{host} 的主机密钥未知（{fp}），不在 {path} 中："
         "请核实后加入 known_hosts，或加 --accept-new-host-keys 重新运行以信任首次见到的密钥")


_pattern(r"host key of (?P<host>\S+) is marked @revoked in (?P<path>\S+): refusing it",
         "{host} 的主机密钥在 {path} 中被标记为 @revoked：拒绝使用")


_pattern(r"no common SSH algorithm with (?P<where>\S+) \((?P<detail>.+)\); very old sshd "
         r"\(CentOS 6/7\) may only offer SHA-1 algorithms that current clients refuse",
         "与 {where} 没有共同的 SSH 算法（{detail}）；很旧的 sshd（CentOS 6/7）"
         "可能只提供当前客户端拒绝的 SHA-1 算法")


_pattern(r"probe script did not finish within (?P<s>[\d.]+)s",
         "探测脚本在 {s} 秒内没有完成")


_pattern(r"sudo asked for a password: give the user NOPASSWD sudo for `sh`, or connect as root",
         "sudo 要求输入密码：请为该用户配置对 `sh` 的 NOPASSWD sudo，或以 root 连接")


_pattern(r"sudo requires a tty \(Defaults requiretty\): disable it for this user",
         "sudo 要求 tty（Defaults requiretty）：请为该用户关闭此项")


_pattern(r"SSH transport closed right after login", "SSH 连接在登录后立即关闭")
_pattern(r"SSH transport closed", "SSH 连接已关闭")


_pattern(r"jump host (?P<spec>\S+) could not open a connection to (?P<where>\S+): (?P<why>.+)",
         "跳板机 {spec} 无法打开到 {where} 的连接：{why}")


@_pattern_fn(r"via jump host (?P<spec>\S+): (?P<why>.+)")
def _jump(m: re.Match[str]) -> str:
    return f"经跳板机 {m['spec']}：{value_zh(m['why'])}"


_pattern(r"node could not open (?P<where>\S+): (?P<why>.+)",
         "节点无法打开到 {where} 的连接：{why}")


_pattern(r"cannot start sh: (?P<why>.+)",
         "无法启动 sh：{why}")


_pattern(r"cannot read known_hosts file (?P<path>\S+): (?P<why>.+)",
         "无法读取 known_hosts 文件 {path}：{why}")


_pattern(r"ProxyJump (?P<spec>\S+): chains of jump hosts are not supported yet",
         "ProxyJump {spec}：暂不支持多级跳板机")


_pattern(r"the node's sshd did not open a session within (?P<s>[\d.]+)s \((?P<why>.*)\): it may "
         r"be overloaded, or limit sessions per connection \(MaxSessions\)",
         "节点的 sshd 在 {s} 秒内没有打开会话（{why}）：节点可能负载过高，"
         "或限制了每个连接的会话数（MaxSessions）")


_pattern(r"ProxyCommand (?P<cmd>.+) could not start: (?P<why>.+)",
         "ProxyCommand {cmd} 无法启动：{why}")


_pattern(r"no key to log in with; set ansible_ssh_private_key_file \(or IdentityFile in the SSH "
         r"config\), or load the key into ssh-agent \(SSH_AUTH_SOCK\)",
         "没有可用于登录的密钥；请设置 ansible_ssh_private_key_file（或 SSH 配置中的 "
         "IdentityFile），或把密钥加载到 ssh-agent（SSH_AUTH_SOCK）")


_pattern(r"ProxyJump (?P<spec>\S+) is not of the form \[user@\]host\[:port\]",
         "ProxyJump {spec} 的格式不是 [user@]host[:port]")


_pattern(r"not collected by the version that made this bundle \((?P<by>.+)\)",
         "生成该采集包的版本（{by}）还没有这项探测")


_pattern(r"not reached",
         "未连接上")


_pattern(r"no kubeconfig given",
         "没有提供 kubeconfig")


# What a failed probe leaves unchecked (findings/report.py, facts/cluster.py, probes/*.py).
BLOCKS_ZH = {
    "every check on this node": "该节点上的所有检查",
    "kernel settings (ip_forward and per-interface forwarding, bridge-nf-call-iptables, "
    "rp_filter, TCP and conntrack)":
        "内核参数（ip_forward 与各网卡的 forwarding、bridge-nf-call-iptables、rp_filter、"
        "TCP 与 conntrack）",
    "legacy-backend iptables rules on a node whose iptables-save is nf_tables":
        "iptables-save 为 nf_tables 的节点上 legacy 后端的 iptables 规则",
    "a pod's cached CNI result": "某个 Pod 缓存的 CNI 结果",
    "which pod is behind each veth when the kernel no longer says (CNI results cache)":
        "内核已无法说明时，每个 veth 背后是哪个 Pod（CNI 结果缓存）",
    "which pod is behind those veths, where the kernel no longer says":
        "内核已无法说明时，这些 veth 背后是哪个 Pod",
    "CNI configuration (plugin, MTU, which config file is in use)":
        "CNI 配置（插件、MTU、使用的是哪个配置文件）",
    "the pod's interface MTU": "Pod 网卡的 MTU",
    "IPsec (xfrm) policies that block or require IPsec for traffic":
        "拦截流量或要求流量走 IPsec 的 IPsec（xfrm）策略",
    "whether the IPsec SAs negotiated on demand came up for the checks' traffic":
        "按需协商的 IPsec SA 是否为检查的流量建立起来",
    "the pod's own routes (a pod made without a default route)":
        "Pod 自己的路由（创建时没有默认路由的 Pod）",
    "which addresses the node asked ARP for in vain during the checks":
        "检查期间节点通过 ARP 询问却没有得到回应的地址",
    "VXLAN direction (tcpdump)": "VXLAN 收发方向（tcpdump）",
    "ipsets: iptables rules that match a set (kube-proxy ipvs mode, Calico) stay undecided in "
    "the path walk":
        "ipset：匹配集合的 iptables 规则（kube-proxy ipvs 模式、Calico）在路径遍历中无法判定",
    "IPVS virtual servers (kube-proxy ipvs mode): Service VIPs and their backends":
        "IPVS 虚拟服务（kube-proxy ipvs 模式）：Service VIP 及其后端",
    "the pods' own accept-queue overflows, UDP buffer drops, listeners with connections "
    "waiting, UDP sockets that dropped datagrams and TIME_WAIT sockets piling toward one "
    "peer":
        "各 Pod 自己的全连接队列溢出、UDP 缓冲区丢包、有连接等待 accept 的监听套接字、"
        "丢过报文的 UDP 套接字，以及堆积在同一对端的 TIME_WAIT 套接字",
    "whether the programs behind full receive queues still read them":
        "接收队列积压的连接背后的程序是否还在读取",
    "drop and error counters rising now (listen overflows, UDP buffer errors, RcvQ drops, "
    "a CPU's full input backlog) and each interface's throughput":
        "当前正在增长的丢包与错误计数（全连接队列溢出、UDP 缓冲区错误、接收队列丢包、"
        "CPU 输入积压队列已满）以及各网卡的吞吐量",
    "sockets (accept queues, listeners' open files, TIME_WAIT, CLOSE-WAIT and FIN-WAIT-2 "
    "counts, stuck Recv-Q/Send-Q, UDP buffers)":
        "套接字（全连接队列、监听进程打开的文件数、TIME_WAIT、CLOSE-WAIT 与 FIN-WAIT-2 数量、"
        "积压的 Recv-Q/Send-Q、UDP 缓冲区）",
    "which sysctl file persists each kernel setting (what a reboot would restore)":
        "每个内核参数由哪个 sysctl 文件持久化（重启后会恢复成什么）",
    "policy routing rules (which table a flow is looked up in; blackhole, unreachable "
    "and prohibit rules)":
        "策略路由规则（流量查哪张路由表；blackhole、unreachable 与 prohibit 规则）",
    "nftables rules made outside iptables (firewalld, kube-proxy nftables mode, nft)":
        "iptables 之外写入的 nftables 规则（firewalld、kube-proxy nftables 模式、nft）",
    "routes to pod CIDRs (missing route, wrong device or gateway, BGP-learned routes)":
        "到 Pod 网段的路由（缺失的路由、错误的设备或网关、BGP 学到的路由）",
    "the node's reachability of its own pod": "节点到本节点 Pod 的可达性",
    "the pod's reachability of its own node": "Pod 到所在节点的可达性",
    "whether the DROP and REJECT rules on failing flows matched the checks' traffic":
        "失败流量路径上的 DROP 与 REJECT 规则是否命中了探测流量",
    "packet filter rules (FORWARD REJECT/DROP, host firewalls, kube-proxy chains)":
        "包过滤规则（FORWARD 链的 REJECT/DROP、主机防火墙、kube-proxy 的链）",
    "interfaces (VXLAN/IPIP devices, cni0, veths, MTU and state)":
        "网卡（VXLAN/IPIP 设备、cni0、veth、MTU 与状态）",
    "OS release, disk space and inodes, the node's resolv.conf":
        "操作系统版本、磁盘空间与 inode、节点的 resolv.conf",
    "kernel modules (br_netfilter, nf_conntrack, ip_vs, vxlan...)":
        "内核模块（br_netfilter、nf_conntrack、ip_vs、vxlan 等）",
    "processes (CNI agents, kube-proxy, kubelet, runtime, firewalld/ufw, security software)":
        "进程（CNI 组件、kube-proxy、kubelet、容器运行时、firewalld/ufw、安全软件）",
    "BGP sessions of BIRD (Calico): which peers are not Established":
        "BIRD（Calico）的 BGP 会话：哪些对端不在 Established 状态",
    "flannel subnet.env, the VXLAN FDB/neighbor entries toward peer nodes and the permanent "
    "neighbour entries of the other devices":
        "flannel 的 subnet.env、到对端节点的 VXLAN FDB/邻居表项，以及其他设备上的永久邻居表项",
    "connection tracking (table full, insert_failed, drop, early_drop)":
        "连接跟踪（表满、insert_failed、drop、early_drop）",
    "traffic control on the path (clsact/ingress filters, BPF programs attached with "
    "tc, classful or non-default qdiscs)":
        "路径上的流量控制（clsact/ingress 过滤器、用 tc 挂载的 BPF 程序、分类或非默认的 qdisc）",
    "kernel version checks (settings removed or added by kernel release)":
        "内核版本相关的检查（随内核版本删除或新增的参数）",
    "the API server version": "API Server 版本",
    "API nodes: pod CIDRs, Ready/NetworkUnavailable conditions, zones, and matching "
    "them to the inventory":
        "API 中的节点：Pod 网段、Ready/NetworkUnavailable 状况、可用区，以及与主机清单的对应",
    "which CNI plugin runs and its rollout (desired vs ready), kube-proxy rollout":
        "运行的是哪个 CNI 插件及其发布情况（期望数与就绪数）、kube-proxy 的发布情况",
    "CNI, kube-proxy and CoreDNS pod health (readiness, restarts, which node), and "
    "which pods a Service or a NetworkPolicy selects":
        "CNI、kube-proxy 和 CoreDNS Pod 的健康状况（就绪、重启次数、所在节点），"
        "以及 Service 或 NetworkPolicy 选中了哪些 Pod",
    "namespace labels, which a NetworkPolicy's namespaceSelector matches":
        "命名空间的标签（NetworkPolicy 的 namespaceSelector 据此匹配）",
    "flannel's network, backend type and VXLAN port": "flannel 的网段、后端类型和 VXLAN 端口",
    "kube-proxy mode (iptables/ipvs)": "kube-proxy 模式（iptables/ipvs）",
    "the cluster DNS domain": "集群 DNS 域名",
    "Services and the DNS Service VIP": "Service 与 DNS Service 的 VIP",
    "Services without ready endpoints, and endpoints spread across zones":
        "没有就绪后端的 Service，以及后端跨可用区分布",
    "NetworkPolicies (default deny per namespace)": "NetworkPolicy（各命名空间的默认拒绝）",
    "calico IP pools and their encapsulation": "calico IP 池及其封装方式",
    "whether kube-controller-manager still leads (its lease), without which no Service's "
    "endpoints follow its pods":
        "kube-controller-manager 是否仍有主实例（其租约），没有主实例时任何 Service 的 Endpoint "
        "都不再跟随其 Pod",
    "the cluster checks": "集群检查",
    "active probes: pod-network matrix, MTU, VXLAN direction, CoreDNS checks, declared "
    "endpoints; run diagnose without --no-active (or collect --active)":
        "主动探测：Pod 网络连通矩阵、MTU、VXLAN 收发方向、CoreDNS 检查、声明的端点；"
        "运行 diagnose 时不加 --no-active（或 collect 时加 --active）",
    "active probes not run: --no-active, or `collect` without --active":
        "未运行主动探测：使用了 --no-active，或 `collect` 时没有加 --active",
    "active probes": "主动探测",
    "active probe": "主动探测",
    "cluster checks from the Kubernetes API (nodes, CNI and DNS pods, services and endpoints); "
    "pass --kubeconfig to include them":
        "来自 Kubernetes API 的集群检查（节点、CNI 与 DNS Pod、Service 与后端）；"
        "加 --kubeconfig 即可包含它们",
}


_pattern(r"HTTP answer from (?P<url>\S+)",
         "{url} 的 HTTP 应答")


_pattern(r"DNS answers from (?P<server>\S+)",
         "{server} 的 DNS 应答")


_pattern(r"what the API call (?P<call>\S+) would have told",
         "API 调用 {call} 本应提供的信息")


_pattern(r"message too long, mtu=(?P<mtu>\d+)", "报文过长，mtu={mtu}")
_pattern(r"message too long", "报文过长")


_pattern(r"frag needed, mtu=(?P<mtu>\d+)",
         "需要分片，mtu={mtu}")


_pattern(r"failed \(exit (?P<rc>\d+)\)",
         "失败（退出码 {rc}）")


_LAYER_ZH = _WORDS_ZH["layer"]


_pattern(r"MTU (?P<mtu>\d+) towards (?P<peer>\S+)",
         "到 {peer} 的 MTU {mtu}")


@_pattern_fn(r"(?P<layer>\S+) reachability of (?P<peer>\S+)")
def _blocks_reach(m: re.Match[str]) -> str:
    return tidy_zh(f"{m['peer']} 的 {_LAYER_ZH.get(m['layer'], m['layer'])} 可达性")


_pattern(r"loss on the link to (?P<peer>\S+)", "到 {peer} 的链路丢包情况")
_pattern(r"(?P<n>\d+) echoes sent: this ping has no short interval \(busybox\), or allows none "
         r"to a user that is not root \(an old iputils\)",
         "只发送了 {n} 个 ping：此 ping 不支持短间隔（busybox），或不允许非 root 用户使用短间隔"
         "（旧版 iputils）")


_pattern(r"connection-tracking entries toward (?P<target>\S+)",
         "到 {target} 的连接跟踪条目")


_pattern(r"TCP connect to (?P<target>\S+)",
         "到 {target} 的 TCP 连接")


_pattern(r"the pod's own DNS resolver \(its resolv.conf\) for (?P<name>\S+)",
         "用 Pod 自己的解析器（其 resolv.conf）解析 {name}")


_pattern(r"NodePort (?P<port>\d+) of (?P<service>\S+) on (?P<node>\S+)",
         "{node} 上 {service} 的 NodePort {port}")


_pattern(r"pod-network reachability and pod-layer MTU from (?P<node>\S+) to (?P<peers>.+)",
         "从 {node} 到 {peers} 的 Pod 网络可达性和 Pod 层 MTU")


# The source of a path-walk fact (facts/paths: Source.command).
_pattern(r"walk of (?P<node>.+)'s (?P<flow>\S+) flow",
         "{node} 上 {flow} 流量的路径遍历")


def value_zh(text: str, name: str | None = None) -> str:
    """`text` in Chinese when it is a value this module knows, else `text` unchanged. `name` is
    the rule placeholder the value fills, for words whose meaning depends on it."""
    words = _WORDS_ZH.get(name or "", {})
    if text in words:
        return words[text]
    if text in _ANY_ZH:
        return _ANY_ZH[text]
    if text in BLOCKS_ZH:
        return BLOCKS_ZH[text]
    for regex, fn in _PATTERNS:
        m = regex.fullmatch(text)
        if m:
            return fn.format_map(m.groupdict()) if isinstance(fn, str) else fn(m)
    return text


def value(text: str, lang: str, name: str | None = None) -> str:
    """`text` in `lang` (see value_zh); English and unknown languages get it unchanged."""
    return value_zh(text, name) if lang == ZH else text


def probe_status(status: str, lang: str) -> str:
    return PROBE_STATUS_ZH.get(status, status) if lang == ZH else status


def probe_name(probe: str, lang: str) -> str:
    return PROBE_NAME_ZH.get(probe, probe) if lang == ZH else probe
