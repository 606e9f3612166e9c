"""ComfyUI-KnotForcing: the entry point ComfyUI imports from custom_nodes/.

Kept cheap: it makes the bundled `knot_core` importable, registers the models/knot_forcing
folder, and exports the node mappings; models, signals and the VAE load only when a node runs.
"""

import importlib.util
import logging
import sys
from pathlib import Path

_PACK = Path(__file__).resolve().parent
WEB_DIRECTORY = "./web"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]


def _bundle_knot_core() -> None:
    """Import this pack's knot_core under its own name, without putting the pack folder on sys.path
    (that would expose tests/ and nodes/ as top-level modules and shadow ComfyUI's own `nodes`)."""
    if "knot_core" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("knot_core", _PACK / "knot_core" / "__init__.py",
                                                  submodule_search_locations=[str(_PACK / "knot_core")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["knot_core"] = module
    spec.loader.exec_module(module)


if __package__:  # imported as a package: ComfyUI (custom_nodes/<pack>/__init__.py) or a test loading it so
    _bundle_knot_core()
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from .nodes.host import host

    host().register_model_folder()
    logging.getLogger(__name__).info("Knot Forcing: %d nodes (host: %s)", len(NODE_CLASS_MAPPINGS), host().name)
else:  # pytest imports the repository root's __init__.py as a plain module while collecting: export nothing
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
