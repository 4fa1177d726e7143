//! The pure Modbus/TCP parser: MBAP framing and every public function code of the Modbus
//! Application Protocol Specification V1.1b3, as requests, responses and exception responses.
//!
//! Malformed content is data, not an error: a PDU always decodes to a [`DecodedPdu`] holding
//! whatever fields could be read, plus anomaly flags. Framing has three outcomes: need more
//! bytes, an ADU, or "this is not Modbus".

use std::borrow::Cow;

use nom::IResult;
use nom::Parser;

use mamori_models::{Anomaly, DeviceIdObject, FileRecord, ModbusPdu, Values};

use super::names;

/// MBAP header: transaction id, protocol id, length, unit id.
pub const MBAP_HEADER_LEN: usize = 7;
/// The largest PDU the specification allows (256-byte serial ADU minus address and CRC).
pub const MAX_PDU_LEN: usize = 253;
/// Largest MBAP length field the specification allows: the unit id plus the largest PDU.
pub const MAX_MBAP_LENGTH: u16 = MAX_PDU_LEN as u16 + 1;
/// Largest length field accepted on a connection not yet known to carry Modbus. Vendor
/// extensions (Schneider UMAS) run a few bytes over the specification.
pub const MAX_PROBE_MBAP_LENGTH: u16 = 260;
/// Largest length field accepted on an established Modbus connection; longer is garbage.
pub const MAX_LENIENT_MBAP_LENGTH: u16 = 1024;
/// Smallest MBAP length field: unit id plus a function code.
pub const MIN_MBAP_LENGTH: u16 = 2;

/// Quantity limits from the specification.
pub const MAX_READ_BITS: u16 = 2000;
pub const MAX_READ_REGISTERS: u16 = 125;
pub const MAX_WRITE_BITS: u16 = 1968;
pub const MAX_WRITE_REGISTERS: u16 = 123;
pub const MAX_RW_WRITE_REGISTERS: u16 = 121;
pub const MAX_FIFO_COUNT: u16 = 31;

/// The MBAP header of a Modbus/TCP ADU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MbapHeader {
    pub transaction_id: u16,
    pub protocol_id: u16,
    /// Bytes that follow the length field: unit id and PDU.
    pub length: u16,
    pub unit_id: u8,
}

/// Parses the 7-byte MBAP header.
pub fn parse_modbus_mbap(i: &[u8]) -> IResult<&[u8], MbapHeader> {
    let (i, (transaction_id, protocol_id, length, unit_id)) =
        (be_u16, be_u16, be_u16, be_u8).parse(i)?;
    Ok((
        i,
        MbapHeader {
            transaction_id,
            protocol_id,
            length,
            unit_id,
        },
    ))
}

/// One framed ADU, borrowed from the stream buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adu<'a> {
    pub header: MbapHeader,
    /// Function code and data.
    pub pdu: &'a [u8],
}

/// What [`parse_modbus_adu`] found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing<'a> {
    /// Not enough bytes yet for a whole ADU.
    NeedMore,
    /// A whole ADU, and how many bytes it took.
    Adu(Adu<'a>, usize),
    /// The header is not a plausible MBAP header.
    NotModbus,
}

/// Whether an MBAP header is plausible: protocol id 0 and a length of at least a unit id and a
/// function code and at most `max_length`. The function code is content, not framing: a
/// scanner's code 0 or 0x80 is still a Modbus message, and judging the flow by it would let
/// the scan blind the decoder.
pub fn probe_modbus(header: &MbapHeader, max_length: u16) -> bool {
    header.protocol_id == 0 && (MIN_MBAP_LENGTH..=max_length).contains(&header.length)
}

/// Whether `bytes`, fewer than a header's worth, can still begin a plausible MBAP header
/// (protocol id 0 and a length in range, as far as those bytes are present).
pub fn header_prefix_plausible(bytes: &[u8], max_length: u16) -> bool {
    let pid_ok = bytes.iter().skip(2).take(2).all(|&b| b == 0);
    let len_ok = match bytes.get(4..6) {
        Some(&[hi, lo]) => (MIN_MBAP_LENGTH..=max_length).contains(&u16::from_be_bytes([hi, lo])),
        _ => bytes
            .get(4)
            .is_none_or(|&hi| u16::from(hi) << 8 <= max_length),
    };
    pid_ok && len_ok
}

