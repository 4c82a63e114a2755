#!/usr/bin/env bash
# The team cache (PostgreSQL) against its floors, side by side in one run:
#   bash benchmarks/team.sh postgresql://postgres@127.0.0.1:5432/test [rounds]
# cold: N=10,000 uncached requests through the team cache vs the aiohttp floor (the network);
# warm: a re-run of N=100,000 from the team cache vs bare psycopg fetching the same keys, 500 a
# query. Each round runs floor and dataformer_nb back to back; the median of the rounds' ratios
# (CPU and wall) is printed. Each round uses a fresh schema, dropped at the end.
set -euo pipefail
URL=$1; ROUNDS=${2:-3}; PORT=${PORT:-8931}; HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d); LOG="$WORK/log"
python "$HERE/benchmarks/server.py" --port "$PORT" > /dev/null 2>&1 & SERVER=$!
trap 'kill $SERVER; python -c "import psycopg,sys; c=psycopg.connect(sys.argv[1], autocommit=True)
[c.execute(f\"DROP SCHEMA IF EXISTS {s} CASCADE\") for (s,) in c.execute(\"SELECT nspname FROM pg_namespace WHERE nspname LIKE %s\", (\"bench_team_%\",)).fetchall()]" "$URL"; rm -rf "$WORK"' EXIT
sleep 1.5
run() { (cd "$HERE" && PYTHONPATH="$HERE" python benchmarks/clients.py "$@" --url "http://127.0.0.1:$PORT/v1"); }
fields() { tail -1 | python -c "import json,sys; d=json.load(sys.stdin); assert d['correct'] == d['n'], d; print(d['cpu_s'], d['wall_s'])"; }
export DATAFORMER_CACHE_SCHEMA=bench_team_warm
run dataformer_nb -n 100000 --cache on --cache-dir "$WORK/w" --cache-url "$URL" > /dev/null  # fill it once
for i in $(seq "$ROUNDS"); do
  export DATAFORMER_CACHE_SCHEMA="bench_team_cold$i"
  echo "cold floor $(run aiohttp -n 10000 | fields)" >> "$LOG"
  echo "cold team $(run dataformer_nb -n 10000 --cache on --cache-dir "$WORK/c$i" --cache-url "$URL" | fields)" >> "$LOG"
  export DATAFORMER_CACHE_SCHEMA=bench_team_warm
  echo "warm floor $(run psycopg_get -n 100000 --cache-dir "$WORK/w" --cache-url "$URL" | fields)" >> "$LOG"
  echo "warm team $(run dataformer_nb -n 100000 --cache on --cache-dir "$WORK/w" --cache-url "$URL" | fields)" >> "$LOG"
  echo "round $i done" >&2
done
python - "$LOG" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for case, target in (("cold", 2.5), ("warm", 1.5)):
    floors = [r for r in rows if r[0] == case and r[1] == "floor"]
    ours = [r for r in rows if r[0] == case and r[1] == "team"]
    cpu = statistics.median(float(o[2]) / float(f[2]) for f, o in zip(floors, ours))
    wall = statistics.median(float(o[3]) / float(f[3]) for f, o in zip(floors, ours))
    print(f"{case}: team cache / floor, median of {len(ours)} rounds: CPU {cpu:.2f}x, wall {wall:.2f}x (target <= {target}x)"
          f"; floor {statistics.median(float(f[3]) for f in floors):.2f} s wall,"
          f" team {statistics.median(float(o[3]) for o in ours):.2f} s wall")
PY
