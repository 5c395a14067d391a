"""Headless Chromium for tests: render a page after its JS ran, take a screenshot, and read the
dashboard's numbers back from the DOM.

Chromium is a system package (`apt-get install chromium`; `.ci/run` installs it). Tests that need
it call `require_chromium()`: it skips when Chromium is absent, except under CI=true, where a
missing browser is a failure (CI must run these tests).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

# As root, Chromium refuses to start without --no-sandbox. The rest keep a test run quiet and
# offline: no background traffic, no component updates, and every host but loopback resolves
# to nothing, so a page that tried to load anything external would fail visibly.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--window-size=1280,900",
)


def chromium_path() -> str | None:
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def require_chromium() -> str:
    path = chromium_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is not installed, and CI must run the browser tests "
                        "(.ci/run installs it with apt-get)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return path


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    # /usr/bin/chromium is a shell wrapper; a session of its own lets a timeout kill the
    # browser and its helper processes, not just the wrapper.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise RuntimeError(f"chromium timed out after {timeout:.0f}s: {err.decode(errors='replace')[-2000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _chromium(url: str, wait_ms: int, extra: list[str]) -> subprocess.CompletedProcess:
    exe = chromium_path()
    if exe is None:
        raise RuntimeError("Chromium is not installed")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        args = [exe, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={wait_ms}",
                *extra, url]
        res = _run(args, timeout=wait_ms / 1000 + 60)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if res.returncode != 0:
        raise RuntimeError(f"chromium exited {res.returncode}: "
                           f"{res.stderr.decode(errors='replace')[-2000:]}")
    return res


def render(url: str, screenshot: Path | None = None, wait_ms: int = 4000) -> str:
    """The DOM of `url` once the page's scripts ran for `wait_ms` of virtual time (timers run
    fast; time stands still while a fetch is in flight). With `screenshot`, a second run saves a
    1280x900 PNG there."""
    dom = _chromium(url, wait_ms, ["--dump-dom"]).stdout.decode()
    if not dom.strip():
        raise RuntimeError(f"chromium dumped an empty DOM for {url}")
    if screenshot is not None:
        screenshot = Path(screenshot)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        _chromium(url, wait_ms, [f"--screenshot={screenshot.resolve()}"])
        if not screenshot.is_file():
            raise RuntimeError(f"chromium wrote no screenshot to {screenshot}")
    return dom


# --- reading the dashboard back ---------------------------------------------------------------

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
         "track", "wbr"}
# Attributes that put the elements inside them in a context (a table row of some path, rule, ...).
_ROW_KEYS = ("data-latency-path", "data-agreement-rule", "data-recent-row")
_TILES = {"total-requests": "requests", "draft-use-rate": "draft_use_rate", "cost-usd": "cost_usd",
          "baseline-usd": "baseline_usd", "savings-usd": "savings_usd",
          "savings-rate": "savings_rate"}


class _Node:
    def __init__(self, tag: str, attrs: dict[str, str], ctx: dict, hidden: bool):
        self.tag, self.attrs, self.ctx, self.hidden = tag, attrs, ctx, hidden
        self.parts: list[str] = []

    @property
    def text(self) -> str:
        return " ".join("".join(self.parts).split())

    def value(self):
        """The raw number in data-value (None when empty), else a datetime attribute, else text."""
        if "data-value" in self.attrs:
            v = self.attrs["data-value"].strip()
            if v == "":
                return None
            f = float(v)
            return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
        if "datetime" in self.attrs:
            return self.attrs["datetime"]
        return self.text


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[_Node] = []
        self.nodes: list[_Node] = []
        self.title_parts: list[str] = []
        self.rows = 0

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        parent = self.stack[-1] if self.stack else None
        ctx = dict(parent.ctx) if parent else {}
        for k in _ROW_KEYS:
            if k in a:
                if k == "data-recent-row":
                    ctx[k] = self.rows
                    self.rows += 1
                else:
                    ctx[k] = a[k]
        node = _Node(tag, a, ctx, "hidden" in a or bool(parent and parent.hidden))
        self.nodes.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in _VOID and self.stack and self.stack[-1].tag == tag:
            self.stack.pop()

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        for n in self.stack:
            n.parts.append(data)
        if self.stack and self.stack[-1].tag == "title" and not any(n.tag == "svg" for n in self.stack):
            self.title_parts.append(data)  # the page's title, not a chart's tooltip


def parse_dashboard(dom: str) -> dict:
    """The numbers the dashboard shows, in the shape of data.json:
    {"title", "mode", "generated_at", "error" (banner text or None), "totals" {..., "by_path"},
     "path_share" {path: fraction}, "latency_ms" {path: {count, p50, p95}},
     "shadow" {"visible", "decisions", "agreement" {rule: {agreed, total, rate}}},
     "recent" [{time, request_id, api, path, rule, model, served_model, input_tokens, ...}],
     "charts" {"cost": {cost_usd|baseline_usd|savings_usd: [(t, cumulative USD)]},
               "window": {cost_usd, baseline_usd, savings_usd}, "mix": {t: {path: count}},
               "mix_totals": {path: count}, "labels": {chart id: aria-label}}}"""
    c = _Collector()
    c.feed(dom)
    c.close()
    out: dict = {"title": "".join(c.title_parts).strip(), "mode": None, "generated_at": None,
                 "error": None, "totals": {"by_path": {}}, "path_share": {}, "latency_ms": {},
                 "shadow": {"visible": False, "decisions": {}, "agreement": {}}, "recent": [],
                 "charts": {"cost": {}, "window": {}, "mix": {}, "mix_totals": {}, "labels": {}}}
    charts = out["charts"]
    recent: dict[int, dict] = {}
    for n in c.nodes:
        a, ctx = n.attrs, n.ctx
        nid = a.get("id")
        if nid in _TILES:
            out["totals"][_TILES[nid]] = n.value()
        elif nid == "mode":
            out["mode"] = n.text
        elif nid == "last-updated":
            out["generated_at"] = n.value()
        elif nid == "error-banner":
            out["error"] = None if n.hidden else n.text
        elif nid == "shadow":
            out["shadow"]["visible"] = not n.hidden
        if nid in ("cost-chart", "mix-chart"):
            charts["labels"][nid] = a.get("aria-label")
        if nid in ("window-cost", "window-baseline", "window-savings"):
            charts["window"][{"window-cost": "cost_usd", "window-baseline": "baseline_usd",
                              "window-savings": "savings_usd"}[nid]] = n.value()
        if a.get("data-chart") == "cost":
            charts["cost"].setdefault(a["data-series"], []).append((int(a["data-t"]), n.value()))
        if a.get("data-chart") == "mix":
            charts["mix"].setdefault(int(a["data-t"]), {})[a["data-path"]] = n.value()
        if "data-mix-total" in a:
            charts["mix_totals"][a["data-mix-total"]] = n.value()
        if "data-path-count" in a:
            out["totals"]["by_path"][a["data-path-count"]] = n.value()
        if "data-path-share" in a:
            out["path_share"][a["data-path-share"]] = n.value()
        if "data-shadow-decision" in a:
            out["shadow"]["decisions"][a["data-shadow-decision"]] = n.value()
        if "data-recent-row" in a:
            recent[ctx["data-recent-row"]] = {"request_id": a.get("data-request-id")}
        metric = a.get("data-metric")
        if metric and "data-latency-path" in ctx:
            out["latency_ms"].setdefault(ctx["data-latency-path"], {})[metric] = n.value()
        if metric and "data-agreement-rule" in ctx:
            out["shadow"]["agreement"].setdefault(ctx["data-agreement-rule"], {})[metric] = n.value()
        field = a.get("data-field")
        if field and "data-recent-row" in ctx:
            recent[ctx["data-recent-row"]][field] = n.value()
    out["recent"] = [recent[i] for i in sorted(recent)]
    return out