/// Frames one ADU at the start of `input`, accepting length fields up to `max_length`.
pub fn parse_modbus_adu(input: &[u8], max_length: u16) -> Framing<'_> {
    let Ok((rest, header)) = parse_modbus_mbap(input) else {
        return Framing::NeedMore;
    };
    if !probe_modbus(&header, max_length) {
        return Framing::NotModbus;
    }
    let pdu_len = usize::from(header.length) - 1;
    match rest.get(..pdu_len) {
        Some(pdu) => Framing::Adu(Adu { header, pdu }, MBAP_HEADER_LEN + pdu_len),
        None => Framing::NeedMore,
    }
}

/// A decoded request or response PDU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodedPdu {
    /// The function code as on the wire (with the exception bit, if set).
    pub raw_function: u8,
    /// The exception code, when this is an exception response.
    pub exception_code: Option<u8>,
    /// The decoded fields (`ts` and `len` are left for the caller to fill).
    pub fields: ModbusPdu,
    pub anomalies: Vec<Anomaly>,
}

impl DecodedPdu {
    /// The function code without the exception bit.
    pub fn function(&self) -> u8 {
        self.raw_function & 0x7F
    }

    pub fn is_exception(&self) -> bool {
        self.raw_function & 0x80 != 0
    }

    fn flag(&mut self, a: Anomaly) {
        if !self.anomalies.contains(&a) {
            self.anomalies.push(a);
        }
    }
}

type PResult<'a> = IResult<&'a [u8], ()>;

/// Decodes a request PDU (function code and data).
pub fn parse_modbus_request(pdu: &[u8]) -> DecodedPdu {
    parse_pdu(pdu, true)
}

/// Decodes a response PDU (function code and data), exception responses included.
pub fn parse_modbus_response(pdu: &[u8]) -> DecodedPdu {
    parse_pdu(pdu, false)
}

fn parse_pdu(pdu: &[u8], request: bool) -> DecodedPdu {
    let mut out = DecodedPdu::default();
    let Some((&raw, data)) = pdu.split_first() else {
        out.flag(Anomaly::LengthMismatch);
        return out;
    };
    out.raw_function = raw;
    let func = raw & 0x7F;
    if !names::is_public_function(func) && !names::is_user_defined_function(func) && func != 0x5A {
        out.flag(Anomaly::UnknownFunction);
    }
    if raw & 0x80 != 0 {
        if request {
            // A request never carries the exception bit; keep the bytes.
            out.flag(Anomaly::InvalidValue);
            set_hex(&mut out.fields, data);
            return out;
        }
        match data {
            [code] => {
                out.exception_code = Some(*code);
                if names::exception_name(*code).is_none() {
                    out.flag(Anomaly::UnknownExceptionCode);
                }
            }
            [code, ..] => {
                out.exception_code = Some(*code);
                out.flag(Anomaly::LengthMismatch);
            }
            [] => out.flag(Anomaly::LengthMismatch),
        }
        return out;
    }
    let mut f = ModbusPdu::default();
    let mut flags: Vec<Anomaly> = Vec::new();
    let result = if request {
        parse_request_data(func, data, &mut f, &mut flags)
    } else {
        parse_response_data(func, data, &mut f, &mut flags)
    };
    match result {
        Ok((&[], ())) => {}
        Ok(_) | Err(_) => flags.push(Anomaly::LengthMismatch),
    }
    out.fields = f;
    for a in flags {
        out.flag(a);
    }
    out
}

fn set_hex(f: &mut ModbusPdu, data: &[u8]) {
    if !data.is_empty() {
        f.data_hex = Some(hex(data));
    }
}

