"""Every example workflow: known node types only, consistent links, our widgets in range, a thumbnail, a model note."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from nodes import NODE_CLASS_MAPPINGS

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
# Node types the workflows may use besides ours: ComfyUI core (v0.33) and comfyui_controlnet_aux.
CORE = {"LoadImage", "LoadAudio", "LoadVideo", "GetVideoComponents", "CLIPLoader", "CLIPTextEncode", "Note",
        "MarkdownNote", "VAELoader", "SaveVideo", "PreviewImage"}
THIRD_PARTY = {"DWPreprocessor"}  # comfyui_controlnet_aux
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
FILE_COMBOS = {"model_name", "vae_name", "encoder_name"}  # filled from the user's model folders
MODEL_EXTENSIONS = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


def widget_specs(cls) -> list[tuple[str, object, dict]]:
    """(name, type or choices, options) of each widget, in the order the frontend stores widgets_values."""
    specs = []
    spec = cls.INPUT_TYPES()
    for part in ("required", "optional"):
        for name, value in spec.get(part, {}).items():
            kind, options = value[0], (value[1] if len(value) > 1 else {})
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                specs.append((name, kind, options))
                if kind == "INT" and options.get("control_after_generate"):
                    specs.append((name + ".control", ["fixed", "increment", "decrement", "randomize"], {}))
    return specs


def check_widget(node_type: str, name: str, kind, options: dict, value) -> None:
    where = f"{node_type}.{name}={value!r}"
    if name in FILE_COMBOS:
        assert isinstance(value, str) and value.endswith(MODEL_EXTENSIONS), where
    elif isinstance(kind, list):
        assert value in kind, f"{where} not in {kind}"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), where
    elif kind == "STRING":
        assert isinstance(value, str), where
    else:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
        if kind == "INT":
            assert float(value).is_integer(), where
        assert options.get("min", float("-inf")) <= value <= options.get("max", float("inf")), where


@pytest.fixture(params=WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def workflow(request) -> tuple[Path, dict]:
    return request.param, json.loads(request.param.read_text())


def test_there_are_example_workflows():
    assert len(WORKFLOWS) >= 4


def test_known_nodes_and_ui_format(workflow):
    path, data = workflow
    assert data["version"] == 0.4 and isinstance(data["links"], list)
    for node in data["nodes"]:
        assert node["type"] in set(NODE_CLASS_MAPPINGS) | CORE | THIRD_PARTY, node["type"]
        assert {"id", "type", "pos", "size", "widgets_values", "inputs", "outputs", "mode"} <= set(node)
    assert data["last_node_id"] >= max(n["id"] for n in data["nodes"])


def test_links_are_consistent(workflow):
    _, data = workflow
    nodes = {n["id"]: n for n in data["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, kind in data["links"]:
        out, inp = nodes[src]["outputs"][src_slot], nodes[dst]["inputs"][dst_slot]
        assert link_id in (out["links"] or []) and inp["link"] == link_id
        assert out["type"] == inp["type"] == kind, (link_id, out, inp)
    linked = {inp["link"] for n in data["nodes"] for inp in n["inputs"] if inp.get("link") is not None}
    assert linked == {link[0] for link in data["links"]}


def test_our_nodes_sockets_and_widgets_match_input_types(workflow):
    _, data = workflow
    for node in data["nodes"]:
        cls = NODE_CLASS_MAPPINGS.get(node["type"])
        if cls is None:
            continue
        specs = widget_specs(cls)
        values = node["widgets_values"]
        assert len(values) == len(specs), (node["type"], [s[0] for s in specs], values)
        for (name, kind, options), value in zip(specs, values):
            check_widget(node["type"], name, kind, options, value)
        spec = cls.INPUT_TYPES()
        sockets = {k: v[0] for part in ("required", "optional") for k, v in spec.get(part, {}).items()}
        for inp in node["inputs"]:
            assert sockets.get(inp["name"]) == inp["type"], inp
        for name in spec["required"]:
            kind = spec["required"][name][0]
            if not isinstance(kind, list) and kind not in WIDGET_TYPES:
                assert any(i["name"] == name and i["link"] is not None for i in node["inputs"]), \
                    f"{node['type']}: required input {name} is not connected"
        assert [o["type"] for o in node["outputs"]] == list(cls.RETURN_TYPES)


def test_every_model_file_is_named_in_a_note(workflow):
    _, data = workflow
    notes = " ".join(n["widgets_values"][0] for n in data["nodes"] if n["type"] in ("Note", "MarkdownNote"))
    files = [v for n in data["nodes"] for v in n["widgets_values"] if isinstance(v, str) and v.endswith(
        MODEL_EXTENSIONS + (".onnx",))]
    if not files:  # the built-in demo: the note must say so
        assert "no downloads" in notes.lower(), notes[:200]
    for name in files:
        assert name in notes, f"{name} is not named in the workflow's note"


def test_thumbnail_exists_and_decodes(workflow):
    path, _ = workflow
    image = cv2.imread(str(path.with_suffix(".jpg")))
    assert image is not None and image.shape[2] == 3 and min(image.shape[:2]) >= 128


def test_demo_workflow_needs_no_files():
    """Workflow 4 runs as-is: every active node is ours or file-free; the optional Load Audio is bypassed."""
    data = json.loads((ROOT / "workflows" / "4_demo_no_downloads.json").read_text())
    active = {n["type"] for n in data["nodes"] if n["mode"] == 0}
    assert active == {"Note", "KnotForcingDemoModel", "KnotForcingMotionSignal", "KnotForcingStreamingSampler",
                      "PreviewImage"}
    audio = [n for n in data["nodes"] if n["type"] == "LoadAudio"]
    assert [n["mode"] for n in audio] == [4]  # 4 = bypassed in the ComfyUI frontend
    assert not [v for n in data["nodes"] if n["mode"] == 0 for v in n["widgets_values"]
                if isinstance(v, str) and "." in v and v.rsplit(".", 1)[1] in ("wav", "png", "mp4", "safetensors")]


def test_seed_widgets_declare_their_control_widget():
    """The frontend adds a 'control after generate' widget to every INT named seed / noise_seed and stores its
    value in widgets_values; declaring it keeps widget_specs (and saved workflows) aligned with the frontend."""
    for node_type, cls in NODE_CLASS_MAPPINGS.items():
        for part in ("required", "optional"):
            for name, value in cls.INPUT_TYPES().get(part, {}).items():
                if name in ("seed", "noise_seed") and value[0] == "INT":
                    assert value[1].get("control_after_generate"), f"{node_type}.{name}"


# What ComfyUI's frontend reads for its Missing Models panel (ComfyUI_frontend, v1.49): a widget value ending in
# a model extension is a candidate; node.properties.models entries with the same name give its folder and URL, and
# a Download button shows for URLs under these hosts. Third-party nodes carry their registry id (cnr_id).
FRONTEND_MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".onnx", ".gguf")
DOWNLOAD_HOSTS = ("https://huggingface.co/", "https://civitai.com/")
LOADER_FOLDERS = {"KnotForcingModelLoader": {"knot_forcing", "diffusion_models"}, "KnotForcingVAELoader": {"vae"},
                  "KnotForcingAudioEncoderLoader": {"audio_encoders"}, "CLIPLoader": {"text_encoders"}}
NO_PUBLIC_URL = {"avatarforcing_model.pt", "knot_forcing_pose.safetensors"}  # FIELD_NOTES / PEER_FORMATS
CNR_IDS = {**{t: "comfyui-knotforcing" for t in NODE_CLASS_MAPPINGS}, **{t: "comfy-core" for t in CORE},
           "DWPreprocessor": "comfyui_controlnet_aux"}


def test_loaders_carry_the_model_metadata_the_missing_models_panel_reads(workflow):
    _, data = workflow
    notes = " ".join(n["widgets_values"][0] for n in data["nodes"] if n["type"] == "Note")
    for node in data["nodes"]:
        if node["type"] not in LOADER_FOLDERS:
            continue
        files = [v for v in node["widgets_values"] if isinstance(v, str) and v.endswith(FRONTEND_MODEL_EXTENSIONS)]
        models = {m["name"]: m for m in node["properties"].get("models", [])}
        assert files and set(files) == set(models), (node["type"], files, models)
        for name, entry in models.items():
            assert entry["directory"] in LOADER_FOLDERS[node["type"]], entry
            if name in NO_PUBLIC_URL:
                assert "url" not in entry and f"{name} has no public download" in notes, name
            else:
                assert entry["url"].startswith(DOWNLOAD_HOSTS) and entry["url"].endswith("/" + name.split("/")[-1])


def test_every_node_names_its_pack(workflow):
    _, data = workflow
    assert {n["type"]: n["properties"].get("cnr_id") for n in data["nodes"]} == {
        n["type"]: CNR_IDS[n["type"]] for n in data["nodes"]}


def test_the_note_is_the_first_thing_in_view(workflow):
    """On load the canvas shows (pos + offset) * scale from the top-left: the Note must be there, over no node."""
    _, data = workflow
    note = next(n for n in data["nodes"] if n["type"] == "Note")
    ds = data["extra"]["ds"]
    assert all((note["pos"][i] + ds["offset"][i]) * ds["scale"] >= 0 for i in (0, 1))
    bottom = note["pos"][1] + note["size"][1]
    for node in data["nodes"]:
        if node is not note:
            assert node["pos"][1] >= bottom, (node["type"], node["pos"])  # below the Note, none above the view
