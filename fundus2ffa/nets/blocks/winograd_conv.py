"""A 3 x 3 convolution computed by Winograd's minimal filtering F(2 x 2, 3 x 3) (Lavin & Gray, "Fast
Algorithms for Convolutional Neural Networks", CVPR 2016), for the residual blocks of the pix2pixHD and
Fundus2Video generators (issue 24, ``generator.block_conv: winograd``).

Why: at 256 px the global generator's nine residual blocks run 1024 -> 1024 channel convolutions on a
16 x 16 map; they are half of a pix2pixHD training iteration on a CPU, and the direct (or im2col, see
gemm_conv.py) convolution already runs at matmul speed there, so only less arithmetic makes them faster.
F(2 x 2, 3 x 3) computes each 2 x 2 output tile from a 4 x 4 input tile with 16 multiplications per
channel pair instead of 36: the convolution becomes 16 independent matrix products (one per point of the
transformed tile) of the transformed weights (16 x O x C) with the transformed input tiles (16 x C x
tiles), 2.25x fewer multiply-adds. The input gradient is the same identity transposed (the transposed
products folded back over the overlapping tiles). The weight gradient takes Winograd's route too where
there are enough tiles to pay for it: 16 products of the transformed output gradient (16 x O x tiles,
made for the input gradient anyway) with the recomputed input tiles (16 x tiles x C), then the transform
back to 3 x 3 (``g = G^T dU G``), per block of 128 output channels, as a wide product and one
transposing copy into the weight's layout. Its products run over the tiles (a short inner dimension), and
the transform back costs about 24 ms per 1024 x 1024 weight whatever the map, so with few tiles im2col's
one product (gemm_conv.py ``weight_gradient``) is as fast or faster. One 1024-channel convolution's
forward + backward, one thread, medians of 9 interleaved calls, im2col's weight gradient against
Winograd's: 64 tiles (one 16 x 16 map: pix2pixHD's bottleneck at 256 px, batch 1) 247 against 251 ms,
128 tiles 325 against 335, 256 tiles (one 32 x 32 map: 512 px) 532 against 470, and four 16 x 16 maps
557 against 501; hence Winograd's route from 256 tiles on (``WINOGRAD_WEIGHT_GRADIENT_MIN_TILES``).
cuDNN and oneDNN choose Winograd for such layers; PyTorch's CPU convolution does not offer it.

The transformed weights are made per block of 128 output (forward) or input (input gradient) channels:
the whole 16 x O x C tensor (64 MB at 1024 channels, more than the weight) never exists, and each
block's 8 MB stays in cache for its product. The weight transform is the cost that remains (about 10 ms
per pass at 1024 channels), so the saving is smaller than the multiplications': one bottleneck
convolution, forward + backward with both gradients, one thread on this EPYC, medians of 15 interleaved
calls: im2col (gemm) 181 ms of CPU, this 164 ms (nn.Conv2d about 240); the iteration's numbers are in
the README's performance section. On large maps with few channels the transforms cost more than they
save (64 channels at 256 x 256: 160 ms direct against 600 ms), so it is used only where asked for: the
generators' residual blocks (``generator.block_conv``) and the VGG loss's convolutions of 256+ channels
(``loss.vgg.conv``).

The maths is that of ``nn.Conv2d`` (stride 1, zero ``padding``; the blocks reflection-pad first): the
identity is exact in real arithmetic and differs from the direct sum by float rounding, about 1e-6
relative in float32 (the tests compare outputs and all three gradients to 1e-5, a real pix2pixHD fit's
losses, weights and outputs, and the VGG loss's features and gradient). Memory: the backward recomputes
the transformed tiles and weights from the saved (unpadded) input and weight, what nn.Conv2d keeps, so
the activations kept are the same; the transformed weights (and, in Winograd's weight gradient, each
block's dU) live in one reused 8 MB workspace, the transform back in a 4.5 MB one
(nets/blocks/workspace.py). Odd output sizes are computed on a zero-extended tile grid and cropped. Any
device and dtype (under bf16 autocast it computes in autocast's dtype, as nn.Conv2d does; the transforms
then round in bf16 too). Parameters are ``weight`` and ``bias`` as in nn.Conv2d: checkpoints load into
either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fundus2ffa.nets.blocks.gemm_conv import weight_gradient
from fundus2ffa.nets.blocks.matmul import bmm, mm
from fundus2ffa.nets.blocks.workspace import workspace

# F(2, 3) (Lavin & Gray eq. 7): input transform B^T, filter transform G, output transform A^T
_B_T = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))
_A_T = ((1, 1, 1, 0), (0, 1, -1, -1))
#: columns of the weight transform per matrix product: small enough to stay in cache
_CHUNK = 32768
#: transformed-weight elements per block of output channels (_blocks)
_BLOCK_NUMEL = 2**21
#: the weight gradient by Winograd's route from this many 2 x 2 output tiles (batch x tile rows x tile
#: columns) on; im2col's product below it (module notes: the transform back costs the same at any size)
WINOGRAD_WEIGHT_GRADIENT_MIN_TILES = 256
_TRANSFORMS: dict = {}


def _transforms(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 2-D transforms as matrices on flattened tiles, for ``like``'s device and dtype:
    input 16 x 16 (``V = K_in^T d``), weight 16 x 9 (``U = K_w g``), output 4 x 16 (``Y = K_out m``)."""
    key = (like.device, like.dtype)
    if key not in _TRANSFORMS:
        b_t, g, a_t = (torch.tensor(m, dtype=torch.float64) for m in (_B_T, _G, _A_T))
        k_in = torch.einsum("ai,bj->ijab", b_t, b_t).reshape(16, 16)
        k_w = torch.einsum("ai,bj->abij", g, g).reshape(16, 9)
        k_out = torch.einsum("ai,bj->abij", a_t, a_t).reshape(4, 16)
        _TRANSFORMS[key] = tuple(m.to(device=like.device, dtype=like.dtype) for m in (k_in, k_w, k_out))
    return _TRANSFORMS[key]


