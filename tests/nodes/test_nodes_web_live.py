"""The live link in web/knotforcing.js under Node.js (the harness of test_nodes_web): the Live node gets a link
widget, the `knotforcing.live` event fills it with the local page only, bad events are ignored."""

from __future__ import annotations

import pytest
from test_nodes_web import API, APP, NODE, run_web_extension  # tests/nodes is on sys.path (no package)

HARNESS = """
class El { constructor(tag) { this.tag = tag; this.style = {}; this.textContent = ""; this.href = ""; } }
globalThis.document = { createElement: (tag) => new El(tag) };
const { app } = await import("./scripts/app.js");
const { api } = await import("./scripts/api.js");
await import("./extensions/knotforcing/knotforcing.js");
const ext = app.extensions.find((e) => e.name === "knotforcing.live");
ext.setup();
const widgets = [];
const node = { id: 4, comfyClass: "KnotForcingLive",
  addDOMWidget(name, type, el, opts) { widgets.push({ name, type, el, opts }); } };
ext.nodeCreated(node);
app.nodes.push(node);
ext.nodeCreated({ id: 6, comfyClass: "KSampler", addDOMWidget() { throw new Error("must not be called"); } });
const link = widgets[0].el, seen = [link.textContent];
for (const detail of [undefined, null, {}, { node: 99, url: "http://127.0.0.1:1/x" },
                      { node: 4, url: "https://evil.example/" }, { node: 4 }]) {
  api.dispatch("knotforcing.live", detail);
}
seen.push(link.href);
api.dispatch("knotforcing.live", { node: "2:4", url: "http://127.0.0.1:8390/knotforcing/live/abc/",
                                   ws: "ws://127.0.0.1:8390/knotforcing/live/abc/ws" });
seen.push(link.href, link.textContent, link.title, link.rel);
console.log(JSON.stringify({ widgets: widgets.map((w) => [w.name, w.type, w.opts.serialize]), seen }));
"""


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed; the web extension test needs `node`")
def test_live_link_widget_shows_only_the_local_page(tmp_path):
    got = run_web_extension(tmp_path, APP, API, HARNESS)
    assert got["widgets"] == [["knotforcing_live", "knotforcing.live", False]]
    assert got["seen"][0] == "(queue the prompt to go live)"
    assert got["seen"][1] == ""  # no event it could use set a link (a foreign URL included)
    assert got["seen"][2:] == ["http://127.0.0.1:8390/knotforcing/live/abc/", "open the live page",
                               "WebSocket API: ws://127.0.0.1:8390/knotforcing/live/abc/ws", "noopener"]
