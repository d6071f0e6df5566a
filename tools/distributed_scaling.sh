#!/bin/bash
# Step time of recipes/unified_multiround.py (8 steps, no checkpoints or samples) on this machine:
# one process with 1 thread, two processes with 1 thread each (DDP, then FSDP2), and one process
# with 2 threads. Run it on an idle machine; compare the figures only with each other.
#   bash tools/distributed_scaling.sh [OUT]    (default OUT: work_dirs/scaling)
set -euo pipefail
OUT=${1:-work_dirs/scaling}
rm -rf "$OUT"
O=(--quiet --cfg-options schedule.steps=8 --cfg-options schedule.save_every=0
   --cfg-options schedule.sample_every=0)
R=recipes/unified_multiround.py
OMP_NUM_THREADS=1 unigrpo-kit train $R --work-dir "$OUT/1proc_1thread" "${O[@]}" --cfg-options threads=1
OMP_NUM_THREADS=1 unigrpo-kit train $R --work-dir "$OUT/2proc_ddp" --nproc 2 "${O[@]}" --cfg-options threads=1
OMP_NUM_THREADS=1 unigrpo-kit train $R --work-dir "$OUT/2proc_fsdp2" --nproc 2 "${O[@]}" \
    --cfg-options threads=1 --cfg-options distributed.strategy=fsdp2
unigrpo-kit train $R --work-dir "$OUT/1proc_2threads" "${O[@]}" --cfg-options threads=2
python - "$OUT" <<'PY'
import json, platform, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {}
for run in ("1proc_1thread", "2proc_ddp", "2proc_fsdp2", "1proc_2threads"):
    m = [json.loads(line) for line in (out / run / "metrics.jsonl").read_text().splitlines()]
    rows[run] = {
        "step_s": round(sum(x["time/step_s"] for x in m) / len(m), 3),
        "rollout_s": round(sum(x["time/rollout_s"] for x in m) / len(m), 3),
        "reward_mean_per_step": [round(x["reward/mean"], 4) for x in m],
    }
base = rows["1proc_1thread"]["step_s"]
for run, row in rows.items():
    row["speedup"] = round(base / row["step_s"], 2)
    print(f"{run:16s} {row['step_s']:.2f} s/step (rollout {row['rollout_s']:.2f} s)  x{row['speedup']}")
rows["machine"] = f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
(out / "scaling.json").write_text(json.dumps(rows, indent=1) + "\n")
PY
