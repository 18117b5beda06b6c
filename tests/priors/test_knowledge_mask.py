"""Knowledge mask of Fundus2Video (reference_spec 4.2, F11): the exact code rule on uint8 and on [-1, 1]
tensors, the choice of frames, and what it marks on a synthetic FFA video with known leakage."""

import cv2
import numpy as np
import pytest
import torch

from fundus2ffa.data.synthetic.export import _frame_times, phase_code
from fundus2ffa.data.synthetic.retina import eye_seed, synthesize_eye
from fundus2ffa.data.transforms import to_tensor_pm1
from fundus2ffa.priors.knowledge_mask import km_frame_indices, knowledge_mask


def test_threshold_is_strict_on_the_green_channel():
    early = np.full((1, 6), 100, np.uint8)
    late = np.array([[100, 144, 145, 146, 54, 55]], np.uint8)  # differences 0, 44, 45, 46, -46, -45
    assert knowledge_mask(early, late).tolist() == [[0, 0, 0, 1, 1, 0]]
    assert knowledge_mask(early, late, threshold=43).tolist() == [[0, 1, 1, 1, 1, 1]]
    # RGB input: only the green channel counts (red and blue change by 200, green by 46 at one pixel).
    early_rgb = np.stack([np.zeros((1, 2)), np.full((1, 2), 100), np.zeros((1, 2))], -1).astype(np.uint8)
    late_rgb = early_rgb.copy()
    late_rgb[..., 0] = late_rgb[..., 2] = 200
    late_rgb[0, 1, 1] = 146
    assert knowledge_mask(early_rgb, late_rgb).tolist() == [[0, 1]]
    with pytest.raises(TypeError, match="uint8"):
        knowledge_mask(early.astype(np.float32), late)


def test_tensor_path_equals_uint8_path():
    """Frames normalised to [-1, 1] as the data pipeline does give exactly the uint8 mask."""
    rng = np.random.default_rng(0)
    early = rng.integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    late = np.clip(early.astype(int) + rng.integers(-90, 91, early.shape), 0, 255).astype(np.uint8)
    expected = np.stack([knowledge_mask(e, l) for e, l in zip(early, late)])[:, None]

    rgb = knowledge_mask(torch.stack([to_tensor_pm1(e) for e in early]), torch.stack([to_tensor_pm1(l) for l in late]))
    grey = knowledge_mask(
        torch.stack([to_tensor_pm1(e[..., 1]) for e in early]), torch.stack([to_tensor_pm1(l[..., 1]) for l in late])
    )
    for mask in (rgb, grey):
        assert mask.shape == (3, 1, 20, 24) and mask.dtype == torch.float32 and not mask.requires_grad
        assert torch.equal(mask, torch.from_numpy(expected).float())
    assert 0.2 < expected.mean() < 0.8  # the random differences straddle the threshold
    single = knowledge_mask(to_tensor_pm1(early[0]).double(), to_tensor_pm1(late[0]).double())
    assert single.shape == (1, 20, 24) and single.dtype == torch.float64
    assert np.array_equal(single[0].numpy(), expected[0, 0])


def test_frame_choice():
    phases = ["V", "V", "L", "L", "L"]
    assert km_frame_indices(phases) == (0, 4)
    assert km_frame_indices(phases, "phase_early_late") == (0, 4)
    assert km_frame_indices(phases, "phase_early_late", early_phase="L") == (2, 4)
    assert km_frame_indices(phases, "phase_early_late", late_phase="V") == (0, 1)
    with pytest.raises(ValueError, match="phase 'A'"):
        km_frame_indices(phases, "phase_early_late", early_phase="A")
    with pytest.raises(ValueError, match="sampled_first_last"):
        km_frame_indices(phases, "first_last")


def _dilate(mask: np.ndarray, size: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((size, size), np.uint8)) > 0


def test_marks_the_growing_leakage_of_a_synthetic_video():
    """The KM of the first kept frame (after dropping the C/A codes, ~20 s) and the last frame (~8-10 min)
    against the synthetic ground truth ``leakage`` (where leakage adds >= 60 grey levels to the last frame).

    Recall: the leakage rim is missed, because there the late frame gains only ~60 levels from leakage
    while the background flush fades by ~25, so |late - first| stays under 45; measured 0.63-0.94 per
    eye (mean 0.80) at 96 px, bounds 0.55 per eye and 0.7 on average. Precision is not comparable on the
    whole mask: the KM also holds the filled vessels of the first frame that wash out (late darker) and
    the staining disc. So the *brightening* part of the KM away from the disc is compared with the
    leakage neighbourhood (2 px margin): measured 100 %, bound 97 %; in normal eyes it is empty.
    """
    recalls = []
    for index in range(16):
        seed = eye_seed(0, index)
        times = _frame_times(seed, 4)
        eye = synthesize_eye(seed, size=96, times=times)
        kept = [i for i, t in enumerate(times) if phase_code(float(t)) not in ("A", "C")]
        first, last = eye.frames[kept[0]], eye.frames[-1]
        km = knowledge_mask(first, last).astype(bool)
        brightening = km & (last > first) & ~_dilate(eye.masks["optic_disc"], 5)
        leakage = eye.masks["leakage"].astype(bool)
        darkening = km & (last < first)
        assert darkening.sum() > 0.01 * eye.masks["fov"].sum()  # washed-out vessels are in the KM too
        if not leakage.any():
            assert not brightening.any(), index
            continue
        recalls.append((km & leakage).sum() / leakage.sum())
        assert recalls[-1] >= 0.55, (index, recalls[-1])
        assert (brightening & _dilate(leakage, 5)).sum() >= 0.97 * brightening.sum(), index
    assert len(recalls) >= 4 and np.mean(recalls) >= 0.7
