#!/usr/bin/env bash
# Compares the fast paths of two commits of Kmem in one process:
#   bench/compare-builds.sh BASE [HEAD] [MODE...]    (MODE: slab kmalloc batch klock; default the first three)
# Each commit is checked out into a temporary worktree, the harness (bench/Kmem.BuildCompare/
# Harness) is built against it, and Kmem.BuildCompare loads both builds into two load
# contexts and times them in alternating rounds, so machine drift hits both alike. It prints
# each build's median ns per alloc+free pair and the median of the paired ratios, once with
# BASE loaded first and once with HEAD first (the second context is sometimes slower for
# reasons of its own), then the geometric mean of the two: HEAD/BASE with the order cancelled.
set -euo pipefail
cd "$(dirname "$0")/.."
base=$1; head=${2:-HEAD}; shift $(( $# >= 2 ? 2 : 1 )) || true
modes=("${@:-slab kmalloc batch}"); read -r -a modes <<< "${modes[*]}"
work=$(mktemp -d)
trap 'git worktree remove --force "$work/a" >/dev/null 2>&1 || true; git worktree remove --force "$work/b" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add -f "$work/a" "$base" >/dev/null 2>&1
git worktree add -f "$work/b" "$head" >/dev/null 2>&1
for side in a b; do
  cp -r bench/Kmem.BuildCompare/Harness "$work/h-$side"
  dotnet build "$work/h-$side/Harness.csproj" -c Release -p:KmemDir="$work/$side" -o "$work/out-$side" -v q -nologo >/dev/null
done
dotnet build bench/Kmem.BuildCompare -c Release -v q -nologo >/dev/null
run() { dotnet bench/Kmem.BuildCompare/bin/Release/net10.0/Kmem.BuildCompare.dll "$@" 41 4000000; }
for mode in "${modes[@]}"; do
  ab=$(run "$work/out-a" "$work/out-b" "$mode"); echo "BASE first: $ab"
  ba=$(run "$work/out-b" "$work/out-a" "$mode"); echo "HEAD first: $ba"
  r1=$(sed -E 's/.*B\/A median ([0-9.]+).*/\1/' <<< "$ab"); r2=$(sed -E 's/.*B\/A median ([0-9.]+).*/\1/' <<< "$ba")
  awk -v m="$mode" -v a="$r1" -v b="$r2" 'BEGIN { printf "%s: HEAD/BASE %.3f (geometric mean of %s and 1/%s)\n", m, sqrt(a / b), a, b }'
done
