"""Expression: Live Link Face ARKit-52 CSV, plain CSV and JSON -> coefficients at the video fps."""

from __future__ import annotations

import json

import pytest
import torch

from knot_core.errors import InputError
from knot_core.signals.expression import ARKIT_52, ARKIT_HEAD, ExpressionSignal, load_expression


def live_link_csv(path, rows: int = 61, head: bool = True, names=ARKIT_52) -> None:
    """A Live Link Face export: 60 fps timecodes, JawOpen ramps linearly in time, EyeBlinkLeft constant."""
    header = ["Timecode", "BlendShapeCount", *names, *(ARKIT_HEAD if head else ())]
    lines = [",".join(header)]
    for i in range(rows):
        second, frame = divmod(i, 60)
        values = [0.0] * len(names)
        values[names.index("JawOpen")] = i / 60  # = time in seconds
        values[names.index("EyeBlinkLeft")] = 0.25
        tail = [0.1] * (len(ARKIT_HEAD) if head else 0)
        lines.append(",".join([f"14:02:{10 + second:02d}:{frame:02d}.000", str(len(names)),
                               *(f"{v:.6f}" for v in values + tail)]))
    path.write_text("\n".join(lines) + "\n")


def test_live_link_face_csv_resampled_to_video_fps(tmp_path):
    path = tmp_path / "take.csv"
    live_link_csv(path)  # 61 rows at 60 fps = 1.0 s
    seq = load_expression(path)
    assert seq.names == ARKIT_52 and seq.values.shape == (61, 52)
    signal = ExpressionSignal(seq, fps=25)
    assert signal.num_frames == 26 and signal.row_shape == (52,)
    rows = signal.video_features(0, 26)
    jaw = ARKIT_52.index("JawOpen")
    assert torch.allclose(rows[:, jaw], torch.arange(26) / 25, atol=1e-5)  # linear in time: exact at t = i/25
    assert torch.allclose(rows[:, 0], torch.full((26,), 0.25))
    assert signal.latent_features(0, 2).shape == (2, 4, 52)


def test_columns_are_matched_by_name(tmp_path):
    shuffled = tuple(reversed(ARKIT_52))
    path = tmp_path / "shuffled.csv"
    live_link_csv(path, rows=5, head=False, names=shuffled)
    seq = load_expression(path)
    assert torch.allclose(seq.values[4, ARKIT_52.index("JawOpen")], torch.tensor(4 / 60))


def test_expression_csv_with_wrong_column_count(tmp_path):
    path = tmp_path / "short_header.csv"
    live_link_csv(path, rows=3, head=False, names=ARKIT_52[:50])
    with pytest.raises(InputError, match="the header has 52 columns; a Live Link Face CSV has 54"):
        load_expression(path)
    path = tmp_path / "short_row.csv"
    live_link_csv(path, rows=3)
    lines = path.read_text().splitlines()
    lines[2] = ",".join(lines[2].split(",")[:-3])
    path.write_text("\n".join(lines))
    with pytest.raises(InputError, match="line 3: 60 columns but the header has 63"):
        load_expression(path)
    plain = tmp_path / "plain.csv"
    plain.write_text("a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(InputError, match=r"rows have \[2, 3\] values"):
        load_expression(plain, source_fps=30)


def test_plain_csv_and_json(tmp_path):
    plain = tmp_path / "coeffs.csv"
    plain.write_text("\n".join(f"{i},{2 * i}" for i in range(10)))
    with pytest.raises(InputError, match="carries no frame rate; pass source_fps"):
        load_expression(plain)
    seq = load_expression(plain, source_fps=50)
    assert torch.equal(ExpressionSignal(seq, fps=25).values[:, 0], torch.arange(0, 10, 2, dtype=torch.float32))
    data = tmp_path / "coeffs.json"
    data.write_text(json.dumps({"fps": 10, "frames": [[0.0], [1.0], [2.0]]}))
    signal = ExpressionSignal(load_expression(data), fps=20)
    assert torch.allclose(signal.values[:, 0], torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0]))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"fps": 10, "frames": "nope"}))
    with pytest.raises(InputError, match="need a JSON list of per-frame coefficient lists"):
        load_expression(bad)
    nan = tmp_path / "nan.csv"
    nan.write_text("1,2\nnan,3\n")
    with pytest.raises(InputError, match="NaN or infinite coefficient"):
        load_expression(nan, source_fps=25)


def test_expression_signal_fps_must_be_positive(tmp_path):
    path = tmp_path / "take.csv"
    live_link_csv(path, rows=3)
    seq = load_expression(path)
    for fps in (0, -16):
        with pytest.raises(InputError, match=f"expression signal: fps={fps}; the frame rate must be a positive"):
            ExpressionSignal(seq, fps=fps)
    plain = tmp_path / "plain.csv"
    plain.write_text("1,2\n3,4\n")
    with pytest.raises(InputError, match="plain.csv source: fps=0"):
        load_expression(plain, source_fps=0)
