#!/usr/bin/env bash
# The paper report regenerated on one lent GPU machine with no network (bench/gpu_reproduce.py), in one call:
#   bench/gpu_reproduce.sh SECONDS [--set key=value ...]
# Needs the MNIST cache in .devhome/data/ (mnist.npz and mnist.json from ~/.cache/reabsnet/data). Everything runs
# within SECONDS (the workers' phase gets all but the last 130 s), then packs into $OUT: report.tgz (the report,
# figures, every set's sidecar and the log) and sets.tar.xz.* (the sets themselves in pieces of 15 MiB, Tables
# 1-3's first, the slowest on a CPU: what a CPU resumes from when the deadline came first; 3 pieces come back).
set -u
OUT=${OUT:-/tmp/gpu-out}
limit=$1; shift
home=/tmp/reabsnet-home
mkdir -p "$OUT" "$home/data" /tmp/report
cp .devhome/data/mnist.* "$home/data/"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src REABSNET_HOME=$home
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee /tmp/report/setup.txt
began=$(date +%s)
timeout "$limit" python3 bench/gpu_reproduce.py --profile paper --workers 8 --deadline $((limit - 130)) \
    --copy-to /tmp/report "$@" >/tmp/report/stdout.jsonl 2>/tmp/report/log.txt
echo "exit $? after $(( $(date +%s) - began )) s" | tee -a /tmp/report/setup.txt
cat /tmp/report/stdout.jsonl
grep -E "stage |adaptive (linf|l2) [0-9.]+: |task .*: [0-9]+ s|rror" /tmp/report/log.txt | tail -60
run=$home/runs/mnist/paper
(cd "$run" && find . -name '*.json' -not -name '*.safetensors*' | tar -czf /tmp/report/sidecars.tgz -T -)
tar -C /tmp -czf "$OUT/report.tgz" report
# in this order (ls would sort them: adaptive first), so the pieces that come back hold Tables 1-3's sets
(cd "$run" && tar -cf - $(for d in attacks attacks-madry attacks-pgd attacks-madry-pgd adaptive; do
    [ -d "$d" ] && echo "$d"; done)) \
    | { if command -v xz >/dev/null; then xz -T0 -3; else gzip -1; fi; } | split -b 15m - "$OUT/sets.tar.xz."
ls -la "$OUT"
rm -f "$OUT"/sets.tar.xz.a[d-z]
