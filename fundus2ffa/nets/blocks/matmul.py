"""The matrix products of the convolutions this package writes as matrix products (Winograd's, im2col's, the
tap convolution's; issue 24), on the CPU optionally by oneDNN's matmul instead of torch's BLAS.

Why: torch's float32 ``mm`` on a CPU runs in its BLAS (MKL in the default build), which on AMD processors
takes its AVX2 code path; oneDNN, which runs torch's CPU convolutions, has AVX-512 kernels for its matmul
too. On the project's machine (AMD EPYC with AVX-512, 2026-12-08, one thread) a 2048 x 2048 product runs at
101 GFLOP/s in MKL and 205-219 GFLOP/s in oneDNN; the Winograd block products (128 x 1024 x 64) at 98
against 188; so the direct convolutions oneDNN runs for the reference (200-237 GFLOP/s at the VGG's 256-512
channels) left the product-based ones behind. On an Intel CPU MKL already uses AVX-512, and the two should
be alike.

``cpu_matmul`` (conf/run.yaml) chooses: ``torch`` (default: ``torch.mm``) or ``onednn``
(``torch.ops.mkldnn._linear_pointwise``, the oneDNN linear that torch's compiler uses on a CPU; a product
``a @ b`` is ``linear(a, b^T)``). oneDNN takes float32 CPU products whose three sizes are all at least
:data:`ONEDNN_MIN_SIZE`; the rest (the Winograd transforms' products over 9 or 16 points, which are bound by
memory, not arithmetic), other dtypes and other devices use ``torch.mm``. The values are a matrix product's
either way, summed in another order (1e-6 relative; the convolutions' tests compare with nn.Conv2d to 1e-5).
"""

from __future__ import annotations

import logging

import torch

from fundus2ffa.errors import ConfigError

log = logging.getLogger(__name__)

CPU_MATMULS = ("torch", "onednn")
#: the smallest size (rows, inner, columns) of a product given to oneDNN; smaller ones stay with torch.mm
ONEDNN_MIN_SIZE = 32
_SETTING = {"cpu": "torch"}


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's linear operator (x86 and arm64 CPU builds do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def configure_cpu_matmul(name: str | None) -> str:
    """Use ``name`` (torch | onednn; None: torch) for this process's CPU products from now on; returns it."""
    name = name or "torch"
    if name not in CPU_MATMULS:
        raise ConfigError(f"cpu_matmul must be one of {'|'.join(CPU_MATMULS)}, got {name!r}")
    if name == "onednn" and not onednn_available():
        raise ConfigError("cpu_matmul=onednn: this torch build has no oneDNN (torch.backends.mkldnn); use cpu_matmul=torch")
    if name != _SETTING["cpu"]:
        log.info("CPU matrix products of the Winograd / im2col / tap convolutions: %s", name)
    _SETTING["cpu"] = name
    return name


def _by_onednn(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (_SETTING["cpu"] == "onednn" and a.device.type == "cpu" and a.dtype == b.dtype == torch.float32
            and min(a.shape[0], a.shape[1], b.shape[1]) >= ONEDNN_MIN_SIZE)


def mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.mm(a, b, out=out)`` (2-D), by oneDNN where ``cpu_matmul`` says so (module notes)."""
    if not _by_onednn(a, b):
        return torch.mm(a, b) if out is None else torch.mm(a, b, out=out)
    product = torch.ops.mkldnn._linear_pointwise(a, b.t(), None, "none", [], "")
    return product if out is None else out.copy_(product)


def bmm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.bmm(a, b, out=out)`` (3-D), one :func:`mm` per batch entry where oneDNN takes the products."""
    if not _by_onednn(a[0], b[0]):
        return torch.bmm(a, b) if out is None else torch.bmm(a, b, out=out)
    if out is None:
        out = a.new_empty(a.shape[0], a.shape[1], b.shape[2])
    for i in range(a.shape[0]):
        mm(a[i], b[i], out=out[i])
    return out


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.matmul`` of a matrix ``a`` (M x K) and a batch ``b`` (N x K x L): N x M x L."""
    if not _by_onednn(a, b[0]):
        return torch.matmul(a, b)
    return torch.stack([mm(a, b[i]) for i in range(b.shape[0])])


def _register_flops() -> None:
    """Count oneDNN's linear in ``torch.utils.flop_counter`` (the benches' FLOPs and MFU) as the product it is."""
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.mkldnn._linear_pointwise)
    def _linear_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        rows = 1
        for size in x_shape[:-1]:
            rows *= size
        return 2 * rows * x_shape[-1] * w_shape[0]


if onednn_available():
    _register_flops()
