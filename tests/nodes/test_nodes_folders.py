"""The pack's path rule: a node reads only files inside ComfyUI's folders, with one refusal and no content leak.

Every escape attempt (absolute, '..', URL-encoded, symlink out of input/, Windows separators and drives,
NUL, hidden, home) is refused with the same message as a missing file, and nothing outside the input
folder is opened: `io.open` and `os.open` are wrapped to record every path opened while a node runs.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from knot_core.errors import CheckpointError, InputError
from nodes import NODE_CLASS_MAPPINGS as N
from nodes.folders import list_files, next_free_file, refusal, safe_name
from nodes.host import ComfyHost, StandaloneHost, use_host

SECRET = "daemon:x:1:1:SECRET-LINE-4711"
EXTENSIONS = (".csv", ".json")
PLACE = "ComfyUI's input folder (.csv, .json)"


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """tmp/input with one good CSV, malformed files and links out; tmp/outside with secret files."""
    inp, out = tmp_path / "input", tmp_path / "outside"
    (inp / "sub").mkdir(parents=True)
    out.mkdir()
    (inp / "expr.csv").write_text("a,b\n" + "\n".join(f"{i / 30:.3f},0.5" for i in range(30)))
    (inp / "sub" / "take.json").write_text('{"fps": 30, "frames": [[0.1, 0.2], [0.3, 0.4]]}')
    for secret in ("secret.csv", "passwd", ".env"):
        (out / secret).write_text(SECRET + "\nDB_PASSWORD=hunter2\n")
    (inp / "link.csv").symlink_to(out / "secret.csv")
    (inp / "linkdir").symlink_to(out, target_is_directory=True)
    (inp / ".hidden.csv").write_text("a\n1\n")
    (inp / "notes.txt").write_text("a\n1\n")
    monkeypatch.setenv("KNOTFORCING_INPUT_DIR", str(inp))
    with use_host(StandaloneHost()):
        yield inp, out


@pytest.fixture
def opened(monkeypatch):
    """Every path opened through io.open / os.open while the test runs (resolved)."""
    import knot_core.signals  # noqa: F401  (the node's lazy imports open module files: done before recording)

    seen: list[Path] = []
    real_io, real_os = io.open, os.open

    def record(path, *args, **kwargs):
        if isinstance(path, (str, bytes, os.PathLike)):
            seen.append(Path(os.fsdecode(path)).resolve())
        return real_io(path, *args, **kwargs)

    def record_os(path, *args, **kwargs):
        seen.append(Path(os.fsdecode(path)).resolve())
        return real_os(path, *args, **kwargs)

    monkeypatch.setattr(io, "open", record)
    monkeypatch.setattr("builtins.open", record)
    monkeypatch.setattr(os, "open", record_os)
    return seen


ESCAPES = [
    "/etc/passwd", "{out}/secret.csv", "../outside/secret.csv", "../../../../etc/passwd", "sub/../../outside/passwd",
    "..%2foutside%2fsecret.csv", "%2e%2e/outside/secret.csv", "..%5coutside%5csecret.csv",
    "link.csv", "linkdir/secret.csv", "linkdir/passwd",
    "..\\outside\\secret.csv", "sub\\..\\..\\outside\\secret.csv", "C:\\Windows\\win.ini", "C:/outside/secret.csv",
    "\\\\server\\share\\secret.csv", "expr.csv\x00.png", "../outside/secret.csv\x00", "~/secret.csv",
    "file:///etc/passwd", ".hidden.csv", "../outside/.env", "notes.txt", "missing.csv", "sub", "", "   ",
    "expr.csv\n", "x" * 300,
]


@pytest.mark.parametrize("name", ESCAPES)
def test_every_escape_is_refused_with_one_message_and_opens_nothing(folders, opened, name):
    inp, out = folders
    name = name.format(out=out)
    with pytest.raises(InputError) as err:
        N["KnotForcingExpressionSignal"]().build(name, 30.0, 16.0, "stop")
    assert str(err.value) == str(refusal("expression file", name, PLACE))  # the same words, exists or not
    assert SECRET not in str(err.value) and "hunter2" not in str(err.value)
    assert opened == []  # not one file opened, inside or out


def test_the_node_lists_and_reads_only_files_inside_input(folders, opened):
    inp, _ = folders
    names = N["KnotForcingExpressionSignal"].INPUT_TYPES()["required"]["file"][0]
    assert names == ["expr.csv", "sub/take.json"]  # no links out, no hidden files, only .csv/.json
    expr = N["KnotForcingExpressionSignal"]().build("expr.csv", 30.0, 16.0, "stop")[0]
    assert expr.items[0].values.shape == (16, 2)  # 30 rows at 30 fps -> 1 s at 16 fps
    take = N["KnotForcingExpressionSignal"]().build("./sub/take.json", 0.0, 16.0, "stop")[0]
    assert take.items[0].row_shape == (2,)
    assert opened and all(p.is_relative_to(inp.resolve()) for p in opened)


@pytest.mark.parametrize("content", [
    SECRET + "\n1,2\n", "a,b\n1,2\n" + SECRET + ",3\n", "[[1, 2], [\"" + SECRET + "\"]]",
    '{"frames": "' + SECRET + '"}', "{" + SECRET, "Timecode,BlendShapeCount\n" + SECRET + ",52\n",
])
def test_a_malformed_file_in_input_is_named_but_never_quoted(folders, content):
    inp, _ = folders
    suffix = ".json" if content.startswith(("[", "{")) else ".csv"
    (inp / f"bad{suffix}").write_text(content)
    with pytest.raises(InputError) as err:
        N["KnotForcingExpressionSignal"]().build(f"bad{suffix}", 30.0, 16.0, "stop")
    text = str(err.value)
    assert f"'bad{suffix}'" in text and "not an expression table" in text
    assert "SECRET" not in text and "daemon" not in text and str(inp) not in text
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained message carries it either


def test_binary_file_is_refused_without_content(folders):
    inp, _ = folders
    (inp / "blob.csv").write_bytes(b"\xff\xfe\x00SECRET\x80\x81")
    with pytest.raises(InputError, match="not an expression table") as err:
        N["KnotForcingExpressionSignal"]().build("blob.csv", 30.0, 16.0, "stop")
    assert "SECRET" not in str(err.value)


def test_safe_name_rules():
    assert all(safe_name(n) for n in ("a.csv", "sub/a.csv", "./a.csv", "a b.csv", "%2e%2e.csv", "é.csv"))
    assert not any(safe_name(n) for n in ("", "/a", "../a", "a/../../b", "a\\b", "C:a", "a\x00", "~/a", ".a",
                                          "sub/.a", None, 3))
    assert len(str(refusal("f", "x" * 300, "p"))) < 300  # a long name is cut, not echoed whole


def test_model_names_must_be_listed(tmp_path, monkeypatch):
    """Model folders: only names the host lists; absolute paths and '..' find nothing, whatever exists there."""
    monkeypatch.setenv("KNOTFORCING_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "models" / "vae").mkdir(parents=True)
    (tmp_path / "models" / "vae" / "a.safetensors").write_bytes(b"x")
    (tmp_path / "elsewhere.safetensors").write_bytes(b"x")
    h = StandaloneHost()
    assert h.model_path("vae", "a.safetensors") == tmp_path / "models" / "vae" / "a.safetensors"
    for name in (str(tmp_path / "elsewhere.safetensors"), "../../elsewhere.safetensors", "../vae/a.safetensors",
                 "a.safetensors\x00", "..\\..\\elsewhere.safetensors"):
        assert h.model_path("vae", name) is None
    with use_host(h), pytest.raises(CheckpointError, match="not found in models/vae") as err:
        N["KnotForcingVAELoader"]().load(str(tmp_path / "elsewhere.safetensors"), "fp32")
    assert "absolute" not in str(err.value)


def _pickle_with_secret() -> bytes:
    import pickle

    return pickle.dumps({"w": b"\x00", "note": SECRET}, protocol=2)  # not tensors: a weights-only load refuses it


@pytest.mark.parametrize("content", [
    (SECRET + "\nDB_PASSWORD=hunter2\n").encode(),  # a text file under a model's name
    len(b'{"' + SECRET.encode() + b'": 1}').to_bytes(8, "little") + b'{"' + SECRET.encode() + b'": 1}',  # header
    len(b'{"a": "\xff' + SECRET.encode() + b'"}').to_bytes(8, "little") + b'{"a": "\xff' + SECRET.encode() + b'"}',
    b"\x80\x02" + SECRET.encode() * 3,  # a broken pickle
    b"PK\x03\x04" + SECRET.encode() * 3,  # a broken zip
    _pickle_with_secret(),
])
@pytest.mark.parametrize("loader", ["KnotForcingModelLoader", "KnotForcingVAELoader"])
def test_a_malformed_model_file_is_named_as_listed_never_quoted(tmp_path, monkeypatch, content, loader):
    """A file in a model folder that is not weights: one line naming it as the node's list does, with nothing
    of what it holds and not the server's path (the error reaches whoever queued the prompt)."""
    models = tmp_path / "models"
    folder = models / ("knot_forcing" if loader == "KnotForcingModelLoader" else "vae")
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "secret.safetensors").write_bytes(content)
    monkeypatch.setenv("KNOTFORCING_MODELS_DIR", str(models))
    with use_host(StandaloneHost()), pytest.raises((CheckpointError, InputError)) as err:
        N[loader]().load("sub/secret.safetensors", "fp32")
    text = str(err.value)
    place = "models/knot_forcing" if loader == "KnotForcingModelLoader" else "models/vae"
    assert f"'sub/secret.safetensors' in {place}" in text, text
    assert "SECRET" not in text and "daemon" not in text and "hunter2" not in text and str(tmp_path) not in text
    assert err.value.__cause__ is None and err.value.__suppress_context__


