"""The ComfyUI boundary: knot_core never imports the host; the pack imports cheaply, the way ComfyUI loads it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOST_MODULES = ("comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "execution", "nodes")


def test_knot_core_source_never_names_host_modules():
    pattern = re.compile(r"^\s*(?:import|from)\s+(" + "|".join(HOST_MODULES) + r")\b", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "knot_core").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_all_of_knot_core_loads_no_host_module():
    modules = sorted(p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
                     for p in (ROOT / "knot_core").rglob("*.py") if p.name not in ("__main__.py",))
    code = f"""
import importlib, json, sys
for name in {modules!r}:
    try:
        importlib.import_module(name.removesuffix('.__init__'))
    except ImportError as e:  # optional extras (transformers) may be missing; the boundary still holds
        pass
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HOST_MODULES!r})))
"""
    assert _run(code) == []


def test_pack_loads_like_comfyui_loads_it_and_stays_cheap():
    """ComfyUI imports custom_nodes/<pack>/__init__.py under a path-like name, with its own `nodes` module
    already in sys.modules; the pack must not touch that module and must not load models, video or audio code."""
    code = f"""
import importlib.util, json, sys, types
sys.modules['nodes'] = types.ModuleType('nodes')  # ComfyUI's own nodes.py
name = {str(ROOT).replace('.', '_x_')!r}
spec = importlib.util.spec_from_file_location(name, {str(ROOT / '__init__.py')!r})
pack = importlib.util.module_from_spec(spec)
sys.modules[name] = pack
spec.loader.exec_module(pack)
heavy = ['knot_core.dit', 'knot_core.vae', 'knot_core.checkpoints', 'knot_core.pipeline', 'av', 'cv2',
         'transformers', 'safetensors']
print(json.dumps({{'nodes': sorted(pack.NODE_CLASS_MAPPINGS), 'names': sorted(pack.NODE_DISPLAY_NAME_MAPPINGS),
                  'web': pack.WEB_DIRECTORY, 'comfy_nodes_untouched': not hasattr(sys.modules['nodes'], 'host'),
                  'heavy': [m for m in heavy if m in sys.modules],
                  'knot_core': sys.modules['knot_core'].__file__}}))
"""
    got = _run(code)
    assert got["nodes"] == got["names"] and all(n.startswith("KnotForcing") for n in got["nodes"])
    assert len(got["nodes"]) >= 7
    assert got["web"] == "./web" and (ROOT / "web").is_dir()
    assert got["comfy_nodes_untouched"] and got["heavy"] == []
    assert Path(got["knot_core"]) == ROOT / "knot_core" / "__init__.py"


def test_every_input_and_output_has_a_tooltip():
    from nodes import NODE_CLASS_MAPPINGS

    missing = []
    for name, cls in NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        for part in ("required", "optional"):
            for key, value in spec.get(part, {}).items():
                if not (value[1] if len(value) > 1 else {}).get("tooltip"):
                    missing.append(f"{name}.{key}")
        tips = getattr(cls, "OUTPUT_TOOLTIPS", ())
        if len(tips) != len(cls.RETURN_TYPES) or not all(tips):
            missing.append(f"{name} outputs")
    assert missing == []
