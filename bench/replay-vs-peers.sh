#!/usr/bin/env bash
# Whole-process benchmark of `mamori-agent replay` against Suricata and a tshark field
# extraction on the same large capture, one core each (taskset), run side by side in one go.
#
# The capture: ControlThings' Plant1_ModbusTCP replicated N times (default 40) with distinct
# addresses (tcprewrite --pnat) and merged (mergecap): about 615k packets.
# Needs: tcprewrite (tcpreplay), mergecap and tshark (wireshark), suricata (bookworm-backports),
# GNU time. Usage: bench/replay-vs-peers.sh [copies]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
copies="${1:-40}"
src="$root/../shared/corpus/modbus/controlthings-ct-samples/Plant1_ModbusTCP/Plant1_ModbusTCP.pcap"
work="${BENCH_DIR:-/var/tmp/mamori-bench}"
mkdir -p "$work"
big="$work/plant1x$copies.pcap"
core="${BENCH_CORE:-1}"

if [ ! -f "$big" ]; then
    parts=()
    for i in $(seq 1 "$copies"); do
        tcprewrite --pnat="141.81.0.0/16:10.$i.0.0/16" --infile="$src" --outfile="$work/part$i.pcap"
        parts+=("$work/part$i.pcap")
    done
    mergecap -F pcap -w "$big" "${parts[@]}"
    rm -f "${parts[@]}"
fi
packets=$(capinfos -c -M "$big" | awk '/Number of packets/ {print $NF}')
echo "capture: $big ($packets packets, $(du -h "$big" | cut -f1))"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mamori-target}"
(cd "$root" && cargo build --release -q -p mamori-agent)
agent="$CARGO_TARGET_DIR/release/mamori-agent"

measure() { # name, command...
    local name=$1; shift
    local t="$work/$name.time"
    taskset -c "$core" /usr/bin/time -f '%e %M %U %S' -o "$t" "$@" > "$work/$name.out" 2> "$work/$name.err"
    read -r wall rss user sys < "$t"
    printf '%-9s wall %6.2f s  user+sys %6.2f s  %9.0f packets/s  peak RSS %7.1f MB\n' \
        "$name" "$wall" "$(echo "$user + $sys" | bc)" "$(echo "$packets / $wall" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
    echo "$wall" > "$work/$name.wall"
}

measure mamori "$agent" replay "$big"
rm -rf "$work/suricata" && mkdir -p "$work/suricata"
measure suricata suricata -c "$here/suricata.yaml" -k none --runmode single -S /dev/null -l "$work/suricata" -r "$big"
measure tshark tshark -r "$big" -Y mbtcp -T fields -e frame.time_epoch -e ip.src -e tcp.srcport -e ip.dst \
    -e tcp.dstport -e mbtcp.trans_id -e mbtcp.unit_id -e modbus.func_code -e modbus.reference_num \
    -e modbus.word_cnt -e modbus.regval_uint16 -e modbus.exception_code

echo "mamori events: $(grep -c '"type":"modbus"' "$work/mamori.out") modbus, $(grep -c '"type":"flow"' "$work/mamori.out") flow"
echo "suricata eve: $(grep -c '"event_type":"modbus"' "$work/suricata/eve.json") modbus"
echo "tshark lines: $(wc -l < "$work/tshark.out")"
m=$(cat "$work/mamori.wall"); s=$(cat "$work/suricata.wall"); k=$(cat "$work/tshark.wall")
printf 'speed-up: %.1fx Suricata, %.1fx tshark\n' "$(echo "$s / $m" | bc -l)" "$(echo "$k / $m" | bc -l)"
