#!/usr/bin/env bash
# Load on the collector: --agents (default 50) agents send pre-generated batches at once over
# mutual TLS on loopback (collector/examples/load.rs), with detection on (each site learns
# for --learn seconds of event time, then detects, with rogue writes raising alerts). The
# collector runs as its own process; the script reports sustained events/s, the alert-latency
# histogram (batch arrival to alert and incident stored) from /metrics, detection batches
# skipped, and the collector's peak RSS and CPU.
# Usage: bench/collector-load.sh [agents] [batches per agent] [events per batch]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
agents="${1:-50}"
batches="${2:-120}"
batch_events="${3:-1000}"
learn=10
work="${BENCH_DIR:-/var/tmp/mamori-bench}/collector-load"
rm -rf "$work" && mkdir -p "$work"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mamori-target}"
(cd "$root" && cargo build --release -q -p mamori-collector --bin mamori-collector --example load)
collector="$CARGO_TARGET_DIR/release/mamori-collector"
load="$CARGO_TARGET_DIR/release/examples/load"

"$load" prepare --dir "$work" --agents "$agents" --learn-seconds "$learn"
RUST_LOG=warn "$collector" serve --config "$work/collector.toml" > "$work/collector.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -sf http://127.0.0.1:19103/metrics > /dev/null && break
    sleep 0.1
done
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
c0=$(cpu_ticks $pid)
result=$("$load" run --dir "$work" --agents "$agents" --batches "$batches" \
    --batch-events "$batch_events" --learn-seconds "$learn")
c1=$(cpu_ticks $pid)
# Detection runs behind the acks: wait until its queue has drained (latency count stable).
prev=-1
for _ in $(seq 300); do
    n=$(curl -s http://127.0.0.1:19103/metrics | awk '/^mamori_alert_latency_seconds_count/ {print $2}')
    [ "$n" = "$prev" ] && break
    prev=$n
    sleep 1
done
c2=$(cpu_ticks $pid)
curl -s http://127.0.0.1:19103/metrics > "$work/metrics.txt"
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
kill -TERM $pid; wait $pid || true
hz=$(getconf CLK_TCK)
wall=$(echo "$result" | sed -E 's/.*"wall_seconds":([0-9.]+).*/\1/')
echo "$result"
awk -v hz="$hz" -v c0="$c0" -v c1="$c1" -v c2="$c2" -v wall="$wall" -v rss="$rss_kb" '
    /^mamori_alert_latency_seconds_bucket/ { match($0, /le="[^"]+"/); le = substr($0, RSTART+4, RLENGTH-5); b[le] = $2 }
    /^mamori_alert_latency_seconds_count/ { count = $2 }
    /^mamori_detection_batches_skipped_total/ { skipped = $2 }
    /^mamori_incidents_opened_total/ { incidents = $2 }
    /^mamori_batches_total\{outcome="stored"\}/ { stored = $2 }
    END {
        printf "collector CPU while loaded: %.0f%% of one core; until detection drained: %.1f s more CPU\n", 100*(c1-c0)/hz/wall, (c2-c1)/hz
        printf "collector peak RSS: %.1f MB\n", rss/1024
        printf "batches stored: %d, detection batches skipped: %d, incidents opened: %d\n", stored, skipped, incidents
        printf "alert latency observations: %d; within 0.1 s: %.1f%%, 0.25 s: %.1f%%, 0.5 s: %.1f%%, 0.75 s: %.1f%%, 1 s: %.1f%%\n", count, 100*b["0.1"]/count, 100*b["0.25"]/count, 100*b["0.5"]/count, 100*b["0.75"]/count, 100*b["1"]/count
    }' "$work/metrics.txt"
