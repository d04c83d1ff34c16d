#!/usr/bin/env bash
# Gang fixtures, end to end with the packaged binary (`make deb`, deb profile): one station
# process provisioning N fixtures at once against a `station simulate --fixtures N` process over
# real ptys, on-disk SQLite. Prints, as medians of R runs:
#   - devices/s with 1 and with 8 fixtures at a simulated 115200 baud, and their ratio;
#   - devices/s with 16 un-throttled fixtures;
#   - station CPU (user + system) per device, for each.
# Usage: benches/gang.sh [DEVICES_PER_FIXTURE (default 12)] [RUNS (default 3)]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${STATION_BIN:-$top/target/deb/station}
per=${1:-12}
runs=${2:-3}
d=$(mktemp -d)
sim=
trap '[ -n "$sim" ] && kill "$sim" 2>/dev/null; rm -rf "$d"' EXIT

# One run: N fixtures, B baud; prints "devices wall_s cpu_s".
run() {
    local n=$1 baud=$2 r=$d/run-$1-$2-$RANDOM
    mkdir -p "$r"
    sed -e "s|^group_key_file = .*|group_key_file = \"$top/tests/fixtures/group-key.txt\"|" \
        -e "s|^database = .*|database = \"$r/station.db\"|" \
        -e "s|^export_dir = .*|export_dir = \"$r/exports\"|" "$top/station.toml" > "$r/station.toml"
    "$bin" --config "$r/station.toml" simulate --flash "$r/flash" --fixtures "$n" \
        --devices "$per" --baud "$baud" > "$r/ports" 2>/dev/null &
    sim=$!
    for _ in $(seq 100); do [ "$(wc -l < "$r/ports")" -ge "$n" ] && break; sleep 0.05; done
    if [ "$n" = 1 ]; then
        printf '\n[[fixture]]\nid = "f1"\nport = "%s"\n' "$(head -1 "$r/ports")" >> "$r/station.toml"
    else
        while read -r id port; do
            printf '\n[[fixture]]\nid = "%s"\nport = "%s"\n' "$id" "$port" >> "$r/station.toml"
        done < "$r/ports"
    fi
    /usr/bin/time -f "%e %U %S" -o "$r/time" "$bin" --config "$r/station.toml" --json \
        provision --all-fixtures --count $((n * per)) > "$r/out.json" || true
    kill "$sim" 2>/dev/null || true; wait "$sim" 2>/dev/null || true; sim=
    local passed
    passed=$(grep -c '"event":"passed"' "$r/out.json" || true)
    read -r wall user sys < "$r/time"
    echo "$passed $wall $(python3 -c "print($user + $sys)")"
}

median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

report() {
    local n=$1 baud=$2 rates=() cpus=()
    for _ in $(seq "$runs"); do
        read -r passed wall cpu < <(run "$n" "$baud")
        [ "$passed" = $((n * per)) ] || { echo "only $passed of $((n * per)) devices passed" >&2; exit 1; }
        rates+=("$(python3 -c "print($passed / $wall)")")
        cpus+=("$(python3 -c "print($cpu * 1000 / $passed)")")
    done
    echo "$(median "${rates[@]}") $(median "${cpus[@]}")"
}

read -r one cpu1 < <(report 1 115200)
read -r eight cpu8 < <(report 8 115200)
read -r sixteen cpu16 < <(report 16 0)
python3 - "$per" "$runs" "$one" "$eight" "$sixteen" "$cpu1" "$cpu8" "$cpu16" <<'PY'
import sys
per, runs = sys.argv[1], sys.argv[2]
one, eight, sixteen, c1, c8, c16 = map(float, sys.argv[3:])
print(f"gang fixtures ({per} devices per fixture, median of {runs} runs):")
print(f"  1 fixture  @115200: {one:7.2f} devices/s, station CPU {c1:6.2f} ms/device")
print(f"  8 fixtures @115200: {eight:7.2f} devices/s, station CPU {c8:6.2f} ms/device; ratio {eight / one:.2f} (target >= 7.0)")
print(f" 16 fixtures un-throttled: {sixteen:7.2f} devices/s, station CPU {c16:6.2f} ms/device")
PY
