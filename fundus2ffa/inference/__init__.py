"""From a loaded checkpoint to pixels: the one translator (translator.py: the checkpoint's preprocessing,
the prediction modes, tiles, stills and videos), tiled translation (tiled.py), ``task=predict``
(predict.py, predict_io.py: the inputs and outputs; streaming.py: the batched, distributed loop) and the
prediction benchmark (bench.py). Checkpoints are read by fundus2ffa/loader.py; export lives in
fundus2ffa/export.py, the EMA generator in fundus2ffa/models/ema.py."""
