"""The HTML report in a real browser: headless Chromium driven over the DevTools protocol.

What only a browser can prove: that loading the report makes no request besides the file
itself, that hostile node data never becomes a live element or runs, and that the picture an
engineer sees (banner, heatmap marks) is there after layout. Skipped when Chromium or
websocket-client is missing; CI installs Debian's `chromium`.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubenetdiag.engine import infer, load_ruleset
from kubenetdiag.facts.model import Fact, Source
from kubenetdiag.findings import build_report
from kubenetdiag.reports import render_html
from kubenetdiag.screenshot import FLAGS as SCREENSHOT_FLAGS

websocket = pytest.importorskip("websocket", reason="websocket-client is not installed")

# $CHROMIUM picks another build; Debian's package installs /usr/bin/chromium.
CHROMIUM = next(
    (shutil.which(p) for p in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser")
     if p and shutil.which(p)),
    None,
)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

PWN_SCRIPT = "<script>window.__pwned=1;document.title='PWNED-S'</script>"
PWN_IMG = "\"><img src=x onerror=\"window.__pwned=2;document.title='PWNED-I'\">"

# Flags that keep Chromium itself quiet on the network, so that anything the Network domain
# reports comes from the page; the host resolver rule makes a slipped request fail fast instead
# of leaving the machine.
FLAGS = [
    *SCREENSHOT_FLAGS,
    "--disable-default-apps",
    "--metrics-recording-only",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
]


class Browser:
    """The smallest DevTools client this needs: one page, commands, and collected events."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=30)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.call(method, self.session, **params)

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if e["method"] == method:
                    self.events.remove(e)
                    return e
            if time.monotonic() > deadline:
                raise TimeoutError(method)
            reply = json.loads(self.ws.recv())
            if "method" in reply:
                self.events.append(reply)

    def load(self, path: Path, width: int = 1280, height: int = 900) -> list[str]:
        """Open `path` and return every URL the page requested, the document included."""
        self.page("Page.enable")
        self.page("Network.enable")
        self.page("Runtime.enable")
        self.page(
            "Emulation.setDeviceMetricsOverride",
            width=width, height=height, deviceScaleFactor=1, mobile=False,
        )
        self.events.clear()
        self.page("Page.navigate", url=path.resolve().as_uri())
        self.wait_event("Page.loadEventFired")
        # Late fetches (lazy images, fonts requested at first paint) would come after load.
        self.eval("new Promise(r => requestAnimationFrame(() => setTimeout(r, 300)))")
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e["method"] == "Network.requestWillBeSent"
        ]

    def eval(self, expression: str) -> Any:
        result = self.page(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, out: Path) -> None:
        data = self.page("Page.captureScreenshot", format="png")["data"]
        out.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the browser may already be gone
            self.call("Browser.close")
        self.ws.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="knd-chromium-") as profile:
        b = Browser(CHROMIUM, Path(profile))
        try:
            yield b
        finally:
            b.close()


# --------------------------------------------------------------------------- scenarios


def _src(probe: str, command: str, excerpt: str) -> Source:
    return Source(probe=probe, command=command, exit_code=0, excerpt=excerpt)


def node_facts(node: str, *, ip_forward: int = 1, reject: bool = False,
               comment: str = "kubernetes forwarding rules") -> list[Fact]:
    """What the node probes would have parsed from one node."""
    facts = [
        Fact("kernel", node, {"release": "6.1.0-18-amd64", "major": 6, "minor": 1},
             _src("kernel", "uname -r", "6.1.0-18-amd64")),
        Fact("sysctl", node, {"key": "net.ipv4.ip_forward", "value": str(ip_forward),
                              "number": ip_forward, "present": True},
             _src("sysctl", "sysctl -a", f"net.ipv4.ip_forward = {ip_forward}")),
    ]
    rules = []
    if reject:
        rules.append(("REJECT", "reject", True, comment,
                      f'-A FORWARD -m comment --comment "{comment}" -j REJECT '
                      "--reject-with icmp-host-prohibited"))
    rules.append(("KUBE-FORWARD", "jump", False, comment,
                  f'-A FORWARD -m comment --comment "{comment}" -j KUBE-FORWARD'))
    if reject:  # what the path walk concludes from that rule (facts/paths)
        facts.append(Fact("path", node, {
            "flow": "pod_in", "peer": None, "target": None, "toward": "a pod", "state": "new",
            "src": "10.244.9.2", "dst": "10.244.1.2", "proto": "icmp", "dport": None,
            "verdict": "reject", "stage": "netfilter", "at": "filter FORWARD rule 1",
            "hook": "forward", "table": "filter", "chain": "FORWARD", "position": 1,
            "rule": rules[0][4], "owner": "unknown", "backend": "nf_tables", "altered_by": None,
            "matched": "unknown",
            "detail": "pod_in | prerouting | forward | reject at filter FORWARD rule 1"},
            _src("path", "walk of the node's collected configuration", "reject")))
    for pos, (target, kind, uncond, cmt, spec) in enumerate(rules, 1):
        facts.append(Fact(
            "iptables_rule", node,
            {"table": "filter", "chain": "FORWARD", "position": pos, "target": target,
             "target_kind": kind, "unconditional": uncond, "spec": spec, "comment": cmt,
             "pkts": 12, "bytes": 720, "backend": "nf_tables"},
            _src("iptables", "iptables-save -c", f"*filter\n:FORWARD ACCEPT [0:0]\n{spec}"),
        ))
    return facts


