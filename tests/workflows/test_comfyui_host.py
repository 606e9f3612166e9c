"""The pack inside a real ComfyUI: it loads, its nodes are listed, and prompts run through /prompt.

Runs only when COMFYUI_PATH points at a ComfyUI checkout (COMFYUI_PYTHON: the interpreter that runs it,
default this one). The server gets its own --base-directory with this pack linked into custom_nodes and
tiny model files; set COMFYUI_MODELS_DIR to a real models folder to also run the shipped workflows whose
model files are there (the others are skipped, naming the missing files).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
COMFY = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFY, reason="COMFYUI_PATH is not set (a ComfyUI checkout to load the pack into)")
PRIMITIVES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
STARTUP_S, RUN_S = 240, 300


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _post(url: str, data: dict):
    req = urllib.request.Request(url, json.dumps(data).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            body = r.read()
            return json.loads(body) if body.strip() else {}
    except urllib.error.HTTPError as err:
        raise AssertionError(f"/prompt refused the prompt: {err.read().decode()[:2000]}") from err


def _post_raw(url: str, data: dict) -> tuple[int, str]:
    """(status, body) of a POST, refusals included."""
    req = urllib.request.Request(url, json.dumps(data).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _tiny_models(models: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from knot_core.checkpoints import save_knot_model
    from knot_core.config import PRESETS, StreamConfig
    from knot_core.dit import KnotDiT
    from knot_core.model_file import SamplerDefaults
    from knot_core.vae import VAEConfig, WanVAE

    for folder in ("knot_forcing", "vae"):
        (models / folder).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_knot_model(KnotDiT(PRESETS["tiny-noise-ref-mask"]).eval(), models / "knot_forcing" / "kf_tiny.safetensors",
                    sampler=SamplerDefaults(StreamConfig(steps=(1000, 500)), fps=16, resolution=(32, 32)))
    save_file(dict(WanVAE(VAEConfig.tiny()).state_dict()), str(models / "vae" / "kf_tiny_vae.safetensors"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import cv2
    import numpy as np

    base = tmp_path_factory.mktemp("comfy")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "ComfyUI-KnotForcing").symlink_to(ROOT, target_is_directory=True)
    _tiny_models(base / "models")
    (base / "input").mkdir()
    face = np.full((96, 96, 3), (150, 60, 20), np.uint8)
    cv2.circle(face, (48, 40), 20, (130, 160, 220), -1)
    cv2.imwrite(str(base / "input" / "kf_face.png"), face)
    if (SHARED / "media").is_dir():
        for f in (SHARED / "media").iterdir():
            shutil.copy(f, base / "input" / f.name)
    args = []
    if os.environ.get("COMFYUI_MODELS_DIR"):
        folders = ["diffusion_models", "knot_forcing", "vae", "text_encoders", "audio_encoders"]
        yaml = "real:\n  base_path: " + os.environ["COMFYUI_MODELS_DIR"] + "\n" + "".join(
            f"  {f}: {f}/\n" for f in folders)
        (base / "extra_model_paths.yaml").write_text(yaml)
        args = ["--extra-model-paths-config", str(base / "extra_model_paths.yaml")]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = base / "comfyui.log"
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
           "--disable-auto-launch", "--database-url", "sqlite:///:memory:", *args]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=COMFY, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                info = _get(url + "/object_info")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("ComfyUI did not start:\n" + log.read_text()[-4000:]) from None
                time.sleep(1)
        yield {"url": url, "base": base, "log": log, "info": info}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _run(server, prompt: dict) -> dict:
    queued = _post(server["url"] + "/prompt", {"prompt": prompt, "client_id": "knotforcing-test"})
    assert not queued.get("node_errors"), f"ComfyUI dropped invalid nodes: {json.dumps(queued)[:2000]}"
    pid = queued["prompt_id"]
    deadline = time.monotonic() + RUN_S
    while time.monotonic() < deadline:
        history = _get(f"{server['url']}/history/{pid}")
        if pid in history and history[pid].get("status", {}).get("completed") is not None:
            entry = history[pid]
            if entry["status"].get("status_str") == "error" or not entry["status"]["completed"]:
                raise AssertionError(f"prompt failed: {json.dumps(entry['status'])[:3000]}\n"
                                     + server["log"].read_text()[-3000:])
            return entry
        time.sleep(1)
    raise AssertionError("prompt did not finish in time:\n" + server["log"].read_text()[-3000:])


def to_api(workflow: dict, info: dict) -> dict:
    """UI-format workflow -> API prompt, with widget names from /object_info (as the frontend does)."""
    links = {link[0]: link for link in workflow["links"]}
    active = {n["id"] for n in workflow["nodes"] if n["type"] in info and n.get("mode", 0) == 0}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] not in info or node.get("mode", 0) != 0:
            continue  # Note nodes are frontend-only
        spec = info[node["type"]]
        inputs, values = {}, list(node["widgets_values"] or [])
        for part in ("required", "optional"):
            for name in spec.get("input_order", {}).get(part, []):
                kind, options = spec["input"][part][name][0], (spec["input"][part][name] + [{}])[1]
                if isinstance(kind, list) or kind in PRIMITIVES:
                    if not values:
                        break
                    inputs[name] = values.pop(0)
                    if kind == "INT" and (options.get("control_after_generate") or name in ("seed", "noise_seed")):
                        values.pop(0)
        for slot in node["inputs"]:
            if slot.get("link") is not None:
                _, src, src_slot, *_ = links[slot["link"]]
                if src in active:  # a bypassed source with no input of its type: the frontend drops the link
                    inputs[slot["name"]] = [str(src), src_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def test_demo_workflow_runs_without_model_files(server):
    """Workflow 4 as shipped (bypassed Load Audio, Preview Image of the portrait), 1 s long: no model files."""
    from knot_core.video_reader import probe

    workflow = json.loads((ROOT / "workflows" / "4_demo_no_downloads.json").read_text())
    prompt = to_api(workflow, server["info"])
    sampler = next(k for k, v in prompt.items() if v["class_type"] == "KnotForcingStreamingSampler")
    assert "audio" not in next(v for v in prompt.values() if v["class_type"] == "KnotForcingMotionSignal")["inputs"]
    prompt[sampler]["inputs"].update(length=1.0, filename_prefix="kf_demo/demo")
    entry = _run(server, prompt)
    assert sampler in entry["outputs"], json.dumps(entry)[:3000]
    saved = entry["outputs"][sampler]["images"][0]
    info = probe(server["base"] / "output" / saved["subfolder"] / saved["filename"])
    assert (info.frames, info.width, info.height) == (25, 64, 64)
    assert "25 frames, 3 chunks" in entry["outputs"][sampler]["text"][0]
    preview = next(k for k, v in prompt.items() if v["class_type"] == "PreviewImage")
    assert len(entry["outputs"][preview]["images"]) == 1  # the portrait is shown


def test_pack_loads_and_lists_its_nodes(server):
    from nodes import NODE_CLASS_MAPPINGS

    text = server["log"].read_text()
    assert "IMPORT FAILED" not in text or "KnotForcing" not in text.split("IMPORT FAILED", 1)[1][:300]
    assert set(NODE_CLASS_MAPPINGS) <= set(server["info"])
    sampler = server["info"]["KnotForcingStreamingSampler"]
    assert sampler["output_node"] and sampler["output"] == ["STRING", "VIDEO", "IMAGE"]
    names = server["info"]["KnotForcingModelLoader"]["input"]["required"]["model_name"][0]
    assert "kf_tiny.safetensors" in names  # models/knot_forcing is registered
    with urllib.request.urlopen(server["url"] + "/extensions/ComfyUI-KnotForcing/knotforcing.js", timeout=30) as r:
        assert b"knotforcing.preview" in r.read()  # WEB_DIRECTORY is served
    templates = _get(server["url"] + "/workflow_templates")["ComfyUI-KnotForcing"]
    assert sorted(templates) == sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))


def _tiny_prompt(frames: int, prefix: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "kf_face.png"}},
        "2": {"class_type": "KnotForcingModelLoader", "inputs": {"model_name": "kf_tiny.safetensors", "dtype": "fp32"}},
        "3": {"class_type": "KnotForcingVAELoader", "inputs": {"vae_name": "kf_tiny_vae.safetensors", "dtype": "fp32"}},
        "4": {"class_type": "KnotForcingEncodeReference", "inputs": {
            "model": ["2", 0], "vae": ["3", 0], "image": ["1", 0], "framing": "face_crop", "width": 0, "height": 0,
            "center_x": 0.5, "center_y": 0.5}},
        "5": {"class_type": "KnotForcingKnotSettings", "inputs": {
            "strategy": "knot", "chunk_len": 3, "knot_len": 1, "window_len": 6, "steps": "1000,500", "shift": 5.0,
            "fusion_weight": 0.5}},
        "6": {"class_type": "KnotForcingStreamingSampler", "inputs": {
            "model": ["2", 0], "vae": ["3", 0], "reference": ["4", 0], "settings": ["5", 0], "seed": 1,
            "length": frames, "length_unit": "frames", "filename_prefix": prefix, "max_image_frames": 64}},
    }


def test_tiny_render_through_prompt(server):
    from knot_core.video_reader import probe

    entry = _run(server, _tiny_prompt(21, "kf_test/tiny"))
    ui = entry["outputs"]["6"]
    saved = ui["images"][0]
    path = server["base"] / "output" / saved["subfolder"] / saved["filename"]
    assert probe(path).frames == 21 and "21 frames, 2 chunks" in ui["text"][0]
    assert "Knot Forcing: " in server["log"].read_text()


def test_interrupt_in_the_host_leaves_the_finished_chunks(server):
    from knot_core.video_reader import probe

    out = server["base"] / "output" / "kf_interrupt"
    pid = _post(server["url"] + "/prompt", {"prompt": _tiny_prompt(2000, "kf_interrupt/long")})["prompt_id"]
    deadline = time.monotonic() + RUN_S
    while _frames_so_far(out) < 21:
        assert time.monotonic() < deadline, server["log"].read_text()[-3000:]
        time.sleep(0.5)
    _post(server["url"] + "/interrupt", {})
    while True:
        history = _get(f"{server['url']}/history/{pid}")
        if pid in history and history[pid].get("status", {}).get("completed") is not None:
            break
        assert time.monotonic() < deadline
        time.sleep(0.5)
    messages = [m[0] for m in history[pid]["status"]["messages"]]
    assert "execution_interrupted" in messages and not history[pid]["status"]["completed"]
    frames = probe(next(out.glob("*.mp4"))).frames
    assert 21 <= frames < 2000 and (frames - 9) % 12 == 0  # whole chunks only: 9, then 12 per chunk
    # the next prompt runs cleanly on the same cached model
    assert probe(server["base"] / "output" / _saved(_run(server, _tiny_prompt(9, "kf_after/ok")))).frames == 9


def _frames_so_far(folder: Path) -> int:
    from knot_core.video_reader import probe

    files = list(folder.glob("*.mp4"))
    try:
        return probe(files[0]).frames if files else 0
    except Exception:  # noqa: BLE001 - read while a fragment is being appended: try again
        return 0


def _saved(entry: dict) -> str:
    saved = entry["outputs"]["6"]["images"][0]
    return f"{saved['subfolder']}/{saved['filename']}"


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "workflows").glob("*.json")))
def test_shipped_workflow_runs(server, name):
    workflow = json.loads((ROOT / "workflows" / name).read_text())
    info = server["info"]
    missing = sorted({str(v) for n in workflow["nodes"] if n["type"] not in info and n["type"] != "Note"
                      for v in [n["type"] + " (node)"]})
    prompt = to_api(workflow, info)
    for node in prompt.values():
        spec = info[node["class_type"]]["input"]
        for name_, value in node["inputs"].items():
            choices = (spec.get("required", {}).get(name_) or spec.get("optional", {}).get(name_) or [None])[0]
            if isinstance(choices, list) and isinstance(value, str) and value not in choices:
                missing.append(value)
    if missing:
        pytest.skip(f"{name}: this host lacks {', '.join(missing)} (see the workflow's note)")
    _run(server, prompt)


# --- the pack's security and UI contract in the real host (issue 12) -----------------------------------------

SECRET = "daemon:x:1:1:KF-SECRET-4711"
ESCAPES = ["/etc/passwd", "{base}/outside/secret.csv", "../outside/secret.csv", "../../../../etc/passwd",
           "..%2foutside%2fsecret.csv", "%2e%2e/outside/secret.csv", "link.csv", "pipe_link.csv", "linkdir/secret.csv",
           "..\\outside\\secret.csv", "C:\\Windows\\win.ini", "kf_expr.csv\x00.png", "~/secret.csv", ".hidden.csv"]


def _escape_targets(base: Path) -> Path:
    """outside/ beside input/: a secret file and a FIFO that blocks whoever opens it; links to both from input/."""
    outside = base / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.csv").write_text(SECRET + "\n1,2\n")
    if not (outside / "pipe.csv").exists():
        os.mkfifo(outside / "pipe.csv")
    for link, target in (("link.csv", outside / "secret.csv"), ("pipe_link.csv", outside / "pipe.csv"),
                         ("linkdir", outside)):
        if not (base / "input" / link).is_symlink():
            (base / "input" / link).symlink_to(target)
    (base / "input" / ".hidden.csv").write_text(SECRET + "\n")
    (base / "input" / "kf_bad.csv").write_text("a,b\n1,2\n" + SECRET + ",3\n")
    (base / "input" / "kf_expr.csv").write_text("a,b\n" + "\n".join(f"{i / 30:.3f},0.5" for i in range(30)))
    return outside


def _expression_prompt(file: str) -> dict:
    prompt = _tiny_prompt(9, "kf_escape/x")
    prompt["7"] = {"class_type": "KnotForcingExpressionSignal",
                   "inputs": {"file": file, "source_fps": 30.0, "fps": 16.0, "end_policy": "continue"}}
    prompt["6"]["inputs"]["signals"] = ["7", 0]
    return prompt


def _no_reader(fifo: Path) -> bool:
    """True when nobody holds the FIFO open for reading (a writer's non-blocking open then fails with ENXIO)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        return True
    return False


def test_file_escapes_through_prompt_read_nothing_and_leak_nothing(server):
    base = server["base"]
    outside = _escape_targets(base)
    listed = _get(server["url"] + "/object_info/KnotForcingExpressionSignal")
    choices = listed["KnotForcingExpressionSignal"]["input"]["required"]["file"][0]
    assert "kf_expr.csv" in choices and not {"link.csv", "pipe_link.csv", ".hidden.csv"} & set(choices)
    for name in ESCAPES:
        name = name.format(base=base)
        status, body = _post_raw(server["url"] + "/prompt", {"prompt": _expression_prompt(name)})
        assert status == 400 and '"7"' in body, (name, body[:500])  # refused before any node runs
        assert "KF-SECRET" not in body and "hunter" not in body, name
    assert _no_reader(outside / "pipe.csv")  # nothing ever opened the FIFO behind pipe_link.csv (it would block)
    pid = _post(server["url"] + "/prompt", {"prompt": _expression_prompt("kf_bad.csv")})["prompt_id"]
    entry = _wait(server, pid)
    text = json.dumps(entry)
    assert entry["status"]["status_str"] == "error" and "'kf_bad.csv' in the input folder is not an expression" in text
    assert "KF-SECRET" not in text and "KF-SECRET" not in json.dumps(_get(server["url"] + "/history"))
    assert "KF-SECRET" not in server["log"].read_text()


def _wait(server, pid: str) -> dict:
    deadline = time.monotonic() + RUN_S
    while time.monotonic() < deadline:
        history = _get(f"{server['url']}/history/{pid}")
        if pid in history and history[pid].get("status", {}).get("completed") is not None:
            return history[pid]
        time.sleep(0.5)
    raise AssertionError("prompt did not finish in time:\n" + server["log"].read_text()[-3000:])


async def _owner_and_bystander(url: str, prompt: dict, interrupt_after: int | None = None) -> tuple[list, list]:
    """Queue `prompt` as client 'owner' while client 'other' is connected; every message each one got."""
    import aiohttp

    ws = url.replace("http://", "ws://") + "/ws?clientId="
    owner_got, other_got = [], []
    loop = asyncio.get_running_loop()

    async def read(sock, into, until=None):
        async for msg in sock:
            into.append(json.loads(msg.data) if msg.type == aiohttp.WSMsgType.TEXT else {"type": "binary"})
            if until is not None and until(into):
                return

    def finished(got):
        return any(m["type"] in ("execution_success", "execution_error", "execution_interrupted") for m in got)

    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws + "owner") as owner, session.ws_connect(ws + "other") as other:
            bystander = asyncio.create_task(read(other, other_got))
            await loop.run_in_executor(None, _post, url + "/prompt", {"prompt": prompt, "client_id": "owner"})
            if interrupt_after is not None:
                await asyncio.wait_for(read(owner, owner_got, lambda got: sum(
                    m["type"] == "knotforcing.chunk" for m in got) >= interrupt_after), RUN_S)
                await loop.run_in_executor(None, _post, url + "/interrupt", {})
            await asyncio.wait_for(read(owner, owner_got, finished), RUN_S)
            await asyncio.sleep(1.0)  # anything sent to the other client by now has arrived
            bystander.cancel()
    return owner_got, other_got


