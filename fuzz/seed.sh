#!/usr/bin/env bash
# Seeds the fuzz corpora from the shared captures: the TCP payloads seen on port 502 (needs
# tshark), and Zeek's Modbus fuzzer corpus.
set -euo pipefail
cd "$(dirname "$0")"
shared=../../shared/corpus/modbus
mkdir -p corpus/modbus_pdu corpus/modbus_stream corpus/tcp_reassembly corpus/pipeline_frames
find "$shared" -name '*.pcap' | while read -r f; do
    tshark -r "$f" -Y 'tcp.port==502 && tcp.len>0' -T fields -e tcp.payload 2>/dev/null | head -300
done | sort -u | while read -r h; do
    printf '%s' "$h" | xxd -r -p > "corpus/modbus_pdu/$(printf '%s' "$h" | md5sum | cut -c1-16)"
done
tmp=$(mktemp -d)
unzip -q -o "$shared/zeek/fuzz-corpus/modbus-corpus.zip" -d "$tmp"
find "$tmp" -type f -exec cp {} corpus/modbus_pdu/ \;
cp corpus/modbus_pdu/* corpus/modbus_stream/
rm -rf "$tmp"
echo "seeded $(ls corpus/modbus_pdu | wc -l) inputs"
