"""Inference at clinical scale: tiled full-resolution translation (tiled.py), the streaming predict
loop (streaming.py) and its benchmark (bench.py). Export lives in fundus2ffa/export.py, the EMA
generator in fundus2ffa/models/ema.py."""
