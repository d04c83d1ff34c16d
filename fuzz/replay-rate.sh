#!/bin/bash
# usage: fuzz/replay-rate.sh TARGET... -- replay each target's whole corpus once (-runs=0: no mutation)
# with the long runs' binaries, best of 3, minus the best of 3 start-ups on an empty corpus.
# (the binaries of `cargo +nightly fuzz build -s none`; the figures in fuzz/RESULTS.md, "Time per input").
cd "$(dirname "$0")/.."
mkdir -p /tmp/emptycorp
best3() { local b=99; for i in 1 2 3; do s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); d=$(echo "$e - $s" | bc); b=$(echo "if ($d < $b) $d else $b" | bc); done; echo $b; }
printf "%-12s %7s %10s %9s %9s %11s %9s %14s\n" target inputs bytes mean_B run_s us/input ns/byte ms/11520B
for t in "$@"; do
  bin=fuzz/target/x86_64-unknown-linux-gnu/release/$t
  dirs="fuzz/corpus-run/$t fuzz/corpus/$t fuzz/regressions/$t"
  files=$(find $dirs -type f | wc -l); bytes=$(find $dirs -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
  case $t in frames) len="-max_len=8192";; responses) len="-max_len=16384";; *) len="-max_len=1048576";; esac
  full=$(best3 $bin -runs=0 $len -rss_limit_mb=2048 $dirs)
  empty=$(best3 $bin -runs=0 /tmp/emptycorp)
  run=$(echo "$full - $empty" | bc)
  printf "%-12s %7d %10d %9d %9.3f %11.1f %9.0f %14.2f\n" $t $files $bytes $((bytes/files)) $run \
    $(echo "$run*1000000/$files" | bc -l) $(echo "$run*1000000000/$bytes" | bc -l) $(echo "$run*1000*11520/$bytes" | bc -l)
done