/// Lower-case hex of a byte string.
pub fn hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(data.len() * 2);
    for &b in data {
        for nibble in [b >> 4, b & 0x0F] {
            s.push(char::from(
                DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
    s
}

fn check_quantity(q: u16, max: u16, flags: &mut Vec<Anomaly>) {
    if q == 0 || q > max {
        flags.push(Anomaly::QuantityOutOfRange);
    }
}

/// Reads `byte_count` bytes of packed bits, keeping at most `quantity` of them when known.
fn bits(bytes: &[u8], quantity: Option<u16>) -> Vec<bool> {
    let total = bytes.len() * 8;
    let keep = quantity.map_or(total, |q| usize::from(q).min(total));
    (0..keep)
        .map(|i| bytes.get(i / 8).is_some_and(|b| b >> (i % 8) & 1 == 1))
        .collect()
}

fn registers(bytes: &[u8]) -> Vec<u16> {
    bytes
        .as_chunks::<2>()
        .0
        .iter()
        .map(|c| u16::from_be_bytes(*c))
        .collect()
}

/// Takes `n` bytes, or everything left when fewer remain (flagging it): a truncated value list
/// still says something.
fn take_up_to<'a>(i: &'a [u8], n: usize, flags: &mut Vec<Anomaly>) -> (&'a [u8], &'a [u8]) {
    if i.len() < n {
        flags.push(Anomaly::ByteCountMismatch);
        (rest_empty(i), i)
    } else {
        let (head, tail) = i.split_at(n);
        (tail, head)
    }
}

fn parse_request_data<'a>(
    func: u8,
    i: &'a [u8],
    f: &mut ModbusPdu,
    flags: &mut Vec<Anomaly>,
) -> PResult<'a> {
    match func {
        1..=4 => {
            let (i, (address, quantity)) = (be_u16, be_u16).parse(i)?;
            f.address = Some(address);
            f.quantity = Some(quantity);
            check_quantity(
                quantity,
                if func <= 2 {
                    MAX_READ_BITS
                } else {
                    MAX_READ_REGISTERS
                },
                flags,
            );
            Ok((i, ()))
        }
        5 | 6 => parse_single_write(func, i, f, flags),
        7 | 11 | 12 | 17 => Ok((i, ())),
        8 => parse_diagnostics(i, f),
        15 => {
            let (i, (address, quantity, byte_count)) = (be_u16, be_u16, be_u8).parse(i)?;
            f.address = Some(address);
            f.quantity = Some(quantity);
            f.byte_count = Some(byte_count);
            check_quantity(quantity, MAX_WRITE_BITS, flags);
            if usize::from(byte_count) != usize::from(quantity).div_ceil(8) {
                flags.push(Anomaly::ByteCountMismatch);
            }
            let (i, data) = take_up_to(i, usize::from(byte_count), flags);
            f.values = Some(Values::Coils(bits(data, Some(quantity))));
            Ok((i, ()))
        }
        16 => {
            let (i, (address, quantity, byte_count)) = (be_u16, be_u16, be_u8).parse(i)?;
            f.address = Some(address);
            f.quantity = Some(quantity);
            f.byte_count = Some(byte_count);
            check_quantity(quantity, MAX_WRITE_REGISTERS, flags);
            if usize::from(byte_count) != usize::from(quantity) * 2 {
                flags.push(Anomaly::ByteCountMismatch);
            }
            let (i, data) = take_up_to(i, usize::from(byte_count), flags);
            f.values = Some(Values::Registers(registers(data)));
            Ok((i, ()))
        }
        20 => {
            let (i, byte_count) = be_u8(i)?;
            f.byte_count = Some(byte_count);
            if !(0x07..=0xF5).contains(&byte_count) || byte_count % 7 != 0 {
                flags.push(Anomaly::ByteCountMismatch);
            }
            let (i, data) = take_up_to(i, usize::from(byte_count), flags);
            let mut records = Vec::new();
            let mut rest = data;
            while let Ok((r, (reference_type, file_number, record_number, record_length))) =
                (be_u8, be_u16, be_u16, be_u16).parse(rest)
            {
                check_reference_type(reference_type, flags);
                records.push(FileRecord {
                    reference_type,
                    file_number: Some(file_number),
                    record_number: Some(record_number),
                    record_length: Some(record_length),
                    values: None,
                });
                rest = r;
            }
            if !rest.is_empty() {
                flags.push(Anomaly::LengthMismatch);
            }
            f.file_records = Some(records);
            Ok((i, ()))
        }
        21 => {
            let (i, byte_count) = be_u8(i)?;
            f.byte_count = Some(byte_count);
            if !(0x09..=0xFB).contains(&byte_count) {
                flags.push(Anomaly::ByteCountMismatch);
            }
            let (i, data) = take_up_to(i, usize::from(byte_count), flags);
            f.file_records = Some(parse_write_file_records(data, flags));
            Ok((i, ()))
        }
        22 => parse_mask_write(i, f),
        23 => {
            let (i, (read_address, read_quantity, write_address, write_quantity, byte_count)) =
                (be_u16, be_u16, be_u16, be_u16, be_u8).parse(i)?;
            f.read_address = Some(read_address);
            f.read_quantity = Some(read_quantity);
            f.write_address = Some(write_address);
            f.write_quantity = Some(write_quantity);
            f.byte_count = Some(byte_count);
            check_quantity(read_quantity, MAX_READ_REGISTERS, flags);
            check_quantity(write_quantity, MAX_RW_WRITE_REGISTERS, flags);
            if usize::from(byte_count) != usize::from(write_quantity) * 2 {
                flags.push(Anomaly::ByteCountMismatch);
            }
            let (i, data) = take_up_to(i, usize::from(byte_count), flags);
            f.write_values = Some(registers(data));
            Ok((i, ()))
        }
        24 => {
            let (i, address) = be_u16(i)?;
            f.address = Some(address);
            Ok((i, ()))
        }
        43 => {
            let (i, mei_type) = be_u8(i)?;
            f.mei_type = Some(mei_type);
            if mei_type == 14 {
                let (i, (code, object_id)) = (be_u8, be_u8).parse(i)?;
                f.read_device_id_code = Some(code);
                f.object_id = Some(object_id);
                if !(1..=4).contains(&code) {
                    flags.push(Anomaly::InvalidValue);
                }
                Ok((i, ()))
            } else {
                if mei_type != 13 {
                    flags.push(Anomaly::InvalidValue);
                }
                set_hex(f, i);
                Ok((rest_empty(i), ()))
            }
        }
        _ => parse_opaque(func, i, f),
    }
}

