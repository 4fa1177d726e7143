//! Modbus/TCP transactions on one client's connection to one device, with the request and
//! response PDUs as the agent decodes them (lengths, byte counts, values, identification
//! objects). Shared by the benign traffic and the incidents.

use std::net::IpAddr;

use mamori_models::{DeviceIdObject, Event, ModbusPdu, Values};

use super::layout::{Identity, Table};
use crate::events::{Transaction, ts};

/// A client's TCP connection to a device's port 502: its ephemeral port and transaction ids.
#[derive(Clone, Debug)]
pub(crate) struct Connection {
    pub client: IpAddr,
    pub port: u16,
    pub server: IpAddr,
    tid: u16,
    /// Requests sent and bytes each way (MBAP header included), for the flow record.
    pub requests: u64,
    pub orig_bytes: u64,
    pub resp_bytes: u64,
}

/// What came back. Built and consumed at once, one per transaction: boxing the response would
/// cost an allocation each time to save stack space nobody keeps.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Reply {
    /// A normal response at this time (µs).
    At(i64, ModbusPdu),
    /// An exception response of this code at this time.
    Exception(i64, u8),
    Unanswered,
}

/// The MBAP header before the unit id: transaction, protocol and length fields.
const MBAP_BYTES: u64 = 6;

impl Connection {
    pub fn new(client: IpAddr, port: u16, server: IpAddr) -> Self {
        Connection {
            client,
            port,
            server,
            tid: 0,
            requests: 0,
            orig_bytes: 0,
            resp_bytes: 0,
        }
    }

    /// One transaction: `request` is the request PDU (its `ts` is when it was sent).
    pub fn transact(&mut self, unit: u8, func: u8, request: ModbusPdu, reply: Reply) -> Event {
        self.tid = self.tid.wrapping_add(1);
        self.requests += 1;
        self.orig_bytes += MBAP_BYTES + u64::from(request.len);
        let (response, exception) = match reply {
            Reply::At(t, pdu) => (Some(ModbusPdu { ts: ts(t), ..pdu }), None),
            Reply::Exception(t, code) => (
                Some(ModbusPdu {
                    ts: ts(t),
                    len: 3,
                    ..ModbusPdu::default()
                }),
                Some(code),
            ),
            Reply::Unanswered => (None, None),
        };
        if let Some(r) = &response {
            self.resp_bytes += MBAP_BYTES + u64::from(r.len);
        }
        Transaction {
            client: self.client,
            client_port: self.port,
            server: self.server,
            server_port: 502,
            tid: self.tid,
            unit,
            func,
            request,
            response,
            exception,
        }
        .into_event()
    }
}

/// A read request of `qty` points at `address`.
pub(crate) fn read_request(t: i64, address: u16, qty: u16) -> ModbusPdu {
    ModbusPdu {
        ts: ts(t),
        len: 6,
        address: Some(address),
        quantity: Some(qty),
        ..ModbusPdu::default()
    }
}

/// The response to a read of `table` carrying `values` (registers, or bits as 0/1).
pub(crate) fn read_response(table: Table, values: Vec<u16>) -> ModbusPdu {
    let (byte_count, values) = if table.is_bits() {
        (
            values.len().div_ceil(8),
            Values::Coils(values.into_iter().map(|v| v != 0).collect()),
        )
    } else {
        (values.len() * 2, Values::Registers(values))
    };
    let byte_count = u8::try_from(byte_count).unwrap_or(u8::MAX);
    ModbusPdu {
        len: 3 + u16::from(byte_count),
        byte_count: Some(byte_count),
        values: Some(values),
        ..ModbusPdu::default()
    }
}

/// Write Single Register (6): the request, which the response echoes.
pub(crate) fn write_register(t: i64, address: u16, value: u16) -> ModbusPdu {
    ModbusPdu {
        ts: ts(t),
        len: 6,
        address: Some(address),
        values: Some(Values::Registers(vec![value])),
        ..ModbusPdu::default()
    }
}

/// Read Device Identification (43/14), basic objects from object 0.
pub(crate) fn identity_request(t: i64) -> ModbusPdu {
    ModbusPdu {
        ts: ts(t),
        len: 5,
        mei_type: Some(14),
        read_device_id_code: Some(1),
        object_id: Some(0),
        ..ModbusPdu::default()
    }
}

pub(crate) fn identity_response(id: &Identity) -> ModbusPdu {
    let objects = vec![
        DeviceIdObject {
            id: 0,
            name: Some("VendorName".into()),
            value: id.vendor.clone(),
        },
        DeviceIdObject {
            id: 1,
            name: Some("ProductCode".into()),
            value: id.product_code.clone(),
        },
        DeviceIdObject {
            id: 2,
            name: Some("MajorMinorRevision".into()),
            value: id.revision.clone(),
        },
    ];
    // Function, MEI type, code, conformity, more, next id, count, then (id, len, value)s.
    let body: usize = objects.iter().map(|o| 2 + o.value.len()).sum();
    ModbusPdu {
        len: u16::try_from(8 + body).unwrap_or(u16::MAX),
        mei_type: Some(14),
        read_device_id_code: Some(1),
        conformity_level: Some(0x81),
        more_follows: Some(false),
        next_object_id: Some(0),
        objects: Some(objects),
        ..ModbusPdu::default()
    }
}

/// A request of a function the device may not support, with no fields decoded.
pub(crate) fn bare_request(t: i64, len: u16) -> ModbusPdu {
    ModbusPdu {
        ts: ts(t),
        len,
        ..ModbusPdu::default()
    }
}
