"""Workflow 4 (the built-in demo) run without ComfyUI: its nodes executed in link order with its widget values.

Like the frontend, nodes that are not active (mode != 0: bypassed Load Audio) are left out together with
their links, and frontend-only / preview nodes (Note, PreviewImage) are not executed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_workflow_files import widget_specs

from knot_core.demo import DEMO_SIZE
from knot_core.video_reader import probe, read_frames
from nodes import NODE_CLASS_MAPPINGS
from nodes.host import StandaloneHost, use_host

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "workflows" / "4_demo_no_downloads.json"
NOT_EXECUTED = {"Note", "PreviewImage"}  # frontend-only, or a sink that only shows an image


def run_workflow(data: dict, overrides: dict[str, dict]) -> dict[int, tuple]:
    """Execute the active nodes in dependency order; overrides[type] replaces widget values by name."""
    nodes = {n["id"]: n for n in data["nodes"] if n["mode"] == 0 and n["type"] not in NOT_EXECUTED}
    assert all(n["type"] in NODE_CLASS_MAPPINGS for n in nodes.values()), [n["type"] for n in nodes.values()]
    links = {link[0]: link for link in data["links"] if link[1] in nodes}  # links from bypassed nodes drop out
    outputs: dict[int, tuple] = {}
    while len(outputs) < len(nodes):
        ready = [n for i, n in nodes.items() if i not in outputs and all(
            links[s["link"]][1] in outputs for s in n["inputs"] if s.get("link") in links)]
        assert ready, "the workflow has a cycle"
        for node in ready:
            cls = NODE_CLASS_MAPPINGS[node["type"]]
            names = [name for name, _, _ in widget_specs(cls)]
            kwargs = {k: v for k, v in zip(names, node["widgets_values"]) if not k.endswith(".control")}
            kwargs.update(overrides.get(node["type"], {}))
            for slot in node["inputs"]:
                if slot.get("link") in links:
                    _, src, src_slot, *_ = links[slot["link"]]
                    kwargs[slot["name"]] = outputs[src][src_slot]
            if "hidden" in cls.INPUT_TYPES():
                kwargs["unique_id"] = str(node["id"])
            result = getattr(cls(), cls.FUNCTION)(**kwargs)
            outputs[node["id"]] = result["result"] if isinstance(result, dict) else result
    return outputs


def test_workflow_4_renders_the_demo_with_its_own_widget_values(tmp_path, monkeypatch):
    monkeypatch.setenv("KNOTFORCING_OUTPUT_DIR", str(tmp_path))
    data = json.loads(WORKFLOW.read_text())
    sampler = next(n for n in data["nodes"] if n["type"] == "KnotForcingStreamingSampler")
    assert sampler["widgets_values"][2:4] == [10.0, "seconds"]  # the shipped length; the test asks for 1 s
    threads = torch.get_num_threads()
    with use_host(StandaloneHost()):
        outputs = run_workflow(data, {"KnotForcingStreamingSampler": {"length": 1.0}})
    demo = next(n for n in data["nodes"] if n["type"] == "KnotForcingDemoModel")
    assert outputs[demo["id"]][0].threads == 1 and torch.get_num_threads() == threads  # rendered on 1, restored
    path, video, images = outputs[sampler["id"]]
    assert Path(path).parent == tmp_path / "KnotForcing" and Path(path).name == "demo_00001.mp4"
    info = probe(path)
    assert info.frames == 25 and (info.width, info.height) == (DEMO_SIZE, DEMO_SIZE)  # 1 s at the demo's 25 fps
    assert tuple(images.shape) == (25, DEMO_SIZE, DEMO_SIZE, 3)
    frames = np.stack(list(read_frames(path))).astype(np.float32)  # (25, H, W, 3)
    assert frames.shape == (25, DEMO_SIZE, DEMO_SIZE, 3)
    assert np.abs(frames[-1] - frames[0]).mean() > 1.0  # the face moves
    assert not outputs.keys() & {n["id"] for n in data["nodes"] if n["type"] == "LoadAudio"}  # bypassed


def test_an_unbounded_motion_signal_refuses_length_unit_signal(tmp_path, monkeypatch):
    monkeypatch.setenv("KNOTFORCING_OUTPUT_DIR", str(tmp_path))
    from knot_core.errors import InputError

    data = json.loads(WORKFLOW.read_text())
    with use_host(StandaloneHost()), pytest.raises(InputError, match="no driving signal with an end"):
        run_workflow(data, {"KnotForcingStreamingSampler": {"length_unit": "signal"}})
    assert not list(tmp_path.rglob("*.mp4"))  # refused before the file exists
