#!/usr/bin/env bash
# Footprint of `mamori-agent capture` at a steady packet rate, side by side with Suricata
# capturing the same interface (Modbus only). Root only: it creates a veth pair and replays
# Plant1 onto it with tcpreplay at --pps (default 10,000) for --seconds (default 60).
# Needs: tcpreplay, suricata (bookworm-backports). Usage: bench/live-footprint.sh [pps] [seconds]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
pps="${1:-10000}"
seconds="${2:-60}"
src="$root/../shared/corpus/modbus/controlthings-ct-samples/Plant1_ModbusTCP/Plant1_ModbusTCP.pcap"
work="${BENCH_DIR:-/var/tmp/mamori-bench}/live"
mkdir -p "$work"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mamori-target}"
(cd "$root" && cargo build --release -q -p mamori-agent)
agent="$CARGO_TARGET_DIR/release/mamori-agent"

ip link del mfb0 2>/dev/null || true
ip link add mfb0 type veth peer name mfb1
ip link set mfb0 up
ip link set mfb1 up
trap 'ip link del mfb0 2>/dev/null || true' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

"$agent" capture -i mfb1 --stats -o /dev/null 2> "$work/agent.stats" &
agent_pid=$!
rm -rf "$work/suricata" && mkdir -p "$work/suricata"
suricata -c "$here/suricata.yaml" -k none -S /dev/null -l "$work/suricata" --af-packet=mfb1 > "$work/suricata.out" 2>&1 &
suri_pid=$!
sleep 8 # both ready (Suricata takes a few seconds to start)

a0=$(cpu_ticks $agent_pid); s0=$(cpu_ticks $suri_pid); t0=$(date +%s.%N)
loops=$(( (pps * seconds + 15386) / 15387 ))
tcpreplay --pps="$pps" --loop="$loops" --duration="$seconds" -i mfb0 "$src" > "$work/tcpreplay.out" 2>&1 || true
a1=$(cpu_ticks $agent_pid); s1=$(cpu_ticks $suri_pid); t1=$(date +%s.%N)
hz=$(getconf CLK_TCK)
agent_rss=$(rss_kb $agent_pid); suri_rss=$(rss_kb $suri_pid)
kill -TERM $agent_pid $suri_pid
wait $agent_pid || true
wait $suri_pid || true
elapsed=$(echo "$t1 - $t0" | bc -l)
printf 'replayed: %s\n' "$(grep -E 'Actual|Rated' "$work/tcpreplay.out" | head -2 | tr '\n' ' ')"
printf '%-9s CPU %5.2f %% of one core   peak RSS %6.1f MB\n' mamori "$(echo "($a1 - $a0) / $hz / $elapsed * 100" | bc -l)" "$(echo "$agent_rss / 1024" | bc -l)"
printf '%-9s CPU %5.2f %% of one core   peak RSS %6.1f MB\n' suricata "$(echo "($s1 - $s0) / $hz / $elapsed * 100" | bc -l)" "$(echo "$suri_rss / 1024" | bc -l)"
python3 -c "import json,sys; c=json.load(open('$work/agent.stats')); print('mamori counted', c['packets'], 'packets,', c['events_modbus'], 'modbus events, kernel drops', c['kernel_drops'], ', queue drops', c['capture_queue_drops'])"
