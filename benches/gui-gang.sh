#!/usr/bin/env bash
# The window with 16 busy fixture tiles, under Xvfb (Mesa llvmpipe, glow) at 1920x1080: 16 `sim`
# fixtures at a simulated 115200 baud with auto_start, so every tile runs device after device
# while the history scrolls; median of R runs of the frame CPU time (the window's own
# STATION_GUI_BENCH measurement: 300 frames). Needs the packaged binary (`make deb`).
# Usage: benches/gui-gang.sh [FIXTURES (default 16)] [RUNS (default 3)]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${STATION_BIN:-$top/target/deb/station}
n=${1:-16}
runs=${2:-3}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
for r in $(seq "$runs"); do
    w=$d/run-$r
    mkdir -p "$w"
    awk '/^\[gui\]/{print; print "auto_start = true"; print "sounds = false"; skip=1; next}
         skip && /^(auto_start|sounds) *=/{next}
         /^\[/{skip=0} {print}' "$top/station.toml" |
    sed -e "s|^group_key_file = .*|group_key_file = \"$top/tests/fixtures/group-key.txt\"|" \
        -e "s|station-data/|$w/|" > "$w/station.toml"
    grep -q '^\[gui\]' "$w/station.toml" || printf '\n[gui]\nauto_start = true\nsounds = false\n' >> "$w/station.toml"
    if grep -q '^\[simulator\]' "$w/station.toml"; then
        sed -i 's|^\[simulator\].*|[simulator]\nbaud = 115200|' "$w/station.toml"
        awk '!(/^baud *= *0/)' "$w/station.toml" > "$w/t" && mv "$w/t" "$w/station.toml"
    fi
    for k in $(seq "$n"); do
        printf '\n[[fixture]]\nid = "s%d"\nlabel = "Slot %d"\nport = "sim"\n' "$k" "$k" >> "$w/station.toml"
    done
    STATION_GUI_BENCH=300 STATION_OPERATOR=bench xvfb-run -a -s "-screen 0 1920x1080x24" \
        "$bin" --config "$w/station.toml" 2>"$w/err" | grep '^{' | tail -1 > "$w/out.json" || true
    [ -s "$w/out.json" ] || { echo "the window did not report:"; cat "$w/err"; exit 1; }
done
python3 - "$n" "$d"/run-*/out.json <<'PY'
import json, statistics, sys
n = sys.argv[1]
runs = [json.load(open(p)) for p in sys.argv[2:]]
med = lambda k: statistics.median(r[k] for r in runs)
print(f"window with {n} busy fixture tiles at 1920x1080 (Xvfb, llvmpipe), median of {len(runs)} runs of 300 frames:")
print(f"  frame CPU time median {med('frame_cpu_median_ms'):.2f} ms, p99 {med('frame_cpu_p99_ms'):.2f} ms (target <= 16 ms); "
      f"launch to first frame {med('launch_to_first_frame_ms'):.0f} ms; resident memory {med('rss_mb'):.0f} MB")
PY