def reach_facts(names: list[str], broken: str) -> list[Fact]:
    """A measured matrix where only pairs with `broken` fail at the pod layer."""
    facts = []
    for s in names:
        for d in names:
            if s == d:
                continue
            ok = broken not in (s, d)
            facts.append(Fact("reach", s, {"src": s, "dst": d, "layer": "pod", "ok": ok,
                                           "rtt_ms": 0.41 if ok else None,
                                           "detail": None if ok else "timeout"}))
            facts.append(Fact("reach", s, {"src": s, "dst": d, "layer": "underlay",
                                           "ok": True, "rtt_ms": 0.18, "detail": None}))
    return facts


def engine_report(names: list[str], facts: list[Fact]) -> dict:
    """Facts through the shipped rule base and build_report, as `analyze` does."""
    ruleset = load_ruleset([])
    findings = infer(ruleset, facts)
    records = [
        {"name": n, "address": f"198.18.0.{10 + i}", "reachable": True, "error": None,
         "duration_s": 0.3}
        for i, n in enumerate(names, 1)
    ]
    meta = {"started_at": "2026-11-22T10:14:00+00:00",
            "finished_at": "2026-11-22T10:14:02+00:00",
            "transport": "ssh", "inventory": "hosts.yaml"}
    return build_report(meta, records, facts, findings, rules_count=len(ruleset.rules),
                        rules_digest=ruleset.digest, bundle=None)


def two_faults_report() -> dict:
    """node1 rejects forwarded traffic and node2 has forwarding off, at the same time."""
    names = ["node1", "node2", "node3", "node4"]
    facts = []
    for n in names:
        facts += node_facts(n, ip_forward=0 if n == "node2" else 1, reject=n == "node1")
    return engine_report(names, facts + reach_facts(names, broken="node2"))


def write(tmp_path: Path, html: str, name: str = "report.html") -> Path:
    path = tmp_path / name
    path.write_text(html, encoding="utf-8")
    return path


def only_the_file(urls: list[str], path: Path) -> list[str]:
    return [u for u in urls if u != path.resolve().as_uri()]


# --------------------------------------------------------------------------- tests

BANNER_JS = "[...document.querySelectorAll('#verdict ol.causes li')].map(li => li.textContent)"
MARKED_JS = """(() => {
  const svg = document.querySelector('figure.heatmap.primary svg');
  // The label's own text, without its <title> tooltip.
  const own = t => [...t.childNodes].filter(n => n.nodeType === 3).map(n => n.data).join('');
  const names = sel => [...svg.querySelectorAll(sel)].map(t => own(t).replace('⚠ ', ''));
  const marks = [...svg.querySelectorAll('rect.mark')].map(r => {
    const b = r.getBBox(); return [b.x, b.y, b.width, b.height];
  });
  const fail = [...svg.querySelectorAll('.cells rect.c-fail')].length;
  const cells = [...svg.querySelectorAll('.cells rect')].length;
  const color = getComputedStyle(svg.querySelector('.cells rect.c-fail')).fill;
  return {rows: names('.rows text.bad'), cols: names('.cols text.bad'),
          allRows: names('.rows text'), marks, fail, cells, color,
          width: svg.getBoundingClientRect().width};
})()"""


def test_two_root_causes_heatmap_and_no_request(browser: Browser, tmp_path: Path) -> None:
    report = two_faults_report()
    assert report["summary"]["root_causes"] == 2
    path = write(tmp_path, render_html(report))
    urls = browser.load(path)

    # No request to anything but the file itself, by the browser's own account...
    assert urls and urls[0] == path.resolve().as_uri()
    assert only_the_file(urls, path) == []
    # ...and by the page's: no resource timing entries for images, fonts or styles.
    assert browser.eval("performance.getEntriesByType('resource').length") == 0

    banner = browser.eval(BANNER_JS)
    assert len(banner) == 2
    assert any("node1 refuses forwarded pod traffic" in b for b in banner)
    assert any("IP forwarding is off on node2" in b for b in banner)

    m = browser.eval(MARKED_JS)
    assert m["rows"] == ["node2"] and m["cols"] == ["node2"]
    assert m["allRows"] == ["node1", "node2", "node3", "node4"]
    assert m["cells"] == 16 and m["fail"] == 6  # node2's row and column, off the diagonal
    # One outline along node2's row, one down its column: same thickness, crossing at node2.
    assert len(m["marks"]) == 2
    row, col = m["marks"]
    assert row[2] == col[3] and row[3] == col[2] and row[3] < row[2]
    assert m["color"] not in ("", "none", "rgb(0, 0, 0)")  # styled by the inline stylesheet
    assert m["width"] > 100


