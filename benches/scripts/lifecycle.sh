#!/usr/bin/env bash
# Prune and `check --read-data` of Cairn against restic on the same history: the standard
# dataset backed up 5 times with ../shared/bench/mutate.sh between, by both tools in turn;
# then `forget --keep-last 3`, prune and check --read-data, each under /usr/bin/time -v.
# Prints a markdown table (wall, CPU, peak RSS, and Cairn's ratio to restic).
#
# Usage: benches/scripts/lifecycle.sh [WORKDIR]   (default /mnt/bench/lifecycle; a tmpfs)
# Needs: restic (apt-get install restic), a release build (cargo build --release -p cairn-agent).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/mnt/bench/lifecycle}
cairn=${CAIRN:-$here/target/release/cairn}
shared=${SHARED:-$here/../shared}
command -v restic >/dev/null || { echo "restic missing: apt-get install restic" >&2; exit 1; }
[ -x "$cairn" ] || { echo "$cairn missing: cargo build --release -p cairn-agent" >&2; exit 1; }

rm -rf "$work" && mkdir -p "$work"
ds=$work/ds
bash "$shared/bench/make-dataset.sh" "$ds" >/dev/null
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$work/restic-cache
"$cairn" -q -r "$work/cairn" init
restic -q -r "$work/restic" init

for i in 1 2 3 4 5; do
  "$cairn" -q -r "$work/cairn" backup --host bench "$ds"
  restic -q -r "$work/restic" backup --host bench "$ds"
  [ "$i" -lt 5 ] && bash "$shared/bench/mutate.sh" "$ds"
done
"$cairn" -q -r "$work/cairn" forget --keep-last 3
restic -q -r "$work/restic" forget --keep-last 3 >/dev/null

# measure NAME CMD...: appends "NAME wall cpu rss" to $work/results
measure() {
  local name=$1; shift
  /usr/bin/time -v -o "$work/time.txt" "$@" >/dev/null 2>"$work/err.txt" || {
    echo "$name failed:" >&2; cat "$work/err.txt" >&2; exit 1; }
  awk -v n="$name" '
    /Elapsed \(wall clock\)/ { split($NF, t, ":"); w = (length(t) == 3) ? t[1]*3600 + t[2]*60 + t[3] : t[1]*60 + t[2] }
    /User time/ { u = $NF } /System time/ { s = $NF } /Maximum resident/ { r = $NF }
    END { printf "%s %.2f %.2f %d\n", n, w, u + s, r }' "$work/time.txt" >>"$work/results"
}
: >"$work/results"
measure "cairn prune" "$cairn" -q -r "$work/cairn" prune
measure "restic prune" restic -q -r "$work/restic" prune
measure "cairn check --read-data" "$cairn" -q -r "$work/cairn" check --read-data
measure "restic check --read-data" restic -q -r "$work/restic" check --read-data

size() { du -sb "$1" | cut -f1; }
echo "| step | tool | wall s | CPU s | peak RSS MiB | wall ratio | RSS ratio |"
echo "|---|---|---|---|---|---|---|"
for step in "prune" "check --read-data"; do
  read -r _ _ cw cc cr < <(grep "^cairn $step " "$work/results" | sed "s/ --read-data//" | awk '{print "x", "y", $(NF-2), $(NF-1), $NF}')
  read -r _ _ rw rc rr < <(grep "^restic $step " "$work/results" | sed "s/ --read-data//" | awk '{print "x", "y", $(NF-2), $(NF-1), $NF}')
  echo "| $step | cairn | $cw | $cc | $((cr / 1024)) | $(awk -v a="$cw" -v b="$rw" 'BEGIN{printf "%.2f", a/b}') | $(awk -v a="$cr" -v b="$rr" 'BEGIN{printf "%.2f", a/b}') |"
  echo "| $step | restic | $rw | $rc | $((rr / 1024)) | | |"
done
echo
echo "repository size after prune: cairn $(( $(size "$work/cairn") / 1048576 )) MiB, restic $(( $(size "$work/restic") / 1048576 )) MiB"
echo "versions: $("$cairn" --version), $(restic version | head -1)"