fn parse_response_data<'a>(
    func: u8,
    i: &'a [u8],
    f: &mut ModbusPdu,
    flags: &mut Vec<Anomaly>,
) -> PResult<'a> {
    match func {
        1 | 2 => {
            let (i, byte_count) = be_u8(i)?;
            f.byte_count = Some(byte_count);
            let (i, data) = take_up_to(i, usize::from(byte_count), flags);
            f.values = Some(Values::Coils(bits(data, None)));
            Ok((i, ()))
        }
        3 | 4 | 23 => {
            let (i, byte_count) = be_u8(i)?;
            f.byte_count = Some(byte_count);
            if byte_count % 2 != 0 {
                flags.push(Anomaly::ByteCountMismatch);
            }
            let (i, data) = take_up_to(i, usize::from(byte_count), flags);
            f.values = Some(Values::Registers(registers(data)));
            Ok((i, ()))
        }
        5 | 6 => parse_single_write(func, i, f, flags),
        7 => {
            let (i, status) = be_u8(i)?;
            f.status = Some(u16::from(status));
            Ok((i, ()))
        }
        8 => parse_diagnostics(i, f),
        11 => {
            let (i, (status, event_count)) = (be_u16, be_u16).parse(i)?;
            f.status = Some(status);
            f.event_count = Some(event_count);
            Ok((i, ()))
        }
        12 => {
            let (i, byte_count) = be_u8(i)?;
            f.byte_count = Some(byte_count);
            let (i, data) = take_up_to(i, usize::from(byte_count), flags);
            match (be_u16, be_u16, be_u16).parse(data) {
                Ok((events, (status, event_count, message_count))) => {
                    f.status = Some(status);
                    f.event_count = Some(event_count);
                    f.message_count = Some(message_count);
                    set_hex(f, events);
                }
                Err(_) => flags.push(Anomaly::ByteCountMismatch),
            }
            Ok((i, ()))
        }
        15 | 16 => {
            let (i, (address, quantity)) = (be_u16, be_u16).parse(i)?;
            f.address = Some(address);
            f.quantity = Some(quantity);
            check_quantity(
                quantity,
                if func == 15 {
                    MAX_WRITE_BITS
                } else {
                    MAX_WRITE_REGISTERS
                },
                flags,
            );
            Ok((i, ()))
        }
        17 => {
            let (i, byte_count) = be_u8(i)?;
            f.byte_count = Some(byte_count);
            let (i, data) = take_up_to(i, usize::from(byte_count), flags);
            // Server id (device specific length), run indicator status (0x00 off, 0xFF on),
            // then optional additional data (spec 6.13). The id length is not on the wire:
            // take the common one-byte id (libmodbus, the specification's example) when the
            // byte after it is a status, else the last byte (devices with no additional data).
            f.run_indicator = match (data.get(1), data.last()) {
                (Some(0xFF), _) if data.len() > 2 => Some(true),
                (Some(0x00), _) if data.len() > 2 => Some(false),
                (_, Some(0xFF)) if data.len() >= 2 => Some(true),
                (_, Some(0x00)) if data.len() >= 2 => Some(false),
                _ => None,
            };
            set_hex(f, data);
            Ok((i, ()))
        }
        20 => {
            let (i, byte_count) = be_u8(i)?;
            f.byte_count = Some(byte_count);
            let (i, data) = take_up_to(i, usize::from(byte_count), flags);
            let mut records = Vec::new();
            let mut rest = data;
            while let Ok((r, (len, reference_type))) = (be_u8, be_u8).parse(rest) {
                check_reference_type(reference_type, flags);
                let (r, regs) = take_up_to(r, usize::from(len.saturating_sub(1)), flags);
                if len == 0 || len % 2 == 0 {
                    flags.push(Anomaly::ByteCountMismatch);
                }
                records.push(FileRecord {
                    reference_type,
                    file_number: None,
                    record_number: None,
                    record_length: None,
                    values: Some(registers(regs)),
                });
                rest = r;
            }
            if !rest.is_empty() {
                flags.push(Anomaly::LengthMismatch);
            }
            f.file_records = Some(records);
            Ok((i, ()))
        }
        21 => {
            let (i, byte_count) = be_u8(i)?;
            f.byte_count = Some(byte_count);
            let (i, data) = take_up_to(i, usize::from(byte_count), flags);
            f.file_records = Some(parse_write_file_records(data, flags));
            Ok((i, ()))
        }
        22 => parse_mask_write(i, f),
        24 => {
            let (i, (byte_count, fifo_count)) = (be_u16, be_u16).parse(i)?;
            f.quantity = Some(fifo_count);
            if fifo_count > MAX_FIFO_COUNT {
                flags.push(Anomaly::QuantityOutOfRange);
            }
            if usize::from(byte_count) != 2 + usize::from(fifo_count) * 2 {
                flags.push(Anomaly::ByteCountMismatch);
            }
            let (i, data) = take_up_to(i, usize::from(fifo_count) * 2, flags);
            f.values = Some(Values::Registers(registers(data)));
            Ok((i, ()))
        }
        43 => {
            let (i, mei_type) = be_u8(i)?;
            f.mei_type = Some(mei_type);
            if mei_type != 14 {
                if mei_type != 13 {
                    flags.push(Anomaly::InvalidValue);
                }
                set_hex(f, i);
                return Ok((rest_empty(i), ()));
            }
            let (i, (code, conformity, more, next, count)) =
                (be_u8, be_u8, be_u8, be_u8, be_u8).parse(i)?;
            f.read_device_id_code = Some(code);
            f.conformity_level = Some(conformity);
            f.more_follows = match more {
                0xFF => Some(true),
                0x00 => Some(false),
                _ => {
                    flags.push(Anomaly::InvalidValue);
                    None
                }
            };
            f.next_object_id = Some(next);
            let mut objects = Vec::with_capacity(usize::from(count).min(64));
            let mut rest = i;
            for _ in 0..count {
                let Ok((r, (id, len))) = (be_u8, be_u8).parse(rest) else {
                    flags.push(Anomaly::LengthMismatch);
                    break;
                };
                let (r, value) = take_up_to(r, usize::from(len), flags);
                objects.push(DeviceIdObject {
                    id,
                    name: names::device_id_object_name(id).map(Cow::Borrowed),
                    value: String::from_utf8_lossy(value).into_owned(),
                });
                rest = r;
            }
            f.objects = Some(objects);
            Ok((rest, ()))
        }
        _ => parse_opaque(func, i, f),
    }
}