def test_hostile_node_data_stays_text_and_runs_nothing(browser: Browser, tmp_path: Path) -> None:
    host = f"node-{PWN_SCRIPT}{PWN_IMG}"
    names = ["node1", host, "node3"]
    facts = node_facts("node1")
    facts += node_facts(host, reject=True, comment=f"drop {PWN_SCRIPT} {PWN_IMG}")
    facts += node_facts("node3", ip_forward=0)
    facts.append(Fact("probe_status", "node3", {
        "probe": "ss", "status": "failed",
        "reason": f"process {PWN_SCRIPT}{PWN_IMG} held the socket",
        "blocks": "listen_queue_overflow"}))
    facts += reach_facts(names, broken=host)
    report = engine_report(names, facts)
    html = render_html(report)
    # The CSP alone would stop an injected inline script; take it out so the test proves the
    # escaping, which is what keeps the markup itself clean.
    csp_start = html.index('<meta http-equiv="Content-Security-Policy"')
    bare = html[:csp_start] + html[html.index(">", csp_start) + 1:]
    for page, name in ((html, "with-csp.html"), (bare, "without-csp.html")):
        path = write(tmp_path, page, name)
        urls = browser.load(path)
        assert only_the_file(urls, path) == []
        state = browser.eval("""({
          pwned: window.__pwned === undefined ? null : window.__pwned,
          title: document.title,
          scripts: document.querySelectorAll('script').length,
          imgs: document.querySelectorAll('img, image').length,
          handlers: [...document.querySelectorAll('*')].filter(
            el => [...el.attributes].some(a => a.name.startsWith('on'))).length,
          text: document.body.innerText,
          svgText: [...document.querySelectorAll('svg text')].map(t => t.textContent).join('|'),
        })""")
        assert state["pwned"] is None
        assert "PWNED" not in state["title"]
        assert state["scripts"] == 0 and state["imgs"] == 0 and state["handlers"] == 0
        # Shown as the literal text a reader can copy into a ticket.
        assert PWN_SCRIPT in state["text"]  # hostname, iptables comment, process name
        assert "process " + PWN_SCRIPT in state["text"]
        assert f"drop {PWN_SCRIPT}" in state["text"]
        assert "<script>" in state["svgText"]  # the heatmap's axis labels too


def test_the_detectors_fire(browser: Browser, tmp_path: Path) -> None:
    # Guards the tests above: the same checks do see a script run and a fetch go out when the
    # page has them. `.invalid` never resolves, and the resolver rule maps every name to
    # NOTFOUND anyway, so nothing leaves the machine.
    path = write(tmp_path, f"<!DOCTYPE html><title>t</title><p>{PWN_SCRIPT}</p>"
                           '<img src="http://kubenetdiag.invalid/x.png">')
    urls = browser.load(path)
    assert browser.eval("window.__pwned") == 1
    assert browser.eval("document.title") == "PWNED-S"
    assert only_the_file(urls, path) == ["http://kubenetdiag.invalid/x.png"]


def test_zh_cn_report_in_the_browser(browser: Browser, tmp_path: Path) -> None:
    path = write(tmp_path, render_html(two_faults_report(), lang="zh-CN"))
    urls = browser.load(path)
    assert only_the_file(urls, path) == []
    state = browser.eval("""({
      lang: document.documentElement.lang,
      h1: document.querySelector('h1').textContent,
      h2: [...document.querySelectorAll('h2')].map(h => h.textContent),
      banner: [...document.querySelectorAll('#verdict ol.causes li')].map(l => l.textContent),
      caption: document.querySelector('figure.heatmap figcaption').textContent,
    })""")
    assert state["lang"] == "zh-CN"
    assert state["h1"] == "发现 2 个根因"
    assert state["h2"] == ["连通性", "诊断结果", "集群概览", "未检查项", "未评估的规则", "运行信息"]
    assert any("node2 未开启 IP 转发" in b for b in state["banner"])
    assert any("node1 在 filter 表 FORWARD 链第 1 条规则处拒绝" in b for b in state["banner"])
    assert "Pod 网络" in state["caption"]
