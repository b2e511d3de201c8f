"""An HTTP GET of each CoreDNS pod's metrics port from the node: the pod answers on the pod
network even when its DNS answers are wrong. curl or wget, else over an SSH channel (the
channel writes curl's `http_code=NNN time=S` line).

>>> from kubenetdiag.probes.active.common import example, section
>>> ctx = example()
>>> [fact] = HTTP.parse(section("active.http.0", "http_code=200 time=0.004\\n"),
...                     ctx.plan["http"][0], ctx)
>>> fact.kind, fact.attrs["target_pod"], fact.attrs["status"], fact.attrs["ok"]
('http_check', 'coredns-0', 200, True)
>>> [fact] = HTTP.parse(section("active.http.0", "http_code=000 time=2.001\\n", 28),
...                     ctx.plan["http"][0], ctx)
>>> fact.attrs["status"], fact.attrs["detail"]
(None, 'timeout')
"""

from __future__ import annotations

import re
from typing import Any

from kubenetdiag.facts.model import Fact
from kubenetdiag.probes.active.common import no_tool, source
from kubenetdiag.probes.active.plan import NodePlan
from kubenetdiag.probes.base import ActiveCheck, ChannelRequest, CheckContext, Section, quoted

_CURL_EXIT = {6: "unresolved", 7: "refused", 28: "timeout", 52: "empty reply", 56: "reset"}


def parse_http(text: str, rc: int | None) -> dict[str, Any]:
    """{status, ok, detail} from curl -w 'http_code=...', wget -S, or the channel's line."""
    curl = re.search(r"http_code=(\d{3})", text)
    if curl:
        code = int(curl.group(1))
        status = code or None  # curl's 000: no response at all
        detail = None if status else _CURL_EXIT.get(rc or 0, f"curl exit {rc}")
    else:
        codes = re.findall(r"HTTP/\d(?:\.\d)? (\d{3})", text)
        status = int(codes[-1]) if codes else None
        low = text.lower()
        detail = None
        if status is None:
            detail = ("refused" if "refused" in low else "timeout" if "timed out" in low or
                      rc == 4 else text.strip().splitlines()[-1][:200] if text.strip()
                      else f"exit {rc}")
    return {"status": status, "ok": status is not None and 200 <= status < 300,
            "detail": detail}


def _targets(plan: NodePlan) -> list[tuple[str, Any]]:
    return [(str(i), endpoint) for i, endpoint in enumerate(plan["http"])]


def _command(plan: NodePlan, endpoint: Any) -> str:
    url = quoted(endpoint["url"])
    return ("if __has curl; then curl -s -o /dev/null --connect-timeout 2 -m 3 "
            f"-w 'http_code=%{{http_code}} time=%{{time_total}}\\n' {url}; "
            f"elif __has wget; then wget -S -q -O /dev/null -T 3 -t 1 {url}; "
            "else echo 'kubenetdiag: no http tool'; exit 127; fi")


def _channel(plan: NodePlan, endpoint: Any) -> ChannelRequest:
    url = endpoint["url"]
    hostport, _, path = url.split("//", 1)[1].partition("/")
    address, _, port = hostport.rpartition(":")
    return ChannelRequest(address, int(port), "http", "/" + path, f"HTTP GET {url}")


def parse(section: Section, endpoint: Any, ctx: CheckContext) -> list[Fact]:
    if no_tool(section):
        return []  # the runner asked through the SSH channel instead
    result = parse_http(section.stdout, section.exit_code)
    return [Fact("http_check", ctx.node, {
        "url": endpoint["url"], "target": endpoint["target"], "target_pod": endpoint.get("pod"),
        "status": result["status"], "ok": result["ok"], "detail": result["detail"]},
        source(section))]


HTTP = ActiveCheck(
    name="http",
    kinds=("http_check",),
    targets=_targets,
    resolve=lambda plan, suffix: plan["http"][int(suffix)],
    command=_command,
    channel=_channel,
    parse=parse,
    blocks=lambda endpoint: f"HTTP answer from {endpoint['url']}",
    order=400,
)
CHECKS = (HTTP,)
