#!/usr/bin/env bash
# Backup and restore throughput of the standard dataset into Azure Blob (Azurite on loopback)
# against a local directory, in one run, with restic into a local directory as the reference.
# ROUNDS rounds (default 3), interleaved: each round backs up into fresh repositories (cairn
# local, cairn Azurite, restic local, the order rotating), then restores each in turn (every
# restore compared with the dataset). Prints medians of wall time, MB/s of dataset bytes, CPU
# and peak RSS. Azurite runs on the same two cores and stores its blobs on the same tmpfs, so
# its own CPU time is part of what the Azurite path costs.
#
# Usage: benches/scripts/azure.sh [WORKDIR] [ROUNDS]   (default /mnt/bench/azure, 3)
# Needs: scripts/test-services.sh (Azurite in node_modules), restic, a release build.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/mnt/bench/azure}
rounds=${2:-3}
cairn=${CAIRN:-$here/target/release/cairn}
shared=${SHARED:-$here/../shared}
azurite=$here/node_modules/.bin/azurite-blob
command -v restic >/dev/null || { echo "restic missing: apt-get install restic" >&2; exit 1; }
[ -x "$cairn" ] || { echo "$cairn missing: cargo build --release -p cairn-agent" >&2; exit 1; }
[ -x "$azurite" ] || { echo "$azurite missing: scripts/test-services.sh" >&2; exit 1; }

mkdir -p "$work"
ds=${DS:-$work/ds}   # DS=/path reuses a dataset made elsewhere (a real directory, not a link)
[ -d "$ds" ] || bash "$shared/bench/make-dataset.sh" "$ds" >/dev/null
bytes=$(du -sb --apparent-size "$ds" | cut -f1)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rm -rf "$work/azurite" && mkdir -p "$work/azurite"
"$azurite" --silent --disableTelemetry --skipApiVersionCheck --loose --location "$work/azurite" \
  --blobHost 127.0.0.1 --blobPort "$port" >"$work/azurite.log" 2>&1 &
azurite_pid=$!
trap 'kill $azurite_pid 2>/dev/null || true' EXIT
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
  kill -0 $azurite_pid 2>/dev/null || { echo "azurite exited:" >&2; cat "$work/azurite.log" >&2; exit 1; }
  sleep 0.2
done
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench XDG_CACHE_HOME=$work/cache
export AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:$port
results=$work/results.tsv
: >"$results"

# repo_of TARGET ROUND: the repository location of a target in a round
repo_of() {
  case $1 in
    cairn-local) echo "$work/repo-local-$2" ;;
    cairn-azurite) echo "azure://bench/round-$2" ;;
    restic-local) echo "$work/repo-restic-$2" ;;
  esac
}
measure() { # ROUND PHASE TARGET CMD...
  local round=$1 phase=$2 target=$3; shift 3
  /usr/bin/time -v -o "$work/time.txt" "$@" >/dev/null 2>"$work/err.txt" || {
    echo "$target $phase failed:" >&2; cat "$work/err.txt" >&2; exit 1; }
  awk -v r="$round" -v p="$phase" -v t="$target" '
    /Elapsed \(wall clock\)/ { n = split($NF, x, ":"); w = (n == 3) ? x[1]*3600 + x[2]*60 + x[3] : x[1]*60 + x[2] }
    /User time/ { u = $NF } /System time/ { s = $NF } /Maximum resident/ { m = $NF }
    END { printf "%s\t%s\t%s\t%.2f\t%.2f\t%d\n", r, p, t, w, u + s, m }' "$work/time.txt" >>"$results"
}

targets=(cairn-local cairn-azurite restic-local)
for round in $(seq 1 "$rounds"); do
  shift_by=$(( (round - 1) % 3 ))
  order=("${targets[@]:$shift_by}" "${targets[@]:0:$shift_by}")
  for t in "${order[@]}"; do
    repo=$(repo_of "$t" "$round")
    case $t in
      cairn-*) "$cairn" -q -r "$repo" init >/dev/null
               measure "$round" backup "$t" "$cairn" -q -r "$repo" backup --host bench "$ds" ;;
      restic-*) restic -q -r "$repo" init >/dev/null
                measure "$round" backup "$t" restic -q -r "$repo" backup --host bench "$ds" ;;
    esac
  done
  for t in "${order[@]}"; do
    repo=$(repo_of "$t" "$round") out=$work/restore
    rm -rf "$out"
    case $t in
      cairn-*) measure "$round" restore "$t" "$cairn" -q -r "$repo" restore latest --target "$out"
               diff -r --no-dereference "$ds" "$out" >/dev/null ;;
      restic-*) measure "$round" restore "$t" restic -q -r "$repo" restore latest --target "$out"
                diff -r --no-dereference "$ds" "$out$ds" >/dev/null ;;
    esac || { echo "$t restore differs from the dataset" >&2; exit 1; }
    rm -rf "$out"
  done
  rm -rf "$work"/repo-*
  echo "round $round done" >&2
done

python3 - "$results" "$bytes" <<'EOF'
import sys, statistics as st
from collections import defaultdict
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
size = int(sys.argv[2])
v = defaultdict(list)
for r, phase, target, w, c, m in rows:
    v[(phase, target)].append((float(w), float(c), int(m)))
print(f"dataset: {size / 1e6:.0f} MB; medians of {len(v[('backup', 'cairn-local')])} rounds")
print()
print("| phase | target | wall s | MB/s | CPU s (cairn/restic) | peak RSS MiB |")
print("|---|---|---|---|---|---|")
for phase in ["backup", "restore"]:
    for t in ["cairn-local", "cairn-azurite", "restic-local"]:
        xs = v[(phase, t)]
        w = st.median(x[0] for x in xs)
        print(f"| {phase} | {t} | {w:.2f} | {size / w / 1e6:.0f} | {st.median(x[1] for x in xs):.2f} | {st.median(x[2] for x in xs) / 1024:.0f} |")
EOF
echo "versions: $("$cairn" --version), $(restic version | head -1), azurite $("$azurite" --version)"
