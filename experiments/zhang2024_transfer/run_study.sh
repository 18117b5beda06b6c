#!/usr/bin/env bash
# The honest check of experiments/zhang2024_transfer/README.md, end to end on CPU:
# pretrain a tiny generator on the synthetic retina, then every downstream study on held-out data.
#   bash experiments/zhang2024_transfer/run_study.sh [outdir]       (from the repository root)
# The real-data studies read ../shared/data (or $FUNDUS2FFA_SHARED_DATA) and are skipped without it.
set -euo pipefail
OUT=${1:-outputs/zhang2024_transfer}
PY=${PYTHON:-python}
mkdir -p "$OUT"

# 1. Pretraining: CF -> late FFA on 96 synthetic eyes (seeds 0..95), pix2pix procedure with the pix2pixHD
#    global generator (Fundus2Video's generator family, 3 -> 1 channels) at width 8, 64 px.
CKPT=${CKPT:-}
if [[ -z "$CKPT" ]]; then
  $PY -m fundus2ffa.run model=pix2pix generator=pix2pixhd_global generator.ngf=8 data.image_size=64 \
      data.reader.num_pairs=96 data.batch_size=8 model.schedule.constant_epochs=4 model.schedule.decay_epochs=0 \
      logger=csv trainer=cpu trainer.enable_progress_bar=false trainer.num_sanity_val_steps=0 seed=0 \
      hydra.run.dir="$OUT/pretrain"
  CKPT="$OUT/pretrain/checkpoints/last.ckpt"
fi

# 2. Downstream studies (held-out synthetic eyes: seeds 900000+), rows pretrained / random.
for study in synthetic_vessels synthetic_lesions synthetic_retrieval; do
  $PY -m fundus2ffa.transfer downstream=$study backbone.checkpoint="$CKPT" trainer.accelerator=cpu threads=1 hydra.run.dir="$OUT/$study"
done

# 3. Real data probes (FFA frames: phase, lesion areas; UWF eyes: SLO -> FA retrieval).
SHARED=${FUNDUS2FFA_SHARED_DATA:-../shared/data}
if [[ -d "$SHARED" ]]; then
  for study in ffa_phase ffa_lesions uwf_retrieval; do
    $PY -m fundus2ffa.transfer downstream=$study backbone.checkpoint="$CKPT" trainer.accelerator=cpu threads=1 hydra.run.dir="$OUT/$study"
  done
fi

# 4. The few-shot tables.
$PY -m fundus2ffa.transfer.report "$OUT"/*/results.csv --out "$OUT/tables.md"
