"""compile_blocks: the steady state never recompiles, blocks share graphs, output == eager."""

import dataclasses
import importlib.util
import itertools

import pytest
import torch

from knot_core.compilation import find_cxx
from knot_core.config import PRESETS, StreamConfig
from knot_core.dit import KnotDiT
from knot_core.engine.stream import StreamInputs, generate, start_stream


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()  # compiled code and shape history are global per code object: start each test clean
    yield
    torch._dynamo.reset()


def _model(layers=2):
    torch.manual_seed(0)
    return KnotDiT(dataclasses.replace(PRESETS["tiny-noise-ref-mask"], num_layers=layers)).eval()


def _inputs():
    return StreamInputs((8, 8), reference=torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(1)))


def _counting_backend():
    """A torch.compile backend that runs graphs as traced and records each (re)compilation."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    return graphs, backend


def _stream(model, cfg, inputs, chunks):
    return [c.latents for c in itertools.islice(generate(model, cfg, inputs, start_stream(model, cfg, inputs, 3)),
                                                chunks)]


@pytest.mark.parametrize("strategy", ["knot", "self_forcing"])
def test_steady_state_never_recompiles_and_blocks_share_graphs(strategy):
    graphs, counting_backend = _counting_backend()
    model, cfg, inputs = _model(layers=4), StreamConfig.for_strategy(strategy), _inputs()
    model.compile_blocks(backend=counting_backend)
    stream = generate(model, cfg, inputs, start_stream(model, cfg, inputs, 3))
    counts = [len(graphs) for _ in range(10) if next(stream) is not None]
    # per half: knot's 1-frame reference pass, then a symbolic graph for every other length (4, 3);
    # self_forcing's 3-frame passes only
    expected = 4 if strategy == "knot" else 2
    assert counts == [expected] * 10
    _stream(model, cfg, inputs, 3)  # a new stream (new caches, new RoPE tables) on the same model
    assert len(graphs) == expected


def test_new_resolutions_stop_compiling_before_dynamo_gives_up():
    graphs, counting_backend = _counting_backend()
    model, cfg = _model(), StreamConfig()
    model.compile_blocks(backend=counting_backend)
    counts = []
    for size in [(8, 8), (8, 12), (16, 8), (12, 12), (4, 20)]:
        inputs = StreamInputs(size, reference=torch.randn(1, 16, 1, *size))
        _stream(model, cfg, inputs, 3)
        counts.append(len(graphs))
    assert counts[1:] == [counts[1]] * 4  # from the second size on, the symbolic graphs serve every size
    limit = torch._dynamo.config.recompile_limit if hasattr(torch._dynamo.config, "recompile_limit") \
        else torch._dynamo.config.cache_size_limit
    assert counts[-1] / 2 < limit  # per function: below the limit at which dynamo falls back to eager


@pytest.mark.slow  # about 12-60 s of inductor compilation; CI runs it (.ci/run)
@pytest.mark.skipif(find_cxx() is None, reason="inductor needs a C++ compiler on the CPU")
def test_inductor_compiled_stream_equals_eager():
    model, cfg, inputs = _model(), StreamConfig(), _inputs()
    eager = _stream(model, cfg, inputs, 4)
    model.compile_blocks()
    compiled = _stream(model, cfg, inputs, 4)
    diffs = [float((a - b).abs().max()) for a, b in zip(eager, compiled, strict=True)]
    assert max(diffs) < 1e-5, diffs  # measured 4.8e-7 (fused float32 kernels reorder sums)
    assert float((eager[0] - eager[-1]).abs().max()) > 1e-2


def test_compile_settings_are_checked_before_any_work(monkeypatch, tmp_path):
    from knot_core.compilation import check_compile
    from knot_core.errors import ConfigError, MissingDependencyError
    from knot_core.render import RenderJob

    with pytest.raises(ConfigError, match=r"compile='fast'; allowed: none, default, max-autotune$"):
        RenderJob(reference="a.png", model="m.safetensors", vae="v.safetensors", out="o.mp4", compile="fast")
    with pytest.raises(ConfigError, match="allowed: none, default, max-autotune"):
        check_compile("reduce-overhead", "cpu")  # CUDA graphs: not offered until they have run on a GPU
    check_compile("none", "cpu")
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler to be found
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(MissingDependencyError, match=r"needs a C\+\+ compiler"):
        check_compile("default", "cpu")


@pytest.mark.skipif(importlib.util.find_spec("triton") is not None, reason="triton is installed here")
def test_compile_on_a_gpu_without_triton_names_the_install():
    from knot_core.compilation import check_compile
    from knot_core.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match="pip install triton"):
        check_compile("default", "cuda")
