"""Video transforms: one random geometry for the CF, every FA frame and every mask of a sample.

Fundus2Video (reference_spec section 4.2 step 5-6) trains with a random crop and a random horizontal
flip. The official loader flips the CF only (pitfall F2: half of the training pairs misregistered) and
silently drops a frame when a crop fails (F3). Here the crop box and the flip are drawn once per sample
and applied to the CF, every frame, the knowledge-mask frames and every mask (conventions: Data), and
no frame is ever dropped.

The crop (section 4.2 step 5, enabled in the code's cleanup commit d0e684b): on the w x w image after
the field-of-view crop, x1 ~ U[0, w/1.5], x2 ~ U[x1 + w/3, w] (and likewise y1, y2 on the height), then
the box is resized back to w x w (bilinear for images, nearest for masks). Boxes are rounded to whole
pixels.

Outputs (:meth:`VideoTransform.to_tensors`): ``cf`` 3 x H x W and ``frames`` T x C x H x W in [-1, 1]
((x/255 - 0.5)/0.5, section 1.1), with C = ``channels``: 1 (the FA green channel; the generator stacks a
3-frame window of single-channel frames, section 4.3) or 3 (the green channel replicated, as the code
feeds real frames); masks 1 x H x W in {0, 1}.
"""

from dataclasses import replace

import cv2
import numpy as np
import torch

from fundus2ffa.data.transforms import to_tensor_pm1
from fundus2ffa.data.video.records import VideoSample
from fundus2ffa.errors import ConfigError

_CV_MAX_CHANNELS = 512


def resize_stack(stack: np.ndarray, height: int, width: int, interpolation: int) -> np.ndarray:
    """Resize a T x H x W stack (every frame alike) with as few OpenCV calls as possible."""
    out = []
    for start in range(0, stack.shape[0], _CV_MAX_CHANNELS):
        chunk = np.ascontiguousarray(np.moveaxis(stack[start : start + _CV_MAX_CHANNELS], 0, -1))
        resized = cv2.resize(chunk, (width, height), interpolation=interpolation)
        out.append(np.moveaxis(resized.reshape(height, width, -1), -1, 0))
    return np.ascontiguousarray(np.concatenate(out)) if len(out) > 1 else np.ascontiguousarray(out[0])


def random_crop_box(rng: np.random.Generator, height: int, width: int) -> tuple[int, int, int, int]:
    """(y1, y2, x1, x2) of section 4.2 step 5: start ~ U[0, side/1.5], end ~ U[start + side/3, side]."""

    def span(side: int) -> tuple[int, int]:
        start = int(rng.uniform(0.0, side / 1.5))
        end = int(round(rng.uniform(start + side / 3.0, side)))
        return start, min(side, max(start + 1, end))

    y1, y2 = span(height)
    x1, x2 = span(width)
    return y1, y2, x1, x2


class VideoTransform:
    """Random crop and flips with shared parameters for the CF, all frames and all masks, then tensors.

    Args:
        random_crop: probability of the section 4.2 crop (1.0 in the code's training, 0 for evaluation).
        hflip: probability of a horizontal flip of *everything* (the code flips the CF only, F2).
        vflip: probability of a vertical flip (not in the code; off by default).
        channels: 1 (frames T x 1 x H x W) or 3 (frames T x 3 x H x W, the green channel replicated).
    """

    def __init__(self, random_crop: float = 0.0, hflip: float = 0.0, vflip: float = 0.0, channels: int = 1):
        for name, value in (("random_crop", random_crop), ("hflip", hflip), ("vflip", vflip)):
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"data.*_transform.{name} is a probability in [0, 1], got {value}")
        if int(channels) not in (1, 3):
            raise ConfigError(f"data.*_transform.channels must be 1 or 3, got {channels}")
        self.random_crop, self.hflip, self.vflip = float(random_crop), float(hflip), float(vflip)
        self.channels = int(channels)

    @property
    def is_random(self) -> bool:
        """Whether the transform draws random numbers (evaluation transforms do not)."""
        return bool(self.random_crop or self.hflip or self.vflip)

    def geometry(self, sample: VideoSample, rng: np.random.Generator | None) -> VideoSample:
        """The sample cropped/flipped with one set of parameters (uint8 in, uint8 out, same size).

        ``rng`` may be None for a transform that is not random."""
        if not self.is_random:
            return sample
        if rng is None:
            raise ValueError("a random VideoTransform needs a numpy Generator")
        height, width = sample.cf.shape[:2]
        box = random_crop_box(rng, height, width) if rng.random() < self.random_crop else None
        hflip = rng.random() < self.hflip
        vflip = rng.random() < self.vflip

        def image(array: np.ndarray, nearest: bool, stack: bool) -> np.ndarray:
            interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
            if box is not None:
                y1, y2, x1, x2 = box
                array = array[..., y1:y2, x1:x2] if stack else array[y1:y2, x1:x2]
                if stack:
                    array = resize_stack(array, height, width, interpolation)
                else:
                    array = cv2.resize(np.ascontiguousarray(array), (width, height), interpolation=interpolation)
            w_axis = -1 if stack or array.ndim == 2 else 1
            if hflip:
                array = np.flip(array, axis=w_axis)
            if vflip:
                array = np.flip(array, axis=w_axis - 1)
            return np.ascontiguousarray(array)

        return replace(
            sample,
            cf=image(sample.cf, nearest=False, stack=False),
            frames=image(sample.frames, nearest=False, stack=True),
            masks={name: image(mask, nearest=True, stack=False) for name, mask in sample.masks.items()},
            km_frames=None if sample.km_frames is None else image(sample.km_frames, nearest=False, stack=True),
        )

    def to_tensors(self, sample: VideoSample) -> dict:
        """``cf`` 3 x H x W, ``frames`` T x C x H x W in [-1, 1]; each mask 1 x H x W float {0, 1}."""
        frames = torch.from_numpy(np.ascontiguousarray(sample.frames)).float().div_(127.5).sub_(1.0)[:, None]
        if self.channels == 3:
            frames = frames.expand(-1, 3, -1, -1).contiguous()
        out = {"cf": to_tensor_pm1(sample.cf), "frames": frames}
        for name, mask in sample.masks.items():
            out[name] = torch.from_numpy(np.ascontiguousarray(mask > 0)).float()[None]
        return out
