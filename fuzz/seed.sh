#!/usr/bin/env bash
# Seeds the fuzz corpora from the shared captures: the TCP payloads seen on port 502 (needs
# tshark), Zeek's Modbus fuzzer corpus, and the small capture files themselves (behind the
# two bytes capture_file reads first: read length, buffer size).
set -euo pipefail
cd "$(dirname "$0")"
shared=../../shared/corpus/modbus
mkdir -p corpus/modbus_pdu corpus/modbus_stream corpus/tcp_reassembly corpus/pipeline_frames \
    corpus/capture_file
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
find "$shared" \( -name '*.pcap' -o -name '*.pcapng' \) -size -64k | while read -r f; do
    { printf '\x07\x03'; cat "$f"; } > "corpus/capture_file/$(md5sum < "$f" | cut -c1-16)"
done
echo "seeded $(ls corpus/modbus_pdu | wc -l) inputs, $(ls corpus/capture_file | wc -l) capture files"
