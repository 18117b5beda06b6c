"""Histories of past images used by CycleGAN's training procedure (reference_spec section 5).

:class:`ImagePool` is the discriminator's image history of Shrivastava et al. (2017), which CycleGAN
(Zhu et al. 2017, section 4 "Training details") uses with 50 images: the discriminator is shown
generated images from earlier generator versions as well as the newest one, which damps oscillation.

:class:`PartnerHistory` makes a paired dataset unpaired inside the model: every CF is trained against
the real FFA of a different, earlier-seen eye, so the data module stays generic (it keeps serving
pairs) and batch size 1 works (rolling the FFA within a batch of one would change nothing).

Both draw their randomness from torch's global CPU generator (never Python's ``random``), so runs
are reproducible under ``seed_everything`` and the RNG checkpoint callback, and both expose
``state_dict`` / ``load_state_dict`` (plain lists of tensors and strings, loadable with
``torch.load(weights_only=True)``) so that a resumed run continues with the same history.
"""

import torch


def _to(images: list[torch.Tensor], like: torch.Tensor) -> list[torch.Tensor]:
    """Move stored images to ``like``'s device (after a checkpoint was loaded on another one)."""
    if images and images[0].device != like.device:
        return [image.to(like.device) for image in images]
    return images


class ImagePool:
    """A history of up to ``size`` generated images (CycleGAN's ``pool_size``, 50 in the paper).

    ``query(images)`` handles each image of the batch in turn: while the pool is not full the image is
    stored and returned; once full, with probability 0.5 a uniformly chosen stored image is returned
    and the new image takes its place, otherwise the new image itself is returned. ``size=0`` disables
    the pool (``query`` returns its input unchanged). Stored images are detached copies; the returned
    batch keeps the input's dtype and device.
    """

    def __init__(self, size: int = 50):
        if size < 0:
            raise ValueError(f"image pool size must be >= 0, got {size}")
        self.size = int(size)
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of the same shape as ``images``: each item the new image or a stored one."""
        if self.size == 0:
            return images
        self.images = _to(self.images, images)
        images = images.detach()
        # One draw per image, from the CPU generator, whether or not the pool is full yet: the RNG
        # stream then advances by the same amount every step.
        coins = torch.rand(images.shape[0]).tolist()
        slots = torch.randint(0, self.size, (images.shape[0],)).tolist()
        out = []
        for image, coin, slot in zip(images, coins, slots):
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif coin < 0.5:
                out.append(self.images[slot].to(image.dtype))
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict:
        return {"size": self.size, "images": list(self.images)}

    def load_state_dict(self, state: dict) -> None:
        self.images = list(state["images"])[: self.size]


def base_id(sample_id: str) -> str:
    """The eye a sample comes from: views of one record carry ids ``<id>#<view>`` (PairedDataset)."""
    return str(sample_id).split("#", 1)[0]


class PartnerHistory:
    """Unpaired FFA partners for paired batches: the real FFAs of the last ``size`` training samples.

    ``exchange(ffa, ids)`` returns, for each sample ``i`` of the batch, a uniformly random stored FFA
    whose eye (``base_id``) differs from ``ids[i]`` (drawn with replacement, so on average each FFA is
    used once while it is stored), and then stores the batch's own FFAs, dropping the oldest. Partners
    come only from earlier batches, so no CF ever meets its own FFA. When some sample has no eligible
    partner (the very first batch of a run, or a history holding one eye only) it returns ``None``: the
    caller skips that training step, which then only fills the history. Without ``ids`` every stored
    FFA is eligible.

    This is close to CycleGAN's unaligned loader, which pairs each A image with a uniformly random B
    image (``serial_batches`` off), but it never draws the partner of the same eye.
    """

    def __init__(self, size: int = 16):
        if size < 1:
            raise ValueError(f"partner history size must be >= 1, got {size}")
        self.size = int(size)
        self.images: list[torch.Tensor] = []
        self.ids: list[str] = []

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def exchange(self, ffa: torch.Tensor, ids: list[str] | None = None) -> torch.Tensor | None:
        self.images = _to(self.images, ffa)
        ids = [base_id(i) for i in ids] if ids is not None else [None] * ffa.shape[0]
        partners = []
        for sample_id in ids:
            eligible = [j for j, stored in enumerate(self.ids) if sample_id is None or stored != sample_id]
            if not eligible:
                partners = None
                break
            pick = eligible[int(torch.randint(0, len(eligible), (1,)).item())]
            partners.append(self.images[pick])
        for image, sample_id in zip(ffa.detach(), ids):
            self.images.append(image.clone())
            self.ids.append("" if sample_id is None else sample_id)
        del self.images[: -self.size], self.ids[: -self.size]
        return None if partners is None else torch.stack(partners).to(ffa.dtype)

    def state_dict(self) -> dict:
        return {"size": self.size, "images": list(self.images), "ids": list(self.ids)}

    def load_state_dict(self, state: dict) -> None:
        self.images, self.ids = list(state["images"])[-self.size :], list(state["ids"])[-self.size :]
