#!/usr/bin/env bash
# Cairn against restic and rustic on the standard dataset, interleaved, ROUNDS rounds (default
# 3). Each round starts from a fresh copy of the dataset and fresh repositories, then runs
# every phase for each tool in turn (the tool order rotates per round):
#   first backup, unchanged re-backup, re-backup after ../shared/bench/mutate.sh,
#   full restore of the last snapshot, check --read-data
# under /usr/bin/time -v (wall, user+sys CPU, peak RSS), and records each repository's size.
# Every tool runs with its defaults (restic: repository v2, compression auto), its cache on
# the same tmpfs (XDG_CACHE_HOME), quiet, no progress. Every restore is compared with the
# dataset (diff -r) before its time counts.
#
# Prints a markdown table: medians per tool and the median of Cairn's per-round ratios.
#
# Usage: benches/scripts/compare.sh [WORKDIR] [ROUNDS]   (default /mnt/bench/compare, 3)
# Needs: a tmpfs at WORKDIR's parent (mount -t tmpfs -o size=14g tmpfs /mnt/bench),
#   restic (apt-get install restic), rustic (cargo install rustic-rs --locked; RUSTIC=path),
#   a release build (cargo build --release -p cairn-agent).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/mnt/bench/compare}
rounds=${2:-3}
cairn=${CAIRN:-$here/target/release/cairn}
restic=${RESTIC:-$(command -v restic || true)}
rustic=${RUSTIC:-$(command -v rustic || echo /opt/rustic/bin/rustic)}
shared=${SHARED:-$here/../shared}
[ -x "$restic" ] || { echo "restic missing: apt-get install restic" >&2; exit 1; }
[ -x "$rustic" ] || { echo "rustic missing: cargo install rustic-rs --locked (or RUSTIC=path)" >&2; exit 1; }
[ -x "$cairn" ] || { echo "$cairn missing: cargo build --release -p cairn-agent" >&2; exit 1; }

mkdir -p "$work"
ds=$work/ds
[ -d "$ds" ] || bash "$shared/bench/make-dataset.sh" "$ds" >/dev/null
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench RUSTIC_PASSWORD=bench
export XDG_CACHE_HOME=$work/cache
results=$work/results.tsv
: >"$results"

# cmd TOOL PHASE: sets CMD to the tool's command for a phase, on $work/repo-TOOL and $src
cmd() {
  local tool=$1 phase=$2 repo=$work/repo-$1 out=$work/restore-$1
  case "$tool:$phase" in
    cairn:init) CMD=("$cairn" -q -r "$repo" init) ;;
    cairn:backup*) CMD=("$cairn" -q -r "$repo" backup --host bench "$src") ;;
    cairn:restore) CMD=("$cairn" -q -r "$repo" restore latest --target "$out") ;;
    cairn:check) CMD=("$cairn" -q -r "$repo" check --read-data) ;;
    restic:init) CMD=("$restic" -q -r "$repo" init) ;;
    restic:backup*) CMD=("$restic" -q -r "$repo" backup --host bench "$src") ;;
    restic:restore) CMD=("$restic" -q -r "$repo" restore latest --target "$out") ;;
    restic:check) CMD=("$restic" -q -r "$repo" check --read-data) ;;
    rustic:init) CMD=("$rustic" --no-progress -r "$repo" init) ;;
    rustic:backup*) CMD=("$rustic" --no-progress -r "$repo" backup --host bench "$src") ;;
    rustic:restore) CMD=("$rustic" --no-progress -r "$repo" restore latest "$out") ;;
    rustic:check) CMD=("$rustic" --no-progress -r "$repo" check --read-data) ;;
  esac
}

# measure ROUND PHASE TOOL: runs the phase under /usr/bin/time and appends a result line
measure() {
  local round=$1 phase=$2 tool=$3
  cmd "$tool" "$phase"
  /usr/bin/time -v -o "$work/time.txt" "${CMD[@]}" >"$work/out.txt" 2>"$work/err.txt" || {
    echo "$tool $phase failed:" >&2; cat "$work/err.txt" >&2; exit 1; }
  awk -v r="$round" -v p="$phase" -v t="$tool" '
    /Elapsed \(wall clock\)/ { n = split($NF, x, ":"); w = (n == 3) ? x[1]*3600 + x[2]*60 + x[3] : x[1]*60 + x[2] }
    /User time/ { u = $NF } /System time/ { s = $NF } /Maximum resident/ { m = $NF }
    END { printf "%s\t%s\t%s\t%.2f\t%.2f\t%d\n", r, p, t, w, u + s, m }' "$work/time.txt" >>"$results"
}

