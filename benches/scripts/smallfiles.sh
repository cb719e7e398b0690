#!/usr/bin/env bash
# Restore of many small files against a few large ones holding the same bytes.
#
# The first MB megabytes (default 800) of the standard dataset, as one tar stream, are cut two
# ways: into 16 KiB files, 500 to a directory (about 51 000 files), and into 4 files. Each set
# is backed up by Cairn and by restic into a fresh repository of its own; then each is
# restored ROUNDS times (default 3), interleaved, every restore compared with its source
# (diff -r) before its time counts. Prints the medians: wall, MB/s of file content, CPU, RSS.
#
# Usage: benches/scripts/smallfiles.sh [WORKDIR] [ROUNDS]   (default /mnt/bench/filesizes, 3)
#   (WORKDIR must not itself be named small or large)
# Needs: a tmpfs at WORKDIR's parent, restic, a release build, the dataset
#   (DS=dir, default /mnt/bench/compare/ds, made by ../shared/bench/make-dataset.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/mnt/bench/filesizes}
rounds=${2:-3}
mb=${MB:-800}
ds=${DS:-/mnt/bench/compare/ds}
cairn=${CAIRN:-$here/target/release/cairn}
restic=${RESTIC:-$(command -v restic || true)}
[ -x "$restic" ] || { echo "restic missing: apt-get install restic" >&2; exit 1; }
[ -x "$cairn" ] || { echo "$cairn missing: cargo build --release -p cairn-agent" >&2; exit 1; }
[ -d "$ds" ] || { echo "$ds missing: ../shared/bench/make-dataset.sh $ds" >&2; exit 1; }
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench XDG_CACHE_HOME=$work/cache

mkdir -p "$work"
cd "$work"
rm -rf small large repo-* out-* results.tsv
tar cf - -C "$(dirname "$ds")" "$(basename "$ds")" | head -c $((mb << 20)) >stream || true
python3 - <<'EOF'
import os
data = open("stream", "rb").read()
piece, per_dir = 16 << 10, 500
for i in range(0, (len(data) + piece - 1) // piece):
    d = f"small/d{i // per_dir:04d}"
    if i % per_dir == 0:
        os.makedirs(d)
    with open(f"{d}/f{i % per_dir:03d}", "wb") as f:
        f.write(data[i * piece:(i + 1) * piece])
os.makedirs("large")
quarter = (len(data) + 3) // 4
for i in range(4):
    with open(f"large/f{i}", "wb") as f:
        f.write(data[i * quarter:(i + 1) * quarter])
EOF
rm stream
bytes=$(du -sb --apparent-size large | cut -f1)

for set in small large; do
  "$cairn" -q -r "repo-cairn-$set" init >/dev/null
  "$cairn" -q -r "repo-cairn-$set" backup "$work/$set" >/dev/null
  "$restic" -q -r "repo-restic-$set" init >/dev/null
  "$restic" -q -r "repo-restic-$set" backup "$work/$set" >/dev/null
done

for round in $(seq 1 "$rounds"); do
  for set in small large; do
    for tool in cairn restic; do
      out=$work/out-$tool-$set
      rm -rf "$out"
      case $tool in
        cairn) cmd=("$cairn" -q -r "repo-cairn-$set" restore latest --target "$out") ;;
        restic) cmd=("$restic" -q -r "repo-restic-$set" restore latest --target "$out") ;;
      esac
      /usr/bin/time -v -o time.txt "${cmd[@]}" >/dev/null
      got=$(find "$out" -type d -name "$set" -print -quit)
      [ "$tool" = cairn ] && got=$out
      diff -r "$work/$set" "$got" >/dev/null || { echo "$tool restore of $set differs" >&2; exit 1; }
      awk -v s="$set" -v t="$tool" '
        /Elapsed \(wall clock\)/ { n = split($NF, x, ":"); w = (n == 3) ? x[1]*3600 + x[2]*60 + x[3] : x[1]*60 + x[2] }
        /User time/ { u = $NF } /System time/ { y = $NF } /Maximum resident/ { m = $NF }
        END { printf "%s\t%s\t%.2f\t%.2f\t%d\n", s, t, w, u + y, m }' time.txt >>results.tsv
      rm -rf "$out"
    done
  done
  echo "round $round done" >&2
done

python3 - "$bytes" "$(find small -type f | wc -l)" <<'EOF'
import sys, statistics as st
from collections import defaultdict
size, nsmall = int(sys.argv[1]), int(sys.argv[2])
v = defaultdict(list)
for l in open("results.tsv"):
    s, t, w, c, m = l.split()
    v[(s, t)].append((float(w), float(c), int(m)))
print(f"{size / 1e6:.0f} MB: 'small' = {nsmall} files of 16 KiB, 'large' = 4 files")
print("| set | tool | wall s | MB/s | CPU s | peak RSS MiB |")
print("|---|---|---|---|---|---|")
for s in ["small", "large"]:
    for t in ["cairn", "restic"]:
        xs = v[(s, t)]
        w = st.median(x[0] for x in xs)
        print(f"| {s} | {t} | {w:.2f} | {size / 1e6 / w:.0f} | {st.median(x[1] for x in xs):.2f} | {st.median(x[2] for x in xs) / 1024:.0f} |")
for t in ["cairn", "restic"]:
    r = st.median(v[("small", t)][i][0] / v[("large", t)][i][0] for i in range(len(v[("small", t)])))
    print(f"{t}: small files take {r:.2f}x the time of large ones (median of per-round ratios)")
EOF
