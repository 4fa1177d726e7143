//! The pure Modbus parser: framing and request/response decoding of arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mamori_agent::proto::modbus::parser::{
    Framing, parse_modbus_adu, parse_modbus_request, parse_modbus_response,
};

fuzz_target!(|data: &[u8]| {
    // The whole input as a TCP payload on port 502, framed ADU by ADU.
    let mut rest = data;
    while let Framing::Adu(adu, n) = parse_modbus_adu(rest, 1024) {
        let _ = parse_modbus_request(adu.pdu);
        let _ = parse_modbus_response(adu.pdu);
        rest = &rest[n..];
    }
    // And as bare PDUs.
    let _ = parse_modbus_request(data);
    let _ = parse_modbus_response(data);
});
