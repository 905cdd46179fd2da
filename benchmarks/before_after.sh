#!/usr/bin/env bash
# Before and after, in one run on the same machine: the kernel-start benchmarks of an older
# commit and of this checkout, alternated round by round, each with its own `local` baseline.
#
#   bash benchmarks/before_after.sh <before-rev> [rounds] [runs] [after-rev]
#   bash benchmarks/before_after.sh e0f66ea 2 5 HEAD
#
# Each side is a `git worktree` of its commit in a temporary folder (after-rev defaults to
# HEAD: uncommitted edits are never measured), run with this checkout's .venv (the tree
# first on PYTHONPATH) and a stand-in dist-info that names the tree's own `tfenv-docker`
# entry point, so each tree's kernels start through its own provisioner. Prints the "vs local" ratios of
# benchmarks/kernel_start.py (first reply, py311) and benchmarks/pool_start.py (cold,
# pooled, pooled+tf) per tree and round; the logs stay in $OUT (printed at the end).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
usage="usage: before_after.sh <before-rev> [rounds] [runs] [after-rev]"
before_rev=${1:?$usage}
rounds=${2:-2}
runs=${3:-5}
after_rev=${4:-HEAD}
PY=$PWD/.venv/bin/python
OUT=$(mktemp -d "${TMPDIR:-/tmp}/tfenv-before-after.XXXXXX")
cleanup() {
  for side in before after; do git worktree remove --force "$OUT/$side" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
for side in before after; do
  rev=$before_rev; [ "$side" = after ] && rev=$after_rev
  git worktree add --detach -f "$OUT/$side" "$rev" >/dev/null 2>&1
  meta=$OUT/meta-$side/jupyter_tfenv-0.0.0.dist-info
  mkdir -p "$meta"
  printf 'Metadata-Version: 2.1\nName: jupyter_tfenv\nVersion: 0.0.0\n' >"$meta/METADATA"
  printf '[jupyter_client.kernel_provisioners]\n%s\n' \
    "$(grep -m1 '^tfenv-docker' "$OUT/$side/pyproject.toml" | tr -d '"')" >"$meta/entry_points.txt"
done

run() { # tree label round
  local tree=$1 label=$2 round=$3
  local env=(env "PYTHONPATH=$OUT/meta-$label:$tree")
  (cd "$tree" && "${env[@]}" "$PY" benchmarks/kernel_start.py --runs "$runs" --concurrency 0 \
    --profile-runs 0 >"$OUT/kernel_start.$label.$round.log" 2>&1) || echo "kernel_start $label failed"
  (cd "$tree" && "${env[@]}" "$PY" benchmarks/pool_start.py --runs "$runs" \
    >"$OUT/pool_start.$label.$round.log" 2>&1) || echo "pool_start $label failed"
}
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then order=(before after); else order=(after before); fi
  for label in "${order[@]}"; do
    tree=$OUT/$label
    echo "[before-after] round $round: $label ($(git -C "$tree" rev-parse --short HEAD))"
    run "$tree" "$label" "$round"
  done
done
echo
echo "kernel_start.py, py311 first reply vs local (p50 ratio):"
for f in "$OUT"/kernel_start.*.log; do
  printf '  %-28s %s\n' "$(basename "$f" .log)" "$(grep -m1 '^py311 vs local' "$f" | sed 's/.*ratio //; s/ .*//')"
done
echo "pool_start.py, vs local (p50 ratio) per variant:"
for f in "$OUT"/pool_start.*.log; do
  printf '  %-28s %s\n' "$(basename "$f" .log)" \
    "$(awk '$1 ~ /^(cold|pooled|pooled\+tf)$/ {printf "%s %s  ", $1, $5}' "$f")"
done
echo "logs: $OUT"
