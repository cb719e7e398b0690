#!/usr/bin/env bash
# The repository server's cost: backup and restore of the standard dataset directly into a
# local directory against the same through `cairn server` (TLS, HTTP/2, an append token for
# the backup, a read token for the restore) fronting another local directory, interleaved,
# ROUNDS rounds (default 3; the order alternates per round). Every run starts from a fresh
# repository (backup) or a fresh target (restore, compared with the dataset by diff -r).
#
# Measures each client run under /usr/bin/time (wall, CPU, peak RSS) and the server's own CPU
# (utime + stime from /proc/PID/stat, before and after each run) and peak RSS (VmHWM).
# Prints a markdown table of medians and the median per-round ratio server/direct.
#
# Usage: benches/scripts/server.sh [WORKDIR] [ROUNDS]   (default /mnt/bench/server, 3; DATA=DIR
#   uses an existing copy of the dataset instead of making one in WORKDIR/ds)
# Needs: a tmpfs at WORKDIR's parent (mount -t tmpfs -o size=14g tmpfs /mnt/bench), openssl,
#   a release build (cargo build --release -p cairn-agent).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/mnt/bench/server}
rounds=${2:-3}
cairn=${CAIRN:-$here/target/release/cairn}
shared=${SHARED:-$here/../shared}
[ -x "$cairn" ] || { echo "$cairn missing: cargo build --release -p cairn-agent" >&2; exit 1; }
mkdir -p "$work"
ds=${DATA:-$work/ds}
[ -d "$ds" ] || bash "$shared/bench/make-dataset.sh" "$ds" >/dev/null
export CAIRN_PASSWORD=bench XDG_CACHE_HOME=$work/cache
results=$work/results.tsv
: >"$results"

# A CA and a certificate for 127.0.0.1, tokens and a receipt key.
pki=$work/pki
rm -rf "$pki" && mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench-ca -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$pki/tls.key" -out "$pki/tls.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$pki/ext"
openssl x509 -req -in "$pki/tls.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 2 -extfile "$pki/ext" -out "$pki/tls.pem" 2>/dev/null
append=bench-append-token-0123456789 read=bench-read-token-0123456789
admin=bench-admin-token-0123456789
printf '%s append\n%s read\n%s admin\n' "$append" "$read" "$admin" >"$pki/tokens"
head -c 32 /dev/urandom | base64 >"$pki/receipt.key"

server_pid=
stop_server() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true; server_pid=; }
trap stop_server EXIT
# start_server STORAGE: starts the server on a fresh port and waits until it is ready.
start_server() {
  stop_server
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$cairn" server --repo "$1" --listen "127.0.0.1:$port" --tokens-file "$pki/tokens" \
    --receipt-key-file "$pki/receipt.key" --tls-cert "$pki/tls.pem" --tls-key "$pki/tls.key" \
    2>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 1 100); do
    curl -sf --cacert "$pki/ca.pem" "https://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "the server did not become ready:" >&2; cat "$work/server.log" >&2; exit 1
}
server_cpu() { awk '{ print ($14 + $15) / 100 }' "/proc/$server_pid/stat"; }
server_hwm() { awk '/VmHWM/ { print $2 }' "/proc/$server_pid/status"; }

# measure ROUND PHASE MODE CMD...: runs CMD under /usr/bin/time, appends a result line
measure() {
  local round=$1 phase=$2 mode=$3; shift 3
  local c0=0 c1=0 hwm=0 w u s m
  [ "$mode" = server ] && c0=$(server_cpu)
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || {
    echo "$mode $phase failed:" >&2; cat "$work/err" >&2; exit 1; }
  [ "$mode" = server ] && { c1=$(server_cpu); hwm=$(server_hwm); }
  read -r w u s m <"$work/time"
  printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$round" "$phase" "$mode" "$w" \
    "$(echo "$u + $s" | bc)" "$m" "$(echo "$c1 - $c0" | bc)" "$hwm" >>"$results"
}

# The command lines of each path (arrays, so /usr/bin/time runs them directly).
direct=("$cairn" -q -r "$work/repo-direct")
viaserver() { # TOKEN: sets VIA to the command line with that token
  VIA=(env "CAIRN_SERVER_TOKEN=$1" "$cairn" -q --cacert "$pki/ca.pem" -r "rest:https://127.0.0.1:$port")
}

"$cairn" --version >/dev/null
for round in $(seq 1 "$rounds"); do
  rm -rf "$work/repo-direct" "$work/repo-server" "$work"/out-*
  mkdir -p "$work/repo-server"
  start_server "$work/repo-server"
  "${direct[@]}" init >/dev/null
  viaserver "$admin"; "${VIA[@]}" init >/dev/null
  if [ $((round % 2)) = 1 ]; then order=(direct server); else order=(server direct); fi
  for path in "${order[@]}"; do
    if [ "$path" = direct ]; then measure "$round" backup direct "${direct[@]}" backup --host bench "$ds"
    else viaserver "$append"; measure "$round" backup server "${VIA[@]}" backup --host bench "$ds"; fi
  done
  for path in "${order[@]}"; do
    if [ "$path" = direct ]; then measure "$round" restore direct "${direct[@]}" restore latest --target "$work/out-direct"
    else viaserver "$read"; measure "$round" restore server "${VIA[@]}" restore latest --target "$work/out-server"; fi
    diff -r --no-dereference "$ds" "$work/out-$path" >/dev/null || { echo "$path restore differs from the data" >&2; exit 1; }
    rm -rf "$work/out-$path"
  done
  stop_server
  echo "round $round done" >&2
done

python3 - "$results" <<'EOF'
import sys, statistics as st
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
val = defaultdict(dict)  # (phase, mode) -> round -> (wall, client cpu, client rss KiB, server cpu, server hwm KiB)
for r, phase, mode, w, c, m, sc, sm in rows:
    val[(phase, mode)][r] = (float(w), float(c), int(m), float(sc), int(sm))
med = st.median
print("| phase | path | wall s | client CPU s | client peak RSS MiB | server CPU s | server peak RSS MiB | wall: server/direct |")
print("|---|---|---|---|---|---|---|---|")
for phase in ["backup", "restore"]:
    for mode in ["direct", "server"]:
        v = list(val[(phase, mode)].values())
        cols = [med(x[i] for x in v) for i in range(5)]
        ratio = ""
        if mode == "server":
            d = val[(phase, "direct")]
            ratio = f"{med(val[(phase, 'server')][r][0] / d[r][0] for r in d):.3f}"
        srv = (f"{cols[3]:.2f}", f"{cols[4] / 1024:.0f}") if mode == "server" else ("", "")
        print(f"| {phase} | {mode} | {cols[0]:.2f} | {cols[1]:.2f} | {cols[2] / 1024:.0f} | {srv[0]} | {srv[1]} | {ratio} |")
print(f"\nrounds: {len(val[('backup', 'direct')])}; medians over rounds; the ratio is the median of per-round ratios")
EOF
echo "version: $("$cairn" --version)"
