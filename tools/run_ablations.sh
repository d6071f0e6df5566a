#!/usr/bin/env bash
# The sweeps of docs/ablations.md, one after another; each resumes where it stopped (rerun this
# script after a kill), and a finished sweep is only re-tabulated. Two jobs of one thread each.
# Usage: bash tools/run_ablations.sh [sweep ...]   (default: all six, in this order)
set -euo pipefail
declare -A RECIPE=(
  [modes]=recipes/unified_single_round.py
  [regularizers]=recipes/unified_single_round.py
  [cfg]=recipes/image_flowgrpo.py
  [rounds]=recipes/unified_multiround.py
  [sde_sampler]=recipes/image_flowgrpo.py
  [sde_window]=recipes/image_flowgrpo.py
)
sweeps=("$@")
[ ${#sweeps[@]} -eq 0 ] && sweeps=(modes regularizers rounds cfg sde_sampler sde_window)
for name in "${sweeps[@]}"; do
  start=$(date +%s)
  unigrpo-kit ablate "${RECIPE[$name]}" --grid-file "recipes/ablations/$name.py" \
    --name "$name" --jobs 2
  echo "sweep $name: $(( ($(date +%s) - start) / 60 )) min (this invocation)"
done
