#!/usr/bin/env bash
# The GPU check of unigrpo-kit: run once on a CUDA host, from the repository root, where the kit
# is not pip-installed and nothing can be downloaded:
#
#     OUT=/some/folder bash tools/gpu_check.sh
#
# Wheels in .whl/ (xformers and the pure-Python packages the kit imports that such a host may
# lack: mmengine-lite, addict, yapf, platformdirs, termcolor, einops) are installed into
# /tmp/site first. Then, each part on its own (a failed part prints "FAILED <part>" and the
# next one runs anyway):
#
#   env       GPUs, torch, CUDA, xformers and the kit's imports;
#   pytest    tests/test_cuda.py and tests/models/test_attention.py;
#   bench     unigrpo-kit bench --json on CUDA                      -> $OUT/bench.json;
#   train     recipes/unified_multiround.py, 20 steps on CUDA       -> $OUT/train/;
#   eval      that checkpoint on the 140 eval prompts on CUDA, the shipped base model on CUDA
#             (0.679 strict on the CPU, docs/training.md), the checkpoint again on the CPU
#                                                                   -> $OUT/eval_*.json.
#
# Everything is logged to $OUT/gpu_check.log, each part's exit status and seconds to
# $OUT/parts.tsv. A few minutes on an H200; the parts' time limits add up to 10 minutes.

set -u -o pipefail # not -e: every part runs whatever happened to the ones before it
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
set -x

export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl \
    || python3 -c "import glob, zipfile; [zipfile.ZipFile(w).extractall('/tmp/site') for w in glob.glob('.whl/*.whl')]" \
    || echo "FAILED installing .whl"
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
KIT="python3 -m unigrpo_kit.cli"
RUN=/tmp/gpu_check_run
: > "$OUT/parts.tsv"

part() { # part NAME LIMIT_S COMMAND...: run COMMAND under a time limit; record; never stop
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  timeout "$limit" "$@"
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >> "$OUT/parts.tsv"
  [ "$rc" -eq 0 ] || echo "FAILED $name (exit $rc)" >&2
  return 0
}

# ---------------------------------------------------------------------------- env
nvidia-smi -L || echo "FAILED nvidia-smi"
python3 -V
part env 60 python3 - << 'EOF'
import importlib, sys

import torch

print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
for i in range(torch.cuda.device_count()):
    print(f"cuda:{i}", torch.cuda.get_device_name(i))
for name in ("unigrpo_kit", "mmengine", "einops", "yapf", "addict", "termcolor", "typer", "rich",
             "safetensors", "tensorboard", "matplotlib", "PIL", "numpy", "yaml", "pytest",
             "hypothesis", "xformers"):
    try:
        module = importlib.import_module(name)
        print(f"{name:12s} {getattr(module, '__version__', '?'):12s} {module.__file__}")
    except Exception as error:
        print(f"{name:12s} MISSING: {type(error).__name__}: {error}")
from unigrpo_kit.devices import resolve_device
from unigrpo_kit.models.attention import select_backend, xformers_available, xformers_unusable_reason

device = resolve_device("auto")
print("model.device=auto ->", device, "| xformers usable:", xformers_available(),
      "| attention auto ->", select_backend("auto", device), "|", xformers_unusable_reason())
sys.exit(0 if device.type == "cuda" else 1)
EOF
python3 -m xformers.info > "$OUT/xformers_info.txt" 2>&1 || echo "FAILED xformers.info"
head -n 60 "$OUT/xformers_info.txt"

# ---------------------------------------------------------------------------- pytest
part pytest 150 python3 -m pytest -q tests/test_cuda.py tests/models/test_attention.py \
  -p no:cacheprovider -rs --durations=12

# ---------------------------------------------------------------------------- bench
part bench 90 $KIT bench --json > "$OUT/bench.json"

# ---------------------------------------------------------------------------- train
rm -rf "$RUN"
part train 120 $KIT train recipes/unified_multiround.py --quiet --work-dir "$RUN/multiround" \
  --cfg-options schedule.steps=20 model.device=cuda
mkdir -p "$OUT/train"
cp "$RUN/multiround/metrics.jsonl" "$RUN/multiround/config.py" "$OUT/train/" || echo "FAILED copying the run"
cp "$RUN"/multiround/samples/*.png "$OUT/train/" || echo "FAILED copying the samples"
python3 - "$RUN/multiround/metrics.jsonl" << 'EOF' | tee "$OUT/train/summary.json" || echo "FAILED train summary"
import json, math, sys

lines = [json.loads(line) for line in open(sys.argv[1])]
mean = lambda key: sum(line[key] for line in lines) / len(lines)  # noqa: E731
print(json.dumps({
    "steps": len(lines),
    "all_finite": all(math.isfinite(v) for line in lines for v in line.values()),
    "self_check_max_dev": max(line["ratio/self_check_max_dev"] for line in lines),
    "step_s_mean": mean("time/step_s"),
    "rollout_s_mean": mean("time/rollout_s"),
    "train_s": sum(line["time/step_s"] for line in lines),
    "reward_first5": sum(line["reward/mean"] for line in lines[:5]) / len(lines[:5]),
    "reward_last5": sum(line["reward/mean"] for line in lines[-5:]) / len(lines[-5:]),
}))
EOF

# ---------------------------------------------------------------------------- eval
part eval_cuda 45 $KIT eval recipes/unified_multiround.py --work-dir "$RUN/multiround" \
  --num-prompts 140 --json --cfg-options model.device=cuda > "$OUT/eval_cuda.json"
part eval_base_cuda 45 $KIT eval recipes/unified_multiround.py --checkpoint tiny-base \
  --num-prompts 140 --json --cfg-options model.device=cuda > "$OUT/eval_base_cuda.json"
part eval_cpu 90 $KIT eval recipes/unified_multiround.py --work-dir "$RUN/multiround" \
  --num-prompts 140 --json --cfg-options model.device=cpu threads=8 > "$OUT/eval_cpu.json"

set +x
echo "== parts (name, exit status, seconds)"
cat "$OUT/parts.tsv"
for file in bench eval_cuda eval_base_cuda eval_cpu; do
  echo "== $file"
  tail -n 1 "$OUT/$file.json" 2> /dev/null
done
echo "== outputs in $OUT; $SECONDS s in all"
