"""Knowledge mask (KM) of Fundus2Video (Zhang et al., MICCAI 2024; reference_spec section 4.2, pitfall F11).

The KM marks where an angiogram changed strongly between an early and a late frame: in the official code
(section 4.2 [C]) it is ``|F_last - F_first| > 45`` on the uint8 *green* channels of the first and the
last sampled FA frame, after the field-of-view mask/crop/resize, with no morphology. Leakage, staining
and pooling (the late frame brighter) dominate it in diseased eyes; filled vessels that wash out by the
late frame (the early frame brighter) are in it too. The paper uses it without supervision to steer
attention, the discriminators and PatchNCE towards lesions (section 4.1).

Which frames (F11): the code takes the first and last *sampled* frames, so the KM changes with every
draw of frames. :func:`km_frame_indices` offers both choices, ``km_frames``:

* ``sampled_first_last`` (default, the code): the first and last of the frames given, i.e. of the
  frames sampled for this item;
* ``phase_early_late``: the earliest frame of ``early_phase`` and the latest frame of ``late_phase``
  among the frames given; a dataset passes *all* frames of the eye, so the KM is fixed per eye.
  ``early_phase``/``late_phase`` default to the phase of the first/last frame given.

The threshold 45 assumes uint8 intensities of registered frames (F11): tensors in [-1, 1] are mapped back
to the 0..255 scale before thresholding, so both input kinds give the same mask.
"""

from collections.abc import Sequence

import numpy as np
import torch

KM_FRAMES = ("sampled_first_last", "phase_early_late")
DEFAULT_THRESHOLD = 45.0
"""Grey levels (uint8 green channel) by which the late frame must differ from the early one (section 4.2)."""


def _green_numpy(image: np.ndarray, name: str) -> np.ndarray:
    if image.dtype != np.uint8:
        raise TypeError(
            f"knowledge_mask: {name} is a {image.dtype} array; numpy input must be uint8 (0..255), "
            "tensors must be in [-1, 1]"
        )
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        return image[..., 1]
    if image.ndim == 2:
        return image
    raise ValueError(f"knowledge_mask: {name} must be H x W or H x W x 3 uint8, got shape {image.shape}")


def _green_255(image: torch.Tensor, name: str) -> torch.Tensor:
    """N x C x H x W (or C x H x W) in [-1, 1] -> N x 1 x H x W green channel on the 0..255 scale."""
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[1] not in (1, 3):
        raise ValueError(
            f"knowledge_mask: tensor {name} must be N x C x H x W (or C x H x W) with C = 1 or 3, "
            f"got shape {tuple(image.shape)}"
        )
    channel = 1 if image.shape[1] == 3 else 0
    # (x + 1) * 127.5 undoes (u / 255 - 0.5) / 0.5; rounding recovers the uint8 value exactly.
    return ((image[:, channel : channel + 1].float() + 1.0) * 127.5).round_().clamp_(0.0, 255.0)


def knowledge_mask(early, late, threshold: float = DEFAULT_THRESHOLD):
    """``|late - early| > threshold`` on the green channel (reference_spec 4.2, exact code rule).

    Args:
        early, late: the two frames, both numpy or both torch:

            * numpy uint8, H x W (grey) or H x W x 3 (green channel used): returns H x W uint8 {0, 1};
            * torch tensors in [-1, 1], N x C x H x W or C x H x W with C = 1 (grey) or 3 (the green
              channel, index 1, is used; for Fundus2Video's replicated frames all channels are equal).
              They are mapped to the 0..255 scale first (``round((x + 1) * 127.5)``), so the threshold
              means the same as for uint8 input. Returns N x 1 x H x W (1 x H x W for 3-d input) in
              {0, 1}, of ``early``'s floating dtype, on its device, without gradient.
        threshold: strict: a difference of exactly ``threshold`` is not in the mask.
    """
    if isinstance(early, torch.Tensor) != isinstance(late, torch.Tensor):
        raise TypeError("knowledge_mask: early and late must both be numpy arrays or both torch tensors")
    if isinstance(early, torch.Tensor):
        if early.shape != late.shape:
            raise ValueError(f"knowledge_mask: early {tuple(early.shape)} and late {tuple(late.shape)} differ in shape")
        with torch.no_grad():
            mask = ((_green_255(late, "late") - _green_255(early, "early")).abs() > threshold)
            dtype = early.dtype if early.is_floating_point() else torch.float32
            mask = mask.to(dtype)
        return mask[0] if early.ndim == 3 else mask
    early_g, late_g = _green_numpy(np.asarray(early), "early"), _green_numpy(np.asarray(late), "late")
    if early_g.shape != late_g.shape:
        raise ValueError(f"knowledge_mask: early {early_g.shape} and late {late_g.shape} differ in size")
    difference = np.abs(late_g.astype(np.int16) - early_g.astype(np.int16))
    return (difference > threshold).astype(np.uint8)


def km_frame_indices(
    phases: Sequence[str],
    km_frames: str = "sampled_first_last",
    early_phase: str | None = None,
    late_phase: str | None = None,
) -> tuple[int, int]:
    """Indices (early, late) of the KM's frames among time-ordered frames with these ``phases`` (F11).

    ``sampled_first_last``: (0, T - 1). ``phase_early_late``: the first frame of ``early_phase`` and the
    last frame of ``late_phase`` (defaults: the phases of the first and of the last frame).
    """
    if km_frames not in KM_FRAMES:
        raise ValueError(f"km_frames must be one of {'|'.join(KM_FRAMES)}, got {km_frames!r}")
    phases = list(phases)
    if not phases:
        raise ValueError("km_frame_indices: no frames")
    if km_frames == "sampled_first_last":
        return 0, len(phases) - 1
    early_phase = phases[0] if early_phase is None else early_phase
    late_phase = phases[-1] if late_phase is None else late_phase
    for wanted in (early_phase, late_phase):
        if wanted not in phases:
            raise ValueError(
                f"km_frames=phase_early_late needs a frame of phase {wanted!r}, but the frames have phases "
                f"{sorted(set(phases))}"
            )
    early = phases.index(early_phase)
    late = len(phases) - 1 - phases[::-1].index(late_phase)
    return early, late
