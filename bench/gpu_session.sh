#!/usr/bin/env bash
# The GPU rows of docs/benchmarks.md and ABLATION.md, made in one short lease of a GPU machine with no network.
# Run from the repository root. Needs, beside the checkout: the MNIST cache in .devhome/data/ (mnist.npz and
# mnist.json from ~/.cache/reabsnet/data), the quick master the CPU benchmark used in .devhome/quick-master.*,
# and the peers' wheels in .whl/ (foolbox, eagerpy, GitPython, gitdb, smmap, adversarial-robustness-toolbox,
# torchattacks; see bench/attacks.py). Every phase has its own time limit, so later phases still run when an
# earlier one is cut; results go to $OUT (default /tmp/gpu-out).
set -u
OUT=${OUT:-/tmp/gpu-out}
REF_DEADLINE=${REF_DEADLINE:-300}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 REABSNET_HOME=$PWD/.devhome
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    >"$OUT/setup.log" 2>&1
export PYTHONPATH=$PWD/src:/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } >>"$OUT/setup.log" 2>&1

# 1. ablation factor a: CW at the reference settings (and the profile's preset) on the first 1,000 test images
timeout $((REF_DEADLINE + 40)) python3 bench/reference_sets.py --profile paper --n 1000 --workers 4 \
    --deadline "$REF_DEADLINE" >"$OUT/reference_sets.log" 2>&1
for d in "$REABSNET_HOME"/runs/mnist/paper/ablation/attacks-*; do   # one archive per preset: each under 16 MiB
    tar -C "$(dirname "$d")" -czf "$OUT/$(basename "$d").tgz" "$(basename "$d")" 2>>"$OUT/setup.log"
done

# 2. the master's passes against the GPU's peak, per lever
timeout 60 python3 bench/kernels.py --batch 1000,10000 --repeat 10 >"$OUT/kernels.md" 2>&1

# 3. our attacks beside the peers, the CPU table's settings (quick master, 200 images, CW on 20)
model=$REABSNET_HOME/quick-master.safetensors
{ timeout 50 python3 bench/attacks.py --model "$model" --n 200 --attacks fgsm,pgd,deepfool
  timeout 40 python3 bench/attacks.py --model "$model" --n-cw 20 --attacks cw-l2 --libraries reabsnet,foolbox,torchattacks
  timeout 40 python3 bench/attacks.py --model "$model" --n-cw 20 --attacks cw-linf --libraries reabsnet,ART
} >"$OUT/attacks.md" 2>&1
echo "done"
