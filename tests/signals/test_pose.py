"""Pose: POSE_KEYPOINT / OpenPose JSON -> normalised tensors, smoothing, retargeting, rendered maps."""

from __future__ import annotations

import json

import pytest
import torch

from knot_core.errors import InputError
from knot_core.signals.pose import (
    BODY18_COLOURS,
    PoseSignal,
    load_openpose_folder,
    parse_pose_frames,
    render_pose_maps,
    retarget,
    smooth,
)


def person(body: list[tuple[float, float, float]], face: list[tuple[float, float, float]] | None = None) -> dict:
    flat = [v for p in body for v in p]
    return {"pose_keypoints_2d": flat, "face_keypoints_2d": [v for p in (face or []) for v in p],
            "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": None}


def body18(x0: float, y0: float, step: float, missing: tuple[int, ...] = ()) -> list[tuple[float, float, float]]:
    return [(0.0, 0.0, 0.0) if i in missing else (x0 + step * (i % 6), y0 + step * (i // 6), 0.9)
            for i in range(18)]


def fixture_frames() -> list[dict]:
    return [
        {"canvas_width": 640, "canvas_height": 480, "people": [person(body18(100, 50, 20, missing=(3, 17)))]},
        {"canvas_width": 640, "canvas_height": 480, "people": []},  # nobody detected
        {"canvas_width": 320, "canvas_height": 240,
         "people": [person(body18(10, 10, 2)), person(body18(40, 20, 10))]},  # small one first
    ]


def test_normalised_keypoints_with_missing_people_points_and_canvas_sizes():
    seq = parse_pose_frames(fixture_frames())
    kp = seq.keypoints
    assert kp.shape == (3, 1, 18 + 70 + 21 + 21, 3) and seq.layout.body == 18 and seq.aspect == 640 / 480
    assert torch.allclose(kp[0, 0, 0], torch.tensor([100 / 640, 50 / 480, 0.9]))
    assert torch.allclose(kp[0, 0, 7], torch.tensor([(100 + 20) / 640, (50 + 20) / 480, 0.9]))
    assert torch.equal(kp[0, 0, 3], torch.zeros(3)) and torch.equal(kp[0, 0, 17], torch.zeros(3))
    assert int(seq.mask[0].sum()) == 16  # 18 body points, 2 missing; no face, no hands
    assert not seq.mask[1].any() and torch.equal(kp[1], torch.zeros_like(kp[1]))
    # frame 2: the larger person is kept, normalised by its own 320x240 canvas
    assert torch.allclose(kp[2, 0, 0], torch.tensor([40 / 320, 20 / 240, 0.9]))
    both = parse_pose_frames(fixture_frames(), max_people=2).keypoints
    assert both.shape[1] == 2 and torch.allclose(both[2, 1, 0], torch.tensor([10 / 320, 10 / 240, 0.9]))
    assert not both[0, 1].any()  # a second person that is not there stays masked


def test_normalised_input_and_openpose_folder(tmp_path):
    frame = {"people": [person([(0.5, 0.25, 1.0)] * 18, face=[(0.5, 0.2, 0.8)] * 70)]}
    for i in range(3):
        (tmp_path / f"clip_{i:012d}_keypoints.json").write_text(json.dumps(frame))
    with pytest.raises(InputError, match="pose frame 0 has no canvas_width/canvas_height"):
        load_openpose_folder(tmp_path)
    seq = load_openpose_folder(tmp_path, canvas=(1000, 500))
    assert seq.keypoints.shape == (3, 1, 130, 3) and seq.aspect == 2.0
    assert torch.allclose(seq.keypoints[1, 0, 18], torch.tensor([0.5, 0.2, 0.8]))  # already normalised
    pixels = load_openpose_folder(tmp_path, canvas=(1000, 500), coords="pixels")
    assert torch.allclose(pixels.keypoints[0, 0, 0, :2], torch.tensor([0.5 / 1000, 0.25 / 500]))


def test_wrong_pose_structure_is_rejected(tmp_path):
    wrong = r"pose frame 1: got \['canvas_width', 'persons'\]; need a dict with a 'people'"
    with pytest.raises(InputError, match=wrong):
        parse_pose_frames([{"people": []}, {"canvas_width": 5, "persons": []}], canvas=(5, 5))
    bad_len = {"canvas_width": 64, "canvas_height": 64, "people": [{"pose_keypoints_2d": [1.0, 2.0]}]}
    with pytest.raises(InputError, match="pose_keypoints_2d: got 2 values; need a flat list"):
        parse_pose_frames([bad_len])
    face = {"canvas_width": 64, "canvas_height": 64,
            "people": [{"pose_keypoints_2d": [1.0, 1.0, 1.0] * 18, "face_keypoints_2d": [1.0, 1.0, 1.0] * 5}]}
    with pytest.raises(InputError, match="face_keypoints_2d has 5 points; need 70"):
        parse_pose_frames([face])
    mixed = [{"canvas_width": 9, "canvas_height": 9, "people": [person(body18(1, 1, 1))]},
             {"canvas_width": 9, "canvas_height": 9, "people": [{"pose_keypoints_2d": [1.0, 1.0, 1.0] * 25}]}]
    with pytest.raises(InputError, match=r"mixes body layouts with \[18, 25\]"):
        parse_pose_frames(mixed)
    with pytest.raises(InputError, match="need a non-empty list"):
        parse_pose_frames([])
    with pytest.raises(InputError, match="holds no OpenPose .json files"):
        load_openpose_folder(tmp_path)
    with pytest.raises(InputError, match="canvas 0x64"):
        parse_pose_frames([{"canvas_width": 0, "canvas_height": 64, "people": []}])


def test_smoothing_ignores_missing_points():
    frames = []
    for t in range(9):
        x = 100.0 + (5.0 if t % 2 else -5.0)  # jitter around 100 px
        missing = (0,) if t == 4 else ()
        frames.append({"canvas_width": 200, "canvas_height": 200, "people": [person(body18(x, 50, 10, missing))]})
    seq = parse_pose_frames(frames)
    out = smooth(seq, sigma=1.5)
    assert torch.equal(out.mask, seq.mask) and torch.equal(out.keypoints[4, 0, 0], torch.zeros(3))
    x = out.keypoints[:, 0, 1, 0] * 200  # joint 1, in pixels
    assert (x - 110)[2:-2].abs().max() < 0.5 and (x - 110).abs().max() < 3.0  # the ends see fewer neighbours
    assert (seq.keypoints[:, 0, 1, 0] * 200 - 110).abs().min() == 5.0
    # frame 4 lacks joint 0: its neighbours are still smoothed towards 100 px, not towards zero
    assert (out.keypoints[[3, 5], 0, 0, 0] * 200 - 100).abs().max() < 3.0
    assert smooth(seq, 0) is seq


def test_retarget_matches_the_reference_face():
    face = [(300 + 40 * (i % 10), 200 + 30 * (i // 10), 1.0) for i in range(70)]
    frames = [{"canvas_width": 1000, "canvas_height": 1000,
               "people": [person(body18(500, 600, 10), face=[(x + 5 * t, y, c) for x, y, c in face])]}
              for t in range(4)]
    seq = parse_pose_frames(frames)
    ref = torch.zeros(130, 3)
    ref[18:88, 0] = 0.5 + 0.01 * (torch.arange(70) % 10 - 4.5)  # a smaller face centred at (0.5, 0.4)
    ref[18:88, 1] = 0.4 + 0.01 * (torch.arange(70) // 10 - 3.0)
    ref[18:88, 2] = 1.0
    out = retarget(seq, ref, reference_aspect=1.0)
    face_out = out.keypoints[:, 0, 18:88, :2].reshape(-1, 2)
    centre = face_out.mean(0)
    assert torch.allclose(centre, torch.tensor([0.5, 0.4]), atol=1e-5)
    radius = (face_out - centre).pow(2).sum(-1).mean().sqrt()
    ref_radius = (ref[18:88, :2] - ref[18:88, :2].mean(0)).pow(2).sum(-1).mean().sqrt()
    assert abs(float(radius - ref_radius)) < 1e-5
    frame0_in = seq.keypoints[0, 0, 18:88, :2]
    scale = (out.keypoints[0, 0, 18:88, :2] - out.keypoints[0, 0, 18:88, :2].mean(0)).norm(dim=1).mean() / \
        (frame0_in - frame0_in.mean(0)).norm(dim=1).mean()
    shift = out.keypoints[3, 0, 18:88, 0] - out.keypoints[0, 0, 18:88, 0]  # the 15 px drift is kept, scaled
    assert torch.allclose(shift, torch.full((70,), 15 / 1000 * float(scale)), atol=1e-6)
    assert torch.equal(out.mask, seq.mask)
    with pytest.raises(InputError, match=r"reference keypoints \(18, 3\); need \[130, 3\]"):
        retarget(seq, torch.zeros(18, 3), 1.0)


def test_rendered_maps_put_joints_at_the_right_pixels():
    body = [(0.0, 0.0, 0.0)] * 18
    body[0] = (64.0, 32.0, 1.0)  # nose at (64, 32) of a 256x128 canvas
    body[4] = (192.0, 96.0, 1.0)  # right wrist
    seq = parse_pose_frames([{"canvas_width": 256, "canvas_height": 128, "people": [person(body)]}])
    maps = render_pose_maps(seq, width=128, height=64, radius=2)  # half size: joints at (32, 16) and (96, 48)
    assert maps.shape == (1, 64, 128, 3) and maps.dtype == torch.float32
    assert torch.allclose(maps[0, 16, 32], torch.tensor(BODY18_COLOURS[0]) / 255)
    assert torch.allclose(maps[0, 48, 96], torch.tensor(BODY18_COLOURS[4]) / 255)
    lit = (maps[0].sum(-1) > 0).nonzero()
    assert lit[:, 0].min() >= 14 and lit[:, 1].max() <= 98  # nothing drawn away from the two joints
    assert int((maps[0].sum(-1) > 0).sum()) <= 2 * 25  # two discs of radius 2, no limb (its ends are missing)


def test_pose_signal_latent_alignment_and_end_policy():
    frames = [{"canvas_width": 100, "canvas_height": 100, "people": [person(body18(t, 0, 1))]} for t in range(9)]
    seq = parse_pose_frames(frames)
    signal = PoseSignal(seq, fps=16)
    assert signal.available_latent_frames() == 3  # frames 0 | 1-4 | 5-8
    rows = signal.latent_features(0, 3)  # [3, 4, P, K, 3]
    assert rows.shape == (3, 4, 1, 130, 3)
    assert torch.equal(rows[0], seq.keypoints[[0, 0, 0, 0]])
    assert torch.equal(rows[2], seq.keypoints[5:9])
    with pytest.raises(InputError, match="ends at latent frame 3"):
        signal.latent_features(2, 2)
    held = PoseSignal(seq, fps=16, end_policy="continue").latent_features(3, 1)
    assert torch.equal(held[0], seq.keypoints[[8, 8, 8, 8]])
    for fps in (0, -1.0, float("nan")):
        with pytest.raises(InputError, match="the frame rate must be a positive number"):
            PoseSignal(seq, fps=fps)
