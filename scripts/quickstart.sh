#!/usr/bin/env bash
# Cairn's main job on the embedded default: a local repository directory, no cloud account.
# Builds cairn, creates a repository in ./cairn-quickstart/repo, backs up DIR (default: this
# checkout's sources), lists snapshots, backs up again (nothing new is read), restores into
# ./cairn-quickstart/restore and compares the restored tree with the original.
# Usage: scripts/quickstart.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(realpath "${1:-.}")
work=$PWD/cairn-quickstart
cargo build --release -q -p cairn-agent
cairn=$PWD/target/release/cairn
rm -rf "$work"
mkdir -p "$work"
export CAIRN_REPOSITORY=$work/repo CAIRN_PASSWORD=quickstart-password
exclude=(--exclude "$PWD/target" --exclude "$work")
echo "== cairn init";                    "$cairn" init
echo "== cairn backup $src";             "$cairn" backup "${exclude[@]}" --tag quickstart "$src"
echo "== cairn backup $src (again)";     "$cairn" backup "${exclude[@]}" --tag quickstart "$src"
echo "== cairn snapshots";               "$cairn" snapshots
echo "== cairn restore latest";          "$cairn" restore latest --target "$work/restore" --verify
echo "== diff -r $src $work/restore"
diff -r --no-dereference -x target -x cairn-quickstart "$src" "$work/restore" && echo "restored tree is identical"
