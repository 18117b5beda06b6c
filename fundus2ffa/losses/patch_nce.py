"""Mask-enhanced PatchNCE of Fundus2Video (Zhang et al., MICCAI 2024; reference_spec 4.5, pitfalls F1, B6).

PatchNCE is CUT's contrastive loss (Park et al., ECCV 2020): a query patch feature must pick the key
feature at the same location among the keys at other locations. Fundus2Video reuses CUT's machinery on
the generator's own encoder, with the knowledge mask (KM) M multiplying the *inputs* (the "mask
enhancement"; sampling is not mask-aware in the code):

1. encode three 6-channel tensors with the generator's encoder up to the last tap (default taps 0, 4, 8,
   12, 16 of the pix2pixHD global generator; spec 4.3 lists what each is; tap 8 is rectified as the
   code's shared in-place ReLU leaves it, ``generator.encode_taps``, nets/generators/pix2pixhd.py):
   q_src = G_enc(M * [x, x]), q_fake = G_enc(M * [y_hat, y_hat]), q_real = G_enc(M * [y, y])
   (x: the CF, y_hat: the generated window, y: the real window; each repeated to 6 channels);
2. per tap, a projection head Linear(C -> 256) - ReLU - Linear(256 -> 256) and L2 normalisation
   (weights N(0, 0.02));
3. per tap, ``num_patches`` (256) locations, the same for query and key; ``sampling: uniform`` (the
   code: uniformly over the whole map, masked-out zeros included), ``in_mask`` (inside the KM
   downsampled to the tap, or reflection-padded like the input at tap 0; topped up uniformly when the
   mask has too few locations) or ``mixed`` (half
   and half). Permutations are drawn on the CPU (CUT issue #83, pitfall B6) from torch's global RNG;
4. InfoNCE with temperature tau = 0.07: the positive is the key at the same location, the negatives the
   keys at the other sampled locations of the same image (not shared across the batch), the diagonal of
   the negative block filled with -10; keys detached; the mean over locations;
5. the mean over taps; NCE_X = NCE(q = fake, k = src) and, because CUT mode sets ``nce_idt``, NCE_Y =
   NCE(q = fake, k = real); L_NCE = (NCE_X + NCE_Y) / 2 (``idt: false`` keeps NCE_X alone).

The projection heads are built eagerly (:meth:`PatchNCE.build_heads`, called by the model with the
channel counts of the generator's taps) so that ``configure_optimizers`` sees their parameters; CUT's
lazy build on the first batch does not work with Lightning (spec 4.6). The code never trains them
(pitfall F1: ``optimizer_F.zero_grad()`` right before ``step()``); ``freeze_head: true`` reproduces that
(parameters frozen), the default trains them with their own optimiser (fix).

Call shape: ``forward(inputs)`` reads ``inputs.cf``, ``inputs.fake``, ``inputs.real``,
``inputs.extra["encoder"]`` (a callable: N x 6 x H x W -> list of tap features, the generator's
``encode`` bound to the taps) and ``inputs.extra["knowledge_mask"]`` (N x 1 x H x W, or None for an
unmasked PatchNCE).
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fundus2ffa.losses.base import LossInputs, LossTerm
from fundus2ffa.nets.init import init_weights

SAMPLINGS = ("uniform", "in_mask", "mixed")
DEFAULT_LAYERS = (0, 4, 8, 12, 16)


class ProjectionHead(nn.Module):
    """CUT's PatchSampleF MLP for one tap: Linear(C -> d) - ReLU - Linear(d -> d), then L2 normalisation."""

    def __init__(self, in_channels: int, dim: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        return x / (x.norm(p=2, dim=-1, keepdim=True) + 1e-7)


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """PatchNCE of N x P x D query and key features (L2-normalised): the mean cross-entropy over N * P.

    Logits per query location: its positive (the key at the same location) then the P keys of the same
    image, the diagonal (the positive again) filled with -10 (CUT's choice: effectively removed).
    """
    key = key.detach()
    n, p, _ = query.shape
    positive = (query * key).sum(-1, keepdim=True)  # N x P x 1
    negative = torch.bmm(query, key.transpose(1, 2))  # N x P x P
    diagonal = torch.eye(p, dtype=torch.bool, device=query.device)[None]
    negative = negative.masked_fill(diagonal, -10.0)
    logits = torch.cat([positive, negative], dim=2).flatten(0, 1) / temperature
    target = torch.zeros(n * p, dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, target)


def sample_locations(
    num_locations: int, count: int, mask: torch.Tensor | None = None, sampling: str = "uniform"
) -> torch.Tensor:
    """Indices (CPU, long) of ``min(count, num_locations)`` distinct locations of a flattened map.

    mask: the flattened KM at this map's resolution (values > 0 are inside), for in_mask / mixed.
    """
    count = min(int(count), num_locations)
    if sampling == "uniform" or mask is None:
        return torch.randperm(num_locations)[:count]
    inside = torch.nonzero(mask.detach().cpu().flatten() > 0).flatten()
    wanted = count if sampling == "in_mask" else count // 2
    chosen = inside[torch.randperm(inside.numel())[:wanted]]
    if chosen.numel() < count:  # top up uniformly among the locations not chosen yet
        free = torch.ones(num_locations, dtype=torch.bool)
        free[chosen] = False
        rest = torch.nonzero(free).flatten()
        chosen = torch.cat([chosen, rest[torch.randperm(rest.numel())[: count - chosen.numel()]]])
    return chosen


def resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """N x 1 x H x W {0, 1} mask at a feature map's size.

    Smaller maps: max-pooled (a location is inside if any pixel it covers is). Larger maps: tap 0 is the
    generator's reflection-padded input (512 -> 518 px, ReflPad3), so the mask is reflection-padded by
    the same symmetric margin and stays pixel-aligned with the content; stretching it (nearest
    interpolation, an earlier version) shifted it by up to 3 px.
    """
    mask = mask.float()
    in_h, in_w = mask.shape[-2:]
    if (in_h, in_w) == (height, width):
        return mask
    if height <= in_h and width <= in_w:
        return F.adaptive_max_pool2d(mask, (height, width))
    pad_h, pad_w = height - in_h, width - in_w
    if pad_h < 0 or pad_w < 0 or pad_h % 2 or pad_w % 2:
        raise ValueError(
            f"PatchNCE cannot align a {in_h}x{in_w} knowledge mask with a {height}x{width} feature map: a larger "
            "map must be the input padded by the same margin on each side (tap 0 of the generator); check loss.patch_nce.layers"
        )
    top, left = pad_h // 2, pad_w // 2
    mode = "reflect" if top < in_h and left < in_w else "replicate"
    return F.pad(mask, (left, left, top, top), mode=mode)


class PatchNCE(LossTerm):
    """Mask-enhanced PatchNCE (L_NCE, weight lambda_NCE = 1).

    Args:
        weight: lambda_NCE (1).
        layers: the generator's taps (indices into its sequential model; 0, 4, 8, 12, 16).
        num_patches: locations per tap (256).
        temperature: tau (0.07).
        dim: projection width (256).
        sampling: uniform (the code) | in_mask | mixed (spec 4.5 optional improvement).
        idt: add NCE_Y = NCE(fake, real) and average (the code's CUT mode); false: NCE_X alone.
        mask_inputs: multiply the encoder inputs by the KM (the code); false: a plain PatchNCE.
        freeze_head: keep the projection heads at their random initialisation (reproduces F1).
    """

    def __init__(
        self,
        weight: float = 1.0,
        layers=DEFAULT_LAYERS,
        num_patches: int = 256,
        temperature: float = 0.07,
        dim: int = 256,
        sampling: str = "uniform",
        idt: bool = True,
        mask_inputs: bool = True,
        freeze_head: bool = False,
    ):
        super().__init__(weight)
        if sampling not in SAMPLINGS:
            raise ValueError(f"loss.patch_nce.sampling must be one of {'|'.join(SAMPLINGS)}, got {sampling!r}")
        self.layers = [int(i) for i in layers]
        if not self.layers:
            raise ValueError("loss.patch_nce.layers is empty; give the generator taps (e.g. [0, 4, 8, 12, 16])")
        self.num_patches, self.temperature, self.dim = int(num_patches), float(temperature), int(dim)
        self.sampling, self.idt, self.mask_inputs, self.freeze_head = sampling, bool(idt), bool(mask_inputs), bool(freeze_head)
        self.heads = nn.ModuleList()

    def build_heads(self, channels: list[int], init_gain: float = 0.02) -> None:
        """Create one projection head per tap (``channels[i]`` features at ``layers[i]``), N(0, 0.02)."""
        if len(channels) != len(self.layers):
            raise ValueError(f"build_heads needs one channel count per tap ({len(self.layers)}), got {len(channels)}")
        self.heads = nn.ModuleList(ProjectionHead(int(c), self.dim) for c in channels)
        init_weights(self.heads, "normal", init_gain)
        if self.freeze_head:
            self.heads.requires_grad_(False)

    def project(self, features: list[torch.Tensor], ids: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per tap: N x C x h x w features at the locations ``ids`` (N x P) -> N x P x dim, normalised."""
        out = []
        for feature, index, head in zip(features, ids, self.heads):
            flat = feature.flatten(2)  # N x C x L
            picked = torch.gather(flat, 2, index[:, None, :].expand(-1, flat.shape[1], -1))  # N x C x P
            out.append(head(picked.transpose(1, 2)))
        return out

    def draw_ids(self, features: list[torch.Tensor], mask: torch.Tensor | None) -> list[torch.Tensor]:
        """N x P location indices per tap (on the features' device)."""
        ids = []
        for feature in features:
            n, _, h, w = feature.shape
            small = None
            if mask is not None and self.sampling != "uniform":
                small = resize_mask(mask, h, w)
            per_sample = [
                sample_locations(h * w, self.num_patches, None if small is None else small[i], self.sampling)
                for i in range(n)
            ]
            ids.append(torch.stack(per_sample).to(feature.device))
        return ids

    def nce(self, query: list[torch.Tensor], key: list[torch.Tensor], mask: torch.Tensor | None) -> torch.Tensor:
        """Mean over taps of the InfoNCE of the query features against the key features."""
        ids = self.draw_ids(key, mask)
        q = self.project(query, ids)
        with torch.no_grad():  # keys are detached in InfoNCE anyway: no graph for their projection
            k = self.project(key, ids)
        return torch.stack([info_nce(qi, ki, self.temperature) for qi, ki in zip(q, k)]).mean()

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        if len(self.heads) != len(self.layers):
            raise RuntimeError("PatchNCE heads are not built: the model must call build_heads() before training")
        encoder: Callable = inputs.extra["encoder"]
        mask = inputs.extra.get("knowledge_mask")
        use_mask = mask if self.mask_inputs else None

        def doubled(x: torch.Tensor) -> torch.Tensor:
            x = torch.cat([x, x], 1)
            return x * use_mask if use_mask is not None else x

        query = encoder(doubled(inputs.fake))
        with torch.no_grad():
            keys = [doubled(inputs.cf)] + ([doubled(inputs.real)] if self.idt else [])
            if inputs.extra.get("batch_keys", True) and len(keys) > 1:
                n = inputs.cf.shape[0]
                both = encoder(torch.cat(keys))
                key_sets = [[f[:n] for f in both], [f[n:] for f in both]]
            else:
                key_sets = [encoder(k) for k in keys]
        losses = [self.nce(query, key, mask) for key in key_sets]
        return torch.stack(losses).mean()
