"""web/knotforcing.js under Node.js with the frontend's app/api replaced by small recorders and a minimal DOM."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")

APP = """export const app = { extensions: [], registerExtension(e) { this.extensions.push(e); },
  nodes: [], graph: { getNodeById(id) { return app.nodes.find((n) => n.id === id) ?? null; } } };\n"""
API = """export const api = { handlers: {}, addEventListener(name, fn) { (this.handlers[name] ??= []).push(fn); },
  dispatch(name, detail) { for (const fn of this.handlers[name] ?? []) fn({ detail }); },
  apiURL(route) { return "/api" + route; } };\n"""
HARNESS = """
class El { constructor(tag) { this.tag = tag; this.style = {}; this.children = [];
  this.textContent = ""; this.src = ""; }
  appendChild(c) { this.children.push(c); c.parent = this; return c; }
  remove() { this.parent.children = this.parent.children.filter((c) => c !== this); } }
globalThis.document = { createElement: (tag) => new El(tag) };
const { app } = await import("./scripts/app.js");
const { api } = await import("./scripts/api.js");
await import("./extensions/knotforcing/knotforcing.js");
const ext = app.extensions[0];
ext.setup();
const widgets = [];
// as when a workflow is loaded: the node is created first and gets its id afterwards
const node = { id: -1, comfyClass: "KnotForcingStreamingSampler",
  addDOMWidget(name, type, el, opts) { widgets.push({ name, type, el, opts }); } };
ext.nodeCreated(node);
node.id = 5;
app.nodes.push(node);
ext.nodeCreated({ id: 6, comfyClass: "KSampler", addDOMWidget() { throw new Error("must not be called"); } });
ext.nodeCreated({ id: 7, comfyClass: "KnotForcingStreamingSampler" });  // old frontend: no addDOMWidget
const root = widgets[0].el, [strip, img] = root.children;
const jpeg = "AAAA";
const seen = [img.style.display];
// events the preview cannot use must not throw
for (const detail of [undefined, null, 3, {}, { node: 99, chunk: 0 }, { node: 5 }, { node: 5, frames: "x" }]) {
  api.dispatch("knotforcing.chunk", detail);
  api.dispatch("knotforcing.done", detail);
}
api.dispatch("knotforcing.chunk", { node: "5", chunk: 0, chunks: 3, knot_boundary: null, ref_index: 8, fps: 2.5,
  video_fps: 16, frames: [jpeg, jpeg] });
seen.push(strip.textContent, img.src, img.style.display);
api.dispatch("knotforcing.chunk", { node: "2:5", chunk: 1, chunks: 3, knot_boundary: 9, ref_index: 12, fps: 3.25,
  video_fps: 16, frames: [jpeg] });
seen.push(strip.textContent);
api.dispatch("knotforcing.done", { node: "5", frames: 21, filename: "a.mp4", interrupted: true });
seen.push(strip.textContent, root.children.length);
api.dispatch("knotforcing.done", { node: "5", frames: 21, filename: "a.mp4", subfolder: "kf", interrupted: true,
  text: "cancelled — 21 frames kept in kf/a.mp4" });
const video = root.children[2];
seen.push(strip.textContent, video.tag, video.src, video.controls, root.children.length);
api.dispatch("knotforcing.chunk", { node: "5", chunk: 0, frames: [jpeg] });  // a new render: the old file goes
seen.push(root.children.length, strip.textContent);
node.onRemoved();
app.nodes.length = 0;
api.dispatch("knotforcing.chunk", { node: "5", chunk: 2, frames: [jpeg] });  // removed: ignored
seen.push(strip.textContent);
console.log(JSON.stringify({ name: ext.name, widgets: widgets.map((w) => [w.name, w.type, w.opts.serialize]), seen }));
"""


def run_web_extension(tmp_path, app: str, api: str, harness: str) -> dict:
    """Run web/knotforcing.js under Node with stand-ins for the frontend's app.js / api.js (the harness drives
    it); returns the JSON the harness prints last."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "app.js").write_text(app)
    (tmp_path / "scripts" / "api.js").write_text(api)
    ext = tmp_path / "extensions" / "knotforcing"
    ext.mkdir(parents=True)
    shutil.copy(ROOT / "web" / "knotforcing.js", ext / "knotforcing.js")
    (tmp_path / "harness.mjs").write_text(harness)
    out = subprocess.run([NODE, "harness.mjs"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed; the web extension test needs `node`")
def test_preview_extension_handles_events_and_bad_input(tmp_path):
    got = run_web_extension(tmp_path, APP, API, HARNESS)
    assert got["name"] == "knotforcing.preview"
    assert got["widgets"] == [["knotforcing_preview", "knotforcing.preview", False]]
    seen = got["seen"]
    assert seen[0] == "none"  # no frame yet: the image is hidden, not a broken-image icon
    assert seen[1:4] == ["chunk 1/3 | knots @ - | n=8 | 2.5 fps", "data:image/jpeg;base64,AAAA", ""]
    assert seen[4] == "chunk 2/3 | knots @ 9 | n=12 | 3.3 fps"
    assert seen[5:7] == ["cancelled: 21 frames", 3]  # an older server's event: its frames, the file played
    assert seen[7:12] == ["cancelled — 21 frames kept in kf/a.mp4", "video",
                          "/api/view?filename=a.mp4&subfolder=kf&type=output", True, 3]  # one video, replaced
    assert seen[12] == 2  # the next render's first chunk removes the kept file's player
    assert seen[14] == seen[13]  # a removed node's events are ignored


def test_web_folder_is_one_namespaced_extension():
    files = sorted(p.name for p in (ROOT / "web").iterdir())
    assert files == ["knotforcing.js"]
    text = (ROOT / "web" / "knotforcing.js").read_text()
    assert "registerExtension" in text and "beforeRegisterNodeDef" not in text and ".prototype" not in text
    events = set(__import__("re").findall(r'"(knotforcing\.[a-z]+)"', text))
    assert events == {"knotforcing.chunk", "knotforcing.done", "knotforcing.preview", "knotforcing.live"}
