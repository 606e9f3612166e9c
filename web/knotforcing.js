// Knot Forcing live preview: plays the chunks of a render inside the Streaming Sampler node as they arrive.
//
// The sampler sends `knotforcing.chunk` websocket events (a few small base64 JPEG frames per chunk, the
// chunk index, its knot boundary, the reference index n and the running fps) and `knotforcing.done`
// (finished, cancelled or failed, with the file). A finished render plays in the node through the host's
// own video output; a cancelled or failed one has no output, so this widget plays the file it kept.
// This extension adds one DOM widget to KnotForcingStreamingSampler nodes; it patches no other node or
// extension, and ignores events it cannot use (missing fields, unknown nodes, an older frontend).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const SAMPLER = "KnotForcingStreamingSampler";
const MAX_QUEUE = 240; // frames buffered for playback; older ones are dropped if the render outpaces playback
// node -> Preview. Looked up through the graph when an event arrives: a node's id is not final when
// nodeCreated runs (a loaded workflow assigns ids after creating the nodes).
const previews = new WeakMap();

function number(value, fallback) {
  return typeof value === "number" && Number.isFinite(value) ? value : fallback;
}

class Preview {
  constructor() {
    this.root = document.createElement("div");
    this.root.className = "knotforcing-preview";
    Object.assign(this.root.style, { display: "flex", flexDirection: "column", gap: "4px", width: "100%" });
    this.image = document.createElement("img");
    // fixed height: the strip below must stay visible whatever size the node is given
    Object.assign(this.image.style, { width: "100%", height: "120px", objectFit: "contain", background: "#111",
      flex: "0 0 auto" });
    this.image.style.display = "none"; // until the first frame: an <img> without a source draws a broken icon
    this.strip = document.createElement("div");
    Object.assign(this.strip.style, { font: "11px monospace", color: "#ccc", whiteSpace: "pre", overflow: "hidden",
      flex: "0 0 auto", minHeight: "14px" }); // never shrunk away by the flex column
    this.root.appendChild(this.strip); // above the image: nothing the host draws below the widget can cover it
    this.root.appendChild(this.image);
    this.video = null; // the kept file of a cancelled render
    this.queue = [];
    this.timer = null;
    this.interval = 1000 / 16;
    this.boundaries = [];
    this.showStrip({});
  }

  reset() {
    this.queue = [];
    this.boundaries = [];
    this.video?.remove();
    this.video = null;
  }

  onChunk(detail) {
    const chunk = number(detail.chunk, null);
    if (chunk === 0) this.reset();
    const fps = number(detail.video_fps, 16);
    const stride = Math.max(1, number(detail.preview_stride, 1));
    this.interval = (1000 * stride) / Math.max(1, fps);
    const boundary = number(detail.knot_boundary, null);
    if (boundary !== null) this.boundaries = [...this.boundaries.slice(-2), boundary]; // the last 3 fit the strip
    const frames = Array.isArray(detail.frames) ? detail.frames.filter((f) => typeof f === "string") : [];
    for (const frame of frames) this.queue.push("data:image/jpeg;base64," + frame);
    if (this.queue.length > MAX_QUEUE) this.queue.splice(0, this.queue.length - MAX_QUEUE);
    this.showStrip(detail);
    this.play();
  }

  onDone(detail) {
    const frames = number(detail.frames, null);
    const fallback = `${detail.interrupted ? "cancelled" : "done"}: ${frames ?? "?"} frames`;
    this.strip.textContent = typeof detail.text === "string" ? detail.text : fallback;
    if (detail.interrupted && typeof detail.filename === "string" && frames) this.showFile(detail);
  }

  showFile(detail) {
    // the kept file, from the output folder through the host's /view route (as its video nodes load theirs)
    const query = new URLSearchParams({ filename: detail.filename, subfolder: String(detail.subfolder ?? ""),
      type: "output" });
    this.stop();
    this.image.style.display = "none";
    this.video?.remove();
    this.video = document.createElement("video");
    Object.assign(this.video, { controls: true, loop: true, muted: true, autoplay: true });
    Object.assign(this.video.style, { width: "100%", height: "120px", background: "#111", flex: "0 0 auto" });
    this.video.src = typeof api.apiURL === "function" ? api.apiURL(`/view?${query}`) : `/view?${query}`;
    this.root.appendChild(this.video);
  }