fn parse_single_write<'a>(
    func: u8,
    i: &'a [u8],
    f: &mut ModbusPdu,
    flags: &mut Vec<Anomaly>,
) -> PResult<'a> {
    let (i, (address, value)) = (be_u16, be_u16).parse(i)?;
    f.address = Some(address);
    f.values = Some(if func == 5 {
        if value != 0xFF00 && value != 0x0000 {
            flags.push(Anomaly::InvalidValue);
        }
        Values::Coils(vec![value == 0xFF00])
    } else {
        Values::Registers(vec![value])
    });
    Ok((i, ()))
}

fn parse_diagnostics<'a>(i: &'a [u8], f: &mut ModbusPdu) -> PResult<'a> {
    let (i, sub) = be_u16(i)?;
    f.sub_function = Some(sub);
    f.sub_function_name = names::diagnostics_sub_function_name(sub).map(Cow::Borrowed);
    set_hex(f, i);
    Ok((rest_empty(i), ()))
}

fn parse_mask_write<'a>(i: &'a [u8], f: &mut ModbusPdu) -> PResult<'a> {
    let (i, (address, and_mask, or_mask)) = (be_u16, be_u16, be_u16).parse(i)?;
    f.address = Some(address);
    f.and_mask = Some(and_mask);
    f.or_mask = Some(or_mask);
    Ok((i, ()))
}

