#!/usr/bin/env bash
# Two Cairn builds against each other on one phase, interleaved: A then B, then B then A, and
# so on, ROUNDS times each, every run into a fresh repository (backup) or from one repository
# made once (restore). Prints each run and the medians of wall and CPU, and of B/A per round.
#
# Usage: benches/scripts/ab.sh A_BINARY B_BINARY backup|restore DATA_DIR [ROUNDS] [WORKDIR]
#   (defaults 5 rounds, WORKDIR /mnt/bench/ab; put WORKDIR and DATA_DIR on a tmpfs)
set -euo pipefail
a=$1 b=$2 phase=$3 data=$4 rounds=${5:-5} work=${6:-/mnt/bench/ab}
for x in "$a" "$b"; do [ -x "$x" ] || { echo "$x: not an executable" >&2; exit 1; }; done
[ -d "$data" ] || { echo "$data: no such directory" >&2; exit 1; }
export CAIRN_PASSWORD=bench XDG_CACHE_HOME=$work/cache
rm -rf "$work" && mkdir -p "$work"
if [ "$phase" = restore ]; then
  "$a" -q -r "$work/repo" init >/dev/null
  "$a" -q -r "$work/repo" backup "$data" >/dev/null
fi
run() { # binary label
  local cmd
  case $phase in
    backup) rm -rf "$work/repo"; "$1" -q -r "$work/repo" init >/dev/null
            cmd=("$1" -q -r "$work/repo" backup "$data") ;;
    restore) rm -rf "$work/out"; cmd=("$1" -q -r "$work/repo" restore latest --target "$work/out") ;;
    *) echo "phase must be backup or restore" >&2; exit 2 ;;
  esac
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" "${cmd[@]}" >/dev/null
  read -r w u s m <"$work/time"
  local size=0
  [ "$phase" = backup ] && size=$(du -sm "$work/repo" | cut -f1)
  echo "$2 $w $(echo "$u + $s" | bc) $m $size" | tee -a "$work/results"
}
for i in $(seq 1 "$rounds"); do
  if [ $((i % 2)) = 1 ]; then run "$a" A; run "$b" B; else run "$b" B; run "$a" A; fi
done
python3 - "$work/results" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
a = [r for r in rows if r[0] == "A"]; b = [r for r in rows if r[0] == "B"]
for name, rs in (("A", a), ("B", b)):
    print(f"{name}: wall {st.median(float(r[1]) for r in rs):.3f} s, CPU {st.median(float(r[2]) for r in rs):.2f} s, "
          f"RSS {st.median(int(r[3]) for r in rs) / 1024:.0f} MiB, repo {st.median(int(r[4]) for r in rs)} MiB")
print(f"B/A wall, median of rounds: {st.median(float(y[1]) / float(x[1]) for x, y in zip(a, b)):.3f}; "
      f"CPU: {st.median(float(y[2]) / float(x[2]) for x, y in zip(a, b)):.3f}")
PY
