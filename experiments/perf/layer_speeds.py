"""Forward and forward+backward speed (GFLOP/s, one thread) of the pix2pixHD iteration's high-resolution
convolutions at 256 px, beside a 2048 x 2048 sgemm: where the iteration runs below matmul speed (issue 24).

    OMP_NUM_THREADS=1 python experiments/perf/layer_speeds.py

Best of 5 calls each; forward+backward counts the weight gradient, and the input gradient where the
layer's input needs one (not for the layers that read the images). Padding is zero padding of k // 2
(pix2pixHD reflects; the work is the same).
"""

import time

import torch
import torch.nn.functional as F

# name, in channels, out channels, kernel, input side, stride, input needs a gradient
LAYERS = [
    ("G head 3->64 7x7", 3, 64, 7, 256, 1, False),
    ("G tail 64->1 7x7", 64, 1, 7, 256, 1, True),
    ("G tail as 64->8 7x7", 64, 8, 7, 256, 1, True),
    ("G down 64->128 3x3 s2", 64, 128, 3, 256, 2, True),
    ("VGG conv1_1 3->64", 3, 64, 3, 256, 1, False),
    ("VGG conv1_2 64->64", 64, 64, 3, 256, 1, True),
    ("VGG conv2_1 64->128", 64, 128, 3, 128, 1, True),
    ("VGG conv2_2 128->128", 128, 128, 3, 128, 1, True),
]


def best_seconds(fn, calls: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    torch.set_num_threads(1)
    for name, cin, cout, k, side, stride, input_grad in LAYERS:
        x = torch.randn(1, cin, side, side, requires_grad=input_grad)
        w = torch.randn(cout, cin, k, k, requires_grad=True)

        def forward():
            with torch.no_grad():
                F.conv2d(x, w, padding=k // 2, stride=stride)

        def forward_backward():
            F.conv2d(x, w, padding=k // 2, stride=stride).sum().backward()

        flop = 2 * (side // stride) ** 2 * cout * cin * k * k
        tf, tb = best_seconds(forward), best_seconds(forward_backward)
        print(f"{name:24s} forward {tf * 1e3:7.1f} ms {flop / tf / 1e9:6.1f} GFLOP/s | "
              f"forward+backward {tb * 1e3:7.1f} ms {flop * (2 + input_grad) / tb / 1e9:6.1f} GFLOP/s")
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    print(f"sgemm 2048 x 2048: {2 * 2048**3 / best_seconds(lambda: a @ b) / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
