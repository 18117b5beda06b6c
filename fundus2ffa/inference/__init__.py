"""Inference at clinical scale: tiled full-resolution translation (tiled.py), the streaming predict
loop (streaming.py)."""