def _events(got: list, kind: str) -> list[dict]:
    return [m["data"] for m in got if m["type"] == kind]


def test_events_reach_only_their_client_and_the_node_plays_the_video(server):
    pytest.importorskip("aiohttp", reason="the websocket clients use aiohttp (ComfyUI's own dependency)")
    from knot_core.video_reader import probe

    owner, other = asyncio.run(_owner_and_bystander(server["url"], _tiny_prompt(21, "kf_ws/owned")))
    chunks, done = _events(owner, "knotforcing.chunk"), _events(owner, "knotforcing.done")
    assert [c["chunk"] for c in chunks] == [0, 1] and len(done) == 1 and done[0]["ended"] == "done"
    assert not [m for m in owner if m["type"] == "binary"]  # no host preview image: ours only, then the video
    assert not [m for m in other if m["type"].startswith(("knotforcing", "executed", "progress", "binary"))]
    assert done[0]["filename"] not in json.dumps(other)  # the bystander never learns the file's name
    output = next(e["output"] for e in _events(owner, "executed") if e["node"] == "6")
    video = output["images"][0]
    assert video["filename"].endswith(".mp4") and video["type"] == "output" and output["animated"] == [True]
    query = urllib.parse.urlencode({"filename": video["filename"], "subfolder": video["subfolder"], "type": "output"})
    with urllib.request.urlopen(f"{server['url']}/view?{query}", timeout=30) as r:  # what the node's <video> loads
        assert r.headers["Content-Type"] == "video/mp4"
        played = server["base"] / "played.mp4"
        played.write_bytes(r.read())
    info = probe(played)
    assert (info.frames, info.width, info.height) == (21, 32, 32)


def test_cancel_ends_the_node_with_the_kept_file(server):
    pytest.importorskip("aiohttp", reason="the websocket clients use aiohttp (ComfyUI's own dependency)")
    from knot_core.video_reader import probe

    owner, other = asyncio.run(_owner_and_bystander(server["url"], _tiny_prompt(2000, "kf_cancel/long"),
                                                    interrupt_after=2))
    assert any(m["type"] == "execution_interrupted" for m in owner)
    done = _events(owner, "knotforcing.done")
    assert len(done) == 1 and done[0]["ended"] == "cancelled" and done[0]["interrupted"]
    kept = server["base"] / "output" / done[0]["subfolder"] / done[0]["filename"]
    frames = probe(kept).frames
    assert done[0]["frames"] == frames == sum(c["frame_count"] for c in _events(owner, "knotforcing.chunk"))
    assert done[0]["text"] == f"cancelled — {frames} frames kept in {done[0]['subfolder']}/{done[0]['filename']}"
    assert 21 <= frames < 2000 and not [m for m in other if m["type"].startswith("knotforcing")]
