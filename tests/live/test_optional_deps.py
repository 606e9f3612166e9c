"""Without aiortc/aiohttp the pack still imports and works; `live` says what to install (exit 2, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("aiortc", "aiohttp"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, Block())
"""


def run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, env=env, timeout=120)


def test_without_the_server_libraries_everything_else_imports_and_live_names_the_fix():
    ok = run("import knot_core.live.stream, knot_core.live.server, knot_core.live.demo, nodes; print('imported')")
    assert ok.returncode == 0 and "imported" in ok.stdout, ok.stderr
    live = run("from knot_core.cli import main; raise SystemExit(main(['live', '--seconds', '1']))")
    assert live.returncode == 2 and "Traceback" not in live.stderr
    assert "pip install aiortc aiohttp" in live.stderr
