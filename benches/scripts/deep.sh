#!/usr/bin/env bash
# Restore time of deep chains: for each depth, a chain d/d/…/d/leaf.txt (made relative to
# directory descriptors: its paths are longer than PATH_MAX) is backed up once, then restored
# ROUNDS times into a fresh target; prints each run, then the median wall time per depth.
# Also samples the restore's peak number of open descriptors (from /proc, every 10 ms).
#
# Usage: benches/scripts/deep.sh BINARY [ROUNDS] [WORKDIR] [DEPTH…]
#   (defaults 3 rounds, WORKDIR /mnt/bench/deep, depths 1000 5000 10000; put WORKDIR on a tmpfs)
set -euo pipefail
bin=$1 rounds=${2:-3} work=${3:-/mnt/bench/deep}
shift $(( $# < 3 ? $# : 3 ))
depths=("$@"); [ ${#depths[@]} -gt 0 ] || depths=(1000 5000 10000)
[ -x "$bin" ] || { echo "$bin: not an executable" >&2; exit 1; }
export CAIRN_PASSWORD=bench XDG_CACHE_HOME=$work/cache
rm -rf "$work" && mkdir -p "$work"
chain() { # dir depth
  python3 - "$1" "$2" <<'PY'
import os, sys
root, depth = sys.argv[1], int(sys.argv[2])
os.makedirs(root)
fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
for _ in range(depth):
    os.mkdir("d", dir_fd=fd)
    new = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd)
    fd = new
f = os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
os.write(f, b"at the bottom\n")
PY
}
peak_fds() { # pid of /usr/bin/time: highest count of open descriptors of its child while it runs
  local pid=$1 peak=0 n child
  while kill -0 "$pid" 2>/dev/null; do
    child=$(pgrep -P "$pid" -n || true)
    n=0; [ -n "$child" ] && n=$(ls /proc/"$child"/fd 2>/dev/null | wc -l)
    [ "$n" -gt "$peak" ] && peak=$n
    sleep 0.01
  done
  echo "$peak"
}
for depth in "${depths[@]}"; do
  chain "$work/src-$depth" "$depth"
  "$bin" -q -r "$work/repo-$depth" init >/dev/null
  "$bin" -q -r "$work/repo-$depth" backup "$work/src-$depth" >/dev/null
  rm -rf "$work/src-$depth"
  for i in $(seq 1 "$rounds"); do
    rm -rf "$work/out"
    /usr/bin/time -f "%e %U %S %M" -o "$work/time" \
      "$bin" -q -r "$work/repo-$depth" restore latest --target "$work/out" >/dev/null &
    fds=$(peak_fds $!)
    wait $!
    read -r w u s m <"$work/time"
    echo "$depth $w $(echo "$u + $s" | bc) $m $fds" | tee -a "$work/results"
  done
done
python3 - "$work/results" <<'PY'
import sys, statistics as st, collections
rows = collections.defaultdict(list)
for l in open(sys.argv[1]):
    d, w, c, m, f = l.split(); rows[int(d)].append((float(w), float(c), int(m), int(f)))
for d, rs in sorted(rows.items()):
    print(f"depth {d}: wall {st.median(r[0] for r in rs):.3f} s, CPU {st.median(r[1] for r in rs):.2f} s, "
          f"RSS {st.median(r[2] for r in rs) / 1024:.0f} MiB, peak descriptors {max(r[3] for r in rs)}")
PY
