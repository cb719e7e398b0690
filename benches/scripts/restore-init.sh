#!/usr/bin/env bash
# `cairn restore-init` of the standard dataset against `cairn restore` of the same snapshot,
# from a local directory and from Azure Blob (Azurite on loopback): what an app's pod waits
# for before it starts. ROUNDS rounds (default 3), interleaved; each restores into a fresh
# directory (restore-init's holds only lost+found, as a new disk does) and is compared with
# the dataset. Prints medians of wall time, CPU and peak RSS.
#
# Usage: benches/scripts/restore-init.sh [WORKDIR] [ROUNDS]   (default /mnt/bench/restore-init, 3)
# Needs: scripts/test-services.sh (Azurite in node_modules), a release build.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/mnt/bench/restore-init}
rounds=${2:-3}
cairn=${CAIRN:-$here/target/release/cairn}
shared=${SHARED:-$here/../shared}
azurite=$here/node_modules/.bin/azurite-blob
[ -x "$cairn" ] || { echo "$cairn missing: cargo build --release -p cairn-agent" >&2; exit 1; }
[ -x "$azurite" ] || { echo "$azurite missing: scripts/test-services.sh" >&2; exit 1; }
mkdir -p "$work"
ds=${DS:-$work/ds}
[ -d "$ds" ] || bash "$shared/bench/make-dataset.sh" "$ds" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rm -rf "$work/azurite" && mkdir -p "$work/azurite"
"$azurite" --silent --disableTelemetry --skipApiVersionCheck --loose --location "$work/azurite" \
  --blobHost 127.0.0.1 --blobPort "$port" >"$work/azurite.log" 2>&1 &
azurite_pid=$!
trap 'kill $azurite_pid 2>/dev/null || true' EXIT
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
  kill -0 $azurite_pid 2>/dev/null || { cat "$work/azurite.log" >&2; exit 1; }
  sleep 0.2
done
export CAIRN_PASSWORD=bench AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:$port
results=$work/results.tsv
: >"$results"
identity=(--host prod --as-path /db/data-pg-0 --label namespace=db --label pvc=data-pg-0)
for repo in "$work/repo" azure://bench/restore-init; do
  [ "${repo#azure}" = "$repo" ] && rm -rf "$repo"
  "$cairn" -q -r "$repo" init >/dev/null
  "$cairn" -q -r "$repo" backup "${identity[@]}" "$ds" >/dev/null
done
measure() { # ROUND KIND SOURCE CMD...
  local round=$1 kind=$2 src=$3; shift 3
  /usr/bin/time -v -o "$work/time.txt" "$@" >/dev/null 2>"$work/err.txt" || {
    echo "$kind $src failed:" >&2; cat "$work/err.txt" >&2; exit 1; }
  awk -v r="$round" -v k="$kind" -v s="$src" '
    /Elapsed \(wall clock\)/ { n = split($NF, x, ":"); w = (n == 3) ? x[1]*3600 + x[2]*60 + x[3] : x[1]*60 + x[2] }
    /User time/ { u = $NF } /System time/ { s2 = $NF } /Maximum resident/ { m = $NF }
    END { printf "%s\t%s\t%s\t%.2f\t%.2f\t%d\n", r, k, s, w, u + s2, m }' "$work/time.txt" >>"$results"
}
for r in $(seq 1 "$rounds"); do
  for src in local azurite; do
    repo=$work/repo; [ $src = azurite ] && repo=azure://bench/restore-init
    kinds=(restore restore-init); [ $((r % 2)) = 0 ] && kinds=(restore-init restore)
    for kind in "${kinds[@]}"; do
      out=$work/out; rm -rf "$out"; mkdir -p "$out/lost+found"
      if [ $kind = restore ]; then
        measure "$r" $kind $src "$cairn" -q -r "$repo" restore latest --target "$out"
      else
        measure "$r" $kind $src env CAIRN_REPOSITORY="$repo" CAIRN_TARGET="$out" CAIRN_NAMESPACE=db \
          CAIRN_PVC=data-pg-0 "$cairn" restore-init
      fi
      diff -r -q --no-dereference --exclude=.cairn --exclude=lost+found "$ds" "$out" >/dev/null \
        || { echo "$kind from $src differs from the dataset" >&2; exit 1; }
    done
  done
done
echo "kind          source   wall s (median)  CPU s  peak RSS MiB"
for src in local azurite; do
  for kind in restore restore-init; do
    awk -v k=$kind -v s=$src -F'\t' '$2 == k && $3 == s { print $4, $5, $6 }' "$results" | sort -n | awk -v k=$kind -v s=$src '
      { w[NR] = $1; c[NR] = $2; m[NR] = $3 } END { i = int((NR + 1) / 2);
        printf "%-13s %-8s %15.2f %6.2f %13.1f\n", k, s, w[i], c[i], m[i] / 1024 }'
  done
done