  showStrip(detail) {
    const chunk = number(detail.chunk, null);
    const chunks = number(detail.chunks, null);
    const parts = [
      chunk === null ? "chunk -" : `chunk ${chunk + 1}${chunks ? "/" + chunks : ""}`,
      `knots @ ${this.boundaries.length ? this.boundaries.join(",") : "-"}`,
      `n=${number(detail.ref_index, "-")}`,
      `${number(detail.fps, 0).toFixed(1)} fps`,
    ];
    this.strip.textContent = parts.join(" | ");
  }

  play() {
    if (this.timer !== null) return;
    const step = () => {
      const next = this.queue.shift();
      if (next === undefined) {
        this.timer = null;
        return;
      }
      this.image.src = next;
      this.image.style.display = "";
      this.timer = setTimeout(step, this.interval);
    };
    step();
  }

  stop() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.queue = [];
  }
}

function previewFor(detail) {
  if (!detail || typeof detail !== "object" || detail.node === undefined || detail.node === null) return null;
  // Inside subgraphs the server's id is a path "outer:inner"; the node on the canvas has the last part.
  const id = String(detail.node).split(":").pop();
  const graph = app.graph;
  if (!graph || typeof graph.getNodeById !== "function") return null;
  const node = graph.getNodeById(Number(id)) ?? graph.getNodeById(id);
  return node ? previews.get(node) ?? null : null;
}

app.registerExtension({
  name: "knotforcing.preview",
  setup() {
    api.addEventListener("knotforcing.chunk", (event) => previewFor(event?.detail)?.onChunk(event.detail));
    api.addEventListener("knotforcing.done", (event) => previewFor(event?.detail)?.onDone(event.detail));
  },
  nodeCreated(node) {
    if (node?.comfyClass !== SAMPLER || typeof node.addDOMWidget !== "function") return;
    const preview = new Preview();
    node.addDOMWidget("knotforcing_preview", "knotforcing.preview", preview.root, {
      serialize: false,
      getMinHeight: () => 150, // one strip line + the 120 px image
    });
    previews.set(node, preview);
    const removed = node.onRemoved;
    node.onRemoved = function () {
      preview.stop();
      previews.delete(node);
      return removed?.apply(this, arguments);
    };
  },
});

// Knot Forcing Live node: shows the live page's link (from the `knotforcing.live` event) inside the node.
const LIVE = "KnotForcingLive";
const links = new Map(); // node -> its link element

function liveNodeFor(detail) {
  if (!detail || detail.node === undefined || detail.node === null) return null;
  const id = String(detail.node).split(":").pop(); // subgraph ids are "outer:inner"
  return app.graph?.getNodeById?.(Number(id)) ?? app.graph?.getNodeById?.(id) ?? null;
}

app.registerExtension({
  name: "knotforcing.live",
  setup() {
    api.addEventListener("knotforcing.live", (event) => {
      const link = links.get(liveNodeFor(event?.detail));
      const url = String(event?.detail?.url || "");
      if (!link || !url.startsWith("http://127.0.0.1:")) return; // only our own local page
      link.href = url;
      link.textContent = "open the live page";
      link.title = `WebSocket API: ${event.detail.ws}`;
    });
  },
  nodeCreated(node) {
    if (node?.comfyClass !== LIVE || typeof node.addDOMWidget !== "function") return;
    const link = document.createElement("a");
    link.target = "_blank";
    link.rel = "noopener";
    link.textContent = "(queue the prompt to go live)";
    link.style.cssText = "display:block;padding:4px;color:#8cf;font-family:sans-serif;";
    node.addDOMWidget("knotforcing_live", "knotforcing.live", link, { serialize: false, getMinHeight: () => 28 });
    links.set(node, link);
    const removed = node.onRemoved;
    node.onRemoved = function () {
      links.delete(node);
      return removed?.apply(this, arguments);
    };
  },
});
