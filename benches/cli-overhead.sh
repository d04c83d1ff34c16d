#!/usr/bin/env bash
# Station overhead per device as the line sees it: the packaged binary (`make deb`, deb profile)
# provisioning N devices (default 300) on an un-throttled simulator process over a real pty,
# on-disk SQLite; median and p99 of the passed events' overhead_ms (time not spent waiting on
# the line). Usage: benches/cli-overhead.sh [N]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${STATION_BIN:-$top/target/deb/station}
n=${1:-300}
d=$(mktemp -d)
trap 'kill "$sim" 2>/dev/null || true; rm -rf "$d"' EXIT
sed -e "s|^group_key_file = .*|group_key_file = \"$top/tests/fixtures/group-key.txt\"|" "$top/station.toml" > "$d/station.toml"
"$bin" --config "$d/station.toml" simulate --flash "$d/flash" --devices "$n" > "$d/port" 2>/dev/null &
sim=$!
for _ in $(seq 50); do [ -s "$d/port" ] && break; sleep 0.1; done
"$bin" --config "$d/station.toml" --json provision --port "$(head -1 "$d/port")" --count "$n" > "$d/out.json"
python3 - "$d/out.json" <<'PY'
import json, statistics, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
p = [e for e in ev if e.get('event') == 'passed']
o = sorted(e['overhead_ms'] for e in p)
t = sorted(e['duration_ms'] for e in p)
print(f"devices {len(p)}; overhead median {statistics.median(o):.3f} ms, p99 {o[max(0, int(len(o) * 0.99) - 1)]:.3f} ms; whole device median {statistics.median(t):.3f} ms")
PY