tools=(cairn restic rustic)
# Warm-up, the same for each: the binary loaded once; the data is on tmpfs, so no cache to fill.
"$cairn" --version >/dev/null; "$restic" version >/dev/null; "$rustic" --version >/dev/null
for round in $(seq 1 "$rounds"); do
  # Rotate the order so that no tool always runs first (or right after another's restore).
  shift_by=$(( (round - 1) % 3 ))
  order=("${tools[@]:$shift_by}" "${tools[@]:0:$shift_by}")
  src=$work/src
  rm -rf "$src" "$work"/repo-* "$work"/restore-* "$XDG_CACHE_HOME"
  mkdir -p "$src" && cp -a "$ds/." "$src/"
  for t in "${order[@]}"; do cmd "$t" init; "${CMD[@]}" >/dev/null 2>&1; done
  for t in "${order[@]}"; do measure "$round" backup-first "$t"; done
  for t in "${order[@]}"; do measure "$round" backup-unchanged "$t"; done
  bash "$shared/bench/mutate.sh" "$src" >/dev/null
  for t in "${order[@]}"; do measure "$round" backup-mutated "$t"; done
  for t in "${order[@]}"; do
    measure "$round" restore "$t"
    # restic and rustic restore the snapshot's absolute path below the target; Cairn the directory.
    got=$(find "$work/restore-$t" -type d -name "$(basename "$src")" -print -quit)
    [ "$t" = cairn ] && got=$work/restore-$t
    diff -r --no-dereference "$src" "$got" >/dev/null || { echo "$t restore differs from the data" >&2; exit 1; }
    rm -rf "$work/restore-$t"
  done
  for t in "${order[@]}"; do measure "$round" check "$t"; done
  for t in "${order[@]}"; do
    printf "%s\tsize\t%s\t%s\t0\t0\n" "$round" "$t" "$(du -sb "$work/repo-$t" | cut -f1)" >>"$results"
  done
  echo "round $round done" >&2
done

python3 - "$results" <<'EOF'
import sys, statistics as st
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
val = defaultdict(dict)  # (phase, tool) -> round -> (wall, cpu, rss)
for r, phase, tool, w, c, m in rows:
    val[(phase, tool)][r] = (float(w), float(c), int(m))
med = lambda xs: st.median(xs) if xs else float("nan")
def ratio(phase, peer, i):
    rs = [val[(phase, "cairn")][r][i] / val[(phase, peer)][r][i]
          for r in val[(phase, "cairn")] if r in val[(phase, peer)] and val[(phase, peer)][r][i]]
    return med(rs)
print("| phase | tool | wall s | CPU s | peak RSS MiB | wall: cairn/tool | RSS: cairn/tool |")
print("|---|---|---|---|---|---|---|")
for phase in ["backup-first", "backup-unchanged", "backup-mutated", "restore", "check"]:
    for tool in ["cairn", "restic", "rustic"]:
        v = list(val[(phase, tool)].values())
        w, c, m = med([x[0] for x in v]), med([x[1] for x in v]), med([x[2] for x in v]) / 1024
        rw = rr = ""
        if tool != "cairn":
            rw, rr = f"{ratio(phase, tool, 0):.3f}", f"{ratio(phase, tool, 2):.3f}"
        print(f"| {phase} | {tool} | {w:.2f} | {c:.2f} | {m:.0f} | {rw} | {rr} |")
sizes = {t: med([x[0] for x in val[("size", t)].values()]) / 2**20 for t in ["cairn", "restic", "rustic"]}
print()
print("repository size after three backups (MiB): " + ", ".join(f"{t} {s:.0f}" for t, s in sizes.items())
      + f"; cairn/restic {sizes['cairn'] / sizes['restic']:.2f}, cairn/rustic {sizes['cairn'] / sizes['rustic']:.2f}")
print(f"rounds: {len(val[('size', 'cairn')])}; medians over rounds; ratios are medians of per-round ratios")
EOF
echo "versions: $("$cairn" --version), $("$restic" version | head -1), $("$rustic" --version)"