def _tiles(x: torch.Tensor) -> torch.Tensor:
    """N x C x (2 th + 2) x (2 tw + 2) -> the transformed input tiles, 16 x (N th tw) x C (the forward's
    product reads them transposed)."""
    n, c = x.shape[:2]
    k_in = _transforms(x)[0]
    d = x.unfold(2, 4, 2).unfold(3, 4, 2)  # N C th tw 4 4 (overlapping tiles, stride 2)
    d = d.permute(4, 5, 0, 2, 3, 1).reshape(16, -1)
    return mm(k_in.t(), d).view(16, -1, c)


def _weight_transform(weight: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """o x C x 3 x 3 (a block of output channels) -> 16 x o x C in the "winograd_weight" workspace, in
    ``like``'s dtype."""
    out_channels, in_channels = weight.shape[:2]
    pairs = out_channels * in_channels
    k_w = _transforms(like)[1]
    flat = weight.reshape(pairs, 9).to(like.dtype)
    u = workspace("winograd_weight", (16, pairs), like)
    for start in range(0, pairs, _CHUNK):
        mm(k_w, flat[start:start + _CHUNK].t(), out=u[:, start:start + _CHUNK])
    return u.view(16, out_channels, in_channels)


def _blocks(channels: int, other_channels: int) -> list[tuple[int, int]]:
    """Ranges of ``channels`` whose transformed weights (16 x block x ``other_channels``) take at most
    _BLOCK_NUMEL elements (8 MB in float32: 128 of 1024 channels), so the whole 16 x O x C tensor (64 MB
    at pix2pixHD's bottleneck) never exists and each block's stays in cache for its product."""
    step = max(1, _BLOCK_NUMEL // (16 * other_channels))
    return [(start, min(start + step, channels)) for start in range(0, channels, step)]


def _weight_gradient(xe: torch.Tensor, grad_m: torch.Tensor, weight_shape: torch.Size) -> torch.Tensor:
    """dL/dg, O x C x 3 x 3 in ``grad_m``'s dtype, by Winograd's route: per block of output channels
    ``dU = dM V`` (16 products over the tiles, into the "winograd_weight" workspace, which the input gradient
    has finished with), ``g = K_w^T dU`` (one wide product into the "winograd_weight_gradient" workspace) and
    a transposing copy into the weight's layout. ``xe``: the padded, zero-extended input; ``grad_m``: the
    transformed output gradient, 16 x O x tiles."""
    out_channels, in_channels = weight_shape[:2]
    k_w = _transforms(grad_m)[1]
    tiles = _tiles(xe.to(grad_m.dtype))  # 16 x tiles x C
    grad_w = torch.empty(out_channels, in_channels * 9, dtype=grad_m.dtype, device=grad_m.device)
    for start, stop in _blocks(out_channels, in_channels):
        pairs = (stop - start) * in_channels
        grad_u = workspace("winograd_weight", (16, stop - start, in_channels), grad_m)
        bmm(grad_m[:, start:stop], tiles, out=grad_u)
        back = workspace("winograd_weight_gradient", (9, pairs), grad_m)
        mm(k_w.t(), grad_u.view(16, pairs), out=back)
        grad_w[start:stop].view(pairs, 9).copy_(back.t())
    return grad_w.view(weight_shape)


def _pad(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero padding on all four sides (nn.Conv2d's ``padding``), made afresh in forward and backward so
    that only the unpadded input is kept, as nn.Conv2d keeps it."""
    return F.pad(x, (padding,) * 4) if padding else x


def _extend(x: torch.Tensor) -> torch.Tensor:
    """Zero-extend the bottom / right by one where the output height / width is odd (cropped after)."""
    height, width = x.shape[-2:]
    return F.pad(x, (0, width % 2, 0, height % 2)) if height % 2 or width % 2 else x


class _WinogradConv(torch.autograd.Function):
    """y = A^T [ (G g G^T) (.) (B^T d B) ] A per tile, summed over input channels (module notes).

    With ``pre`` (a function without parameters, such as InstanceNorm -> ReLU -> padding) the convolution's
    input is ``pre(x)``: ``x`` is kept for backward instead of ``pre(x)``, and ``pre`` runs again in
    backward to give the input and the gradient through it (:meth:`WinogradConv2d.forward_from`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int, pre=None) -> torch.Tensor:
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        ctx.pre = pre
        if pre is not None:
            ctx.save_for_backward(x, weight)
            x = pre(x)
        with torch.autocast(device, enabled=False):  # in autocast's dtype, as F.conv2d would be
            return _WinogradConv._forward(ctx, x, weight, bias, padding, dtype)

    @staticmethod
    def _forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                 dtype: torch.dtype) -> torch.Tensor:
        ctx.padding = padding
        n, _, height, width = x.shape
        out_h, out_w = height + 2 * padding - 2, width + 2 * padding - 2
        xe = _extend(_pad(x.to(dtype), padding))
        th, tw = (xe.shape[2] - 2) // 2, (xe.shape[3] - 2) // 2
        out_channels, in_channels = weight.shape[:2]
        tiles = _tiles(xe).transpose(1, 2)  # 16 x C x (N th tw)
        m = torch.empty(16, out_channels, tiles.shape[2], dtype=dtype, device=x.device)
        for start, stop in _blocks(out_channels, in_channels):
            bmm(_weight_transform(weight[start:stop], xe), tiles, out=m[:, start:stop])
        y = mm(_transforms(xe)[2], m.view(16, -1)).view(2, 2, out_channels, n, th, tw)
        y = y.permute(3, 2, 4, 0, 5, 1).reshape(n, out_channels, 2 * th, 2 * tw)[:, :, :out_h, :out_w]
        if bias is not None:
            y = y + bias.to(y.dtype).view(1, out_channels, 1, 1)
        # the input only for the weight gradient: a frozen weight (the perceptual VGG) keeps the weight alone
        if ctx.pre is None:
            ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight)
        ctx.input_shape, ctx.input_dtype = x.shape, x.dtype
        ctx.has_bias = bias is not None
        return y.contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        if ctx.pre is not None:  # the convolution's input again, with the graph of pre to take its gradient through
            with torch.enable_grad():
                # a view, not the leaf itself: a leaf input breaks module-level backward hooks (torch's
                # FlopCounterMode, register_multi_grad_hook) under the nested torch.autograd.grad below
                kept = x.detach().requires_grad_().view_as(x)
                x = ctx.pre(kept)
        grads = _WinogradConv._backward(ctx, x.detach() if ctx.pre is not None else x, weight, grad)
        if ctx.pre is not None and grads[0] is not None:
            grads = (torch.autograd.grad(x, kept, grads[0])[0], *grads[1:])
        return (*grads, None, None)

    @staticmethod
    def _backward(ctx, x: torch.Tensor | None, weight: torch.Tensor, grad: torch.Tensor):
        """The input, weight and bias gradients of the convolution of ``x`` (None without a weight gradient)."""
        n, in_channels, height, width = ctx.input_shape
        out_channels = weight.shape[0]
        k_in, _, k_out = _transforms(grad)
        padding = ctx.padding
        padded_h, padded_w = height + 2 * padding, width + 2 * padding
        th, tw = (padded_h + padded_h % 2 - 2) // 2, (padded_w + padded_w % 2 - 2) // 2
        grad_y = grad
        if grad.shape[-2:] != (2 * th, 2 * tw):
            grad_y = F.pad(grad, (0, 2 * tw - grad.shape[-1], 0, 2 * th - grad.shape[-2]))
        grad_y = grad_y.reshape(n, out_channels, th, 2, tw, 2).permute(3, 5, 1, 0, 2, 4).reshape(4, -1)
        grad_m = mm(k_out.t(), grad_y).view(16, out_channels, n * th * tw)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # blocks of input channels: each product runs over all O output channels (a long inner dimension)
            grad_tiles = torch.empty(16, in_channels, n * th * tw, dtype=grad.dtype, device=grad.device)
            for start, stop in _blocks(in_channels, out_channels):
                u = _weight_transform(weight[:, start:stop], grad)  # 16 x O x block
                bmm(u.transpose(1, 2), grad_m, out=grad_tiles[:, start:stop])
            if not ctx.needs_input_grad[1]:
                del grad_m  # a frozen weight (the perceptual VGG): each of these goes as soon as it is read,
            grad_d = mm(k_in, grad_tiles.view(16, -1)).view(16, in_channels, n, th * tw)
            del grad_tiles  # so that at most two tile-sized tensors coexist (issue 24: the VGG's backward was the peak)
            grad_d = grad_d.permute(2, 1, 0, 3).reshape(n, in_channels * 16, th * tw)
            grad_x = F.fold(grad_d, (2 * th + 2, 2 * tw + 2), 4, stride=2)
            grad_x = grad_x[:, :, padding:padding + height, padding:padding + width].to(ctx.input_dtype)
        if ctx.needs_input_grad[1]:
            if n * th * tw >= WINOGRAD_WEIGHT_GRADIENT_MIN_TILES:
                grad_w = _weight_gradient(_extend(_pad(x, padding)), grad_m, weight.shape)
            else:  # im2col's one product (gemm_conv.py): with few tiles the transform back costs what it saves
                grad_w = weight_gradient(_pad(x.to(grad.dtype), padding), grad, weight.shape)
            grad_w = grad_w.to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3)).to(weight.dtype)
        return grad_x, grad_w, grad_b


class WinogradConv2d(nn.Conv2d):
    """``nn.Conv2d`` (3 x 3, stride 1, zero ``padding``, no dilation, one group) computed by
    :class:`_WinogradConv` (module notes); the same parameters and state-dict keys as nn.Conv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True, padding: int = 0):
        if kernel_size != 3:
            raise ValueError(f"WinogradConv2d computes 3 x 3 convolutions (F(2x2, 3x3)), got kernel_size={kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, bias=bias, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _WinogradConv.apply(x, self.weight, self.bias, int(self.padding[0]))

    def forward_from(self, x: torch.Tensor, pre) -> torch.Tensor:
        """``self(pre(x))`` keeping ``x``, not ``pre(x)``, for backward: ``pre`` (layers without parameters:
        padding, a norm without affine weights, an activation) runs again in backward. The same values
        and gradients; in a pix2pixHD residual block the tensor kept is then one that is kept anyway
        (nets/generators/pix2pixhd.py ``ResnetBlock``, ``recompute_pointwise``)."""
        return _WinogradConv.apply(x, self.weight, self.bias, int(self.padding[0]), pre)
