"""Padding an image up to a size a generator can take, and cropping the output back."""

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[slice, slice] | None]:
    """Pad H and W up to multiples of ``multiple`` (split evenly); returns the crop that undoes it.

    Reflection padding, or edge replication where the padding exceeds what reflection allows. The
    generators use it for patch sizes such as Li et al.'s 288x360 Isfahan patches, which no stride-2
    stack of their depth divides; padding and cropping keeps output and target aligned (resizing would not).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return x, None
    top, left = ph // 2, pw // 2
    mode = "reflect" if max(top, ph - top) < h and max(left, pw - left) < w else "replicate"
    x = F.pad(x, (left, pw - left, top, ph - top), mode=mode)
    return x, (slice(top, top + h), slice(left, left + w))