/// Unknown, user-defined and vendor functions: raw data kept; for Schneider UMAS (90) the
/// sub-function too (the byte after the session/pairing byte).
fn parse_opaque<'a>(func: u8, i: &'a [u8], f: &mut ModbusPdu) -> PResult<'a> {
    if func == 0x5A {
        f.umas_function = i.get(1).copied();
    }
    set_hex(f, i);
    Ok((rest_empty(i), ()))
}

fn check_reference_type(reference_type: u8, flags: &mut Vec<Anomaly>) {
    if reference_type != 6 {
        flags.push(Anomaly::InvalidValue);
    }
}

fn parse_write_file_records(data: &[u8], flags: &mut Vec<Anomaly>) -> Vec<FileRecord> {
    let mut records = Vec::new();
    let mut rest = data;
    while let Ok((r, (reference_type, file_number, record_number, record_length))) =
        (be_u8, be_u16, be_u16, be_u16).parse(rest)
    {
        check_reference_type(reference_type, flags);
        let (r, regs) = take_up_to(r, usize::from(record_length) * 2, flags);
        records.push(FileRecord {
            reference_type,
            file_number: Some(file_number),
            record_number: Some(record_number),
            record_length: Some(record_length),
            values: Some(registers(regs)),
        });
        rest = r;
    }
    if !rest.is_empty() {
        flags.push(Anomaly::LengthMismatch);
    }
    records
}

/// The empty tail of a slice (what a parser returns after taking everything).
fn rest_empty(i: &[u8]) -> &[u8] {
    i.get(i.len()..).unwrap_or_default()
}

/// A big-endian byte, with the error type pinned (nom's parsers are generic over it).
fn be_u8(i: &[u8]) -> IResult<&[u8], u8> {
    nom::number::complete::u8(i)
}

/// A big-endian 16-bit word.
fn be_u16(i: &[u8]) -> IResult<&[u8], u16> {
    nom::number::complete::be_u16(i)
}
