"""How the pix2pixHD / Fundus2Video residual blocks compute their 3 x 3 convolutions
(``generator.block_conv``, issue 24): all three are nn.Conv2d's maths with its parameters (checkpoints
load into any), differing only in the algorithm and so in speed on a given machine.

- ``native``: nn.Conv2d (the default; cuDNN / oneDNN choose the algorithm);
- ``gemm``: im2col + one matrix product (gemm_conv.py);
- ``winograd``: Winograd F(2x2, 3x3), 2.25x fewer multiplications (winograd_conv.py).
"""

from torch import nn

from fundus2ffa.nets.blocks.gemm_conv import GemmConv2d
from fundus2ffa.nets.blocks.winograd_conv import WinogradConv2d

BLOCK_CONVS = {"native": nn.Conv2d, "gemm": GemmConv2d, "winograd": WinogradConv2d}