class _FolderPaths:
    """The part of ComfyUI's folder_paths module the host adapter reads (the real one: test_comfyui_host)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder_names_and_paths = {"vae": ([str(root / "models" / "vae")], {".safetensors"})}

    def get_input_directory(self) -> str:
        return str(self.root / "input")

    def get_filename_list(self, folder: str) -> list[str]:
        return list_files(Path(self.folder_names_and_paths[folder][0][0]), (".safetensors",))

    def get_full_path(self, folder: str, name: str) -> str | None:
        path = Path(self.folder_names_and_paths[folder][0][0]) / name
        return str(path) if path.is_file() else None


def test_comfy_host_applies_the_same_rule(folders, opened, tmp_path):
    inp, out = folders
    (tmp_path / "models" / "vae").mkdir(parents=True)
    (tmp_path / "models" / "vae" / "w.safetensors").write_bytes(b"x")
    opened.clear()  # the files written above
    h = ComfyHost(_FolderPaths(tmp_path))
    assert h.list_inputs(EXTENSIONS) == ["expr.csv", "sub/take.json"]
    assert h.input_file("expr.csv", EXTENSIONS, "f") == (inp / "expr.csv").resolve()
    for name in ("/etc/passwd", "../outside/secret.csv", "link.csv", "..\\outside\\secret.csv"):
        with pytest.raises(InputError, match="is not a file in ComfyUI's input folder"):
            h.input_file(name, EXTENSIONS, "f")
    assert h.model_path("vae", "w.safetensors") is not None
    assert h.model_path("vae", str(tmp_path / "models" / "vae" / "w.safetensors")) is None  # absolute: not listed
    assert h.model_path("vae", "../vae/w.safetensors") is None
    assert opened == []


@pytest.mark.parametrize(("prefix", "problem"), [
    ("../x", "points outside the output folder"), ("/tmp/x", "points outside the output folder"),
    ("..\\..\\x", "points outside the output folder"), ("C:/x", "points outside the output folder"),
    ("~/x", "points outside the output folder"), ("a\x00b", "holds a control character"),
    ("a\nb", "holds a control character"), (".", "would make a hidden file"), (".x", "would make a hidden file"),
    ("take/.", "would make a hidden file"), ("sub/.hidden/x", "would make a hidden file"),
    ("take/", "ends with '/' and names no file"), ("x" * 300, "is 300 characters long; at most 120"),
])
def test_bad_filename_prefixes_get_one_clear_line(tmp_path, prefix, problem):
    with pytest.raises(InputError, match="^filename_prefix .* " + problem + r".*; use a relative name such as") as err:
        next_free_file(tmp_path / "output", prefix, "mp4")
    assert "\n" not in str(err.value) and len(str(err.value)) < 250
    assert not (tmp_path / "output").exists() or list((tmp_path / "output").rglob("*")) == []  # nothing made


def test_prefix_through_a_link_out_of_the_output_folder_is_refused(tmp_path):
    (tmp_path / "output").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "output" / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(InputError, match="points outside the output folder"):
        next_free_file(tmp_path / "output", "link/take", "mp4")
    assert next_free_file(tmp_path / "output", "portraits/take", "mp4") == (
        tmp_path / "output" / "portraits" / "take_00001.mp4", "portraits")
    assert next_free_file(tmp_path / "output", "  ", "mp4")[0].name == "KnotForcing_00001.mp4"
