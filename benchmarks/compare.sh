#!/usr/bin/env bash
# Side by side, interleaved: two checkouts of dataformer_nb on the same machine, at the same time.
#   git worktree add /tmp/before v0.1.0   # or any commit
#   bash benchmarks/compare.sh /tmp/before . [rounds]
# Each round runs the floor, BEFORE and AFTER back to back (cache off N=2000, cold N=10000, warm
# N=100000 against each one's own floor, import time), so the machine's drift hits all alike;
# it prints the median over the rounds of each round's ratio to its floor.
set -euo pipefail
BEFORE=$(cd "$1" && pwd); AFTER=$(cd "$2" && pwd); ROUNDS=${3:-5}; PORT=${PORT:-8930}
WORK=$(mktemp -d); LOG="$WORK/log"
python "$AFTER/benchmarks/server.py" --port "$PORT" > /dev/null 2>&1 & SERVER=$!
trap 'kill $SERVER; rm -rf "$WORK"' EXIT
sleep 1.5
cpu() { tail -1 | python -c "import json,sys; d=json.load(sys.stdin); print(d['cpu_s'], d['rss_mb'])"; }
run() { local repo=$1; shift; (cd "$repo" && PYTHONPATH="$repo" python benchmarks/clients.py "$@" \
        --url "http://127.0.0.1:$PORT/v1"); }
imports() { (cd "$1" && env -u PYTHONDONTWRITEBYTECODE PYTHONPATH="$1" python -c "
import sys; sys.path.insert(0, 'benchmarks')
from run import import_seconds
print(import_seconds('httpx', 5), import_seconds('dataformer_nb', 5))"); }
run "$BEFORE" dataformer_nb -n 100000 --cache on --cache-dir "$WORK/warm_before" > /dev/null
run "$AFTER" dataformer_nb -n 100000 --cache on --cache-dir "$WORK/warm_after" > /dev/null
for i in $(seq "$ROUNDS"); do
  for who in before after; do
    repo=$([ $who = before ] && echo "$BEFORE" || echo "$AFTER")
    echo "off floor_$who $(run "$AFTER" aiohttp -n 2000 | cpu)" >> "$LOG"
    echo "off $who $(run "$repo" dataformer_nb -n 2000 | cpu)" >> "$LOG"
    echo "cold floor_$who $(run "$AFTER" aiohttp -n 10000 | cpu)" >> "$LOG"
    echo "cold $who $(run "$repo" dataformer_nb -n 10000 --cache on --cache-dir "$WORK/cold_$who$i" | cpu)" >> "$LOG"
    echo "warm floor_$who $(run "$repo" diskcache_get -n 100000 --cache on --cache-dir "$WORK/warm_$who" | cpu)" >> "$LOG"
    echo "warm $who $(run "$repo" dataformer_nb -n 100000 --cache on --cache-dir "$WORK/warm_$who" | cpu)" >> "$LOG"
    echo "import floor_$who $(imports "$repo")" >> "$LOG"
  done
  echo "round $i done" >&2
done
python - "$LOG" <<'PY'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    kind, who, *values = line.split()
    runs[kind, who].append([float(v) for v in values])
print("| measure | before | after |\n|---|---|---|")
for kind in ("off", "cold", "warm"):
    cells = []
    for who in ("before", "after"):
        ratios = [run[0] / floor[0] for run, floor in zip(runs[kind, who], runs[kind, f"floor_{who}"])]
        cells.append(f"{statistics.median(ratios):.2f} x")
    print(f"| {kind} CPU / floor | {' | '.join(cells)} |")
rss = [statistics.median(r[1] for r in runs["warm", who]) for who in ("before", "after")]
print(f"| warm peak RSS | {rss[0]:.0f} MB | {rss[1]:.0f} MB |")
imports = [statistics.median(r[1] / r[0] for r in runs["import", f"floor_{who}"]) for who in ("before", "after")]
print(f"| import / httpx | {imports[0]:.2f} x | {imports[1]:.2f} x |")
PY
