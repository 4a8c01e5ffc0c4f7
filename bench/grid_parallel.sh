#!/usr/bin/env bash
# Runs a `mamdr experiment --grid` as one process per (model, seed) cell row, JOBS at a time (each with
# one torch thread), into the same --out; cells are per (model, framework, seed) files, so the rows
# never collide. A final pass resumes every cell (trains nothing) and writes the complete tables.
#
#   JOBS=2 bench/grid_parallel.sh runs/table_x "mlp deepfm star" 3 -- --dataset ml-latest-small \
#       --frameworks alternate,alternate+finetune,weighted_loss,pcgrad,maml,reptile,mldg,dn,dr,mamdr,mamdr+finetune \
#       --emb-dim 32 --epochs 40 --patience 5 --beta 0.5 --k 3 --dr-budget half --schedule staged \
#       --dr-epochs 5 --dr-patience 2 --specific all
#
# Progress: one log per row in OUT/logs/; re-running the same command resumes. ROWS="mlp:2 star:0 ..." runs
# those rows in that order instead of every model × seed. A free slot is counted over every grid process
# writing to OUT (also those started by an earlier, interrupted runner), so two runners never overbook.
set -euo pipefail
out="$1"; models="$2"; seeds="$3"; shift 3
[ "${1:-}" = "--" ] && shift
jobs="${JOBS:-2}"
mkdir -p "$out/logs"
run_row() {  # model seed
  echo "[grid] start $1 seed $2 $(date +%T)"
  if mamdr experiment --grid --models "$1" --seeds 1 --seed-offset "$2" --threads 1 "${args[@]}" --out "$out" \
       > "$out/logs/$1-s$2.log" 2>&1; then echo "[grid] done  $1 seed $2 $(date +%T)"
  else echo "[grid] FAILED $1 seed $2 (see $out/logs/$1-s$2.log)"; return 1; fi
}
args=("$@")
busy() { pgrep -fc -- "experiment --grid .*--out ${out}\$" || true; }
rows="${ROWS:-}"
if [ -z "$rows" ]; then
  for m in $models; do for s in $(seq 0 $((seeds - 1))); do rows+="$m:$s "; done; done
fi
failed=0
for row in $rows; do
  while [ "$(busy)" -ge "$jobs" ]; do sleep 5; done
  run_row "${row%%:*}" "${row##*:}" &
  sleep 2  # let it show up in `busy`
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=1; done
while [ "$(busy)" -gt 0 ]; do sleep 5; done  # rows of an earlier runner
[ "$failed" = 0 ] || { echo "[grid] some rows failed; re-run to resume"; exit 1; }
models_csv="$(echo "$models" | tr ' ' ',')"
mamdr experiment --grid --models "$models_csv" --seeds "$seeds" --threads 1 "$@" --out "$out" \
  | tee "$out/logs/final.log"
