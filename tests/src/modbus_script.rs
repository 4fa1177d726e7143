//! The golden Modbus session: a script of requests covering every function code the agent
//! decodes (each with a normal and an exception response), run by a `tokio-modbus` client
//! against the [`crate::modbus_plant`] through the [`crate::recorder`] proxy, and the truth
//! about each transaction as the client saw it: what it sent, what it got back.
//!
//! The truth is written from the client's side, never from the agent's parser: typed
//! `tokio-modbus` requests and responses map field by field onto the event schema, and the
//! functions `tokio-modbus` leaves raw are read here from the bytes the client received, with
//! the layout the specification gives.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mamori_models::{
    Anomaly, DeviceIdObject, FileRecord, ModbusEvent, ModbusPdu, Timestamp, Values,
};
use tokio_modbus::prelude::{Client, ReadCode, Request, Response, Slave, SlaveContext, tcp};
use tokio_modbus::{Error as ModbusError, ExceptionResponse, ProtocolError};

use crate::modbus_plant::{
    FC_READ_TAG, FIFO_ADDRESS, OVERFULL_FIFO_ADDRESS, UNIT_BUSY, UNIT_FAILED, UNIT_NO_ANSWER,
    UNIT_NO_PATH, UNIT_OK, serve_plant,
};
use crate::pcapgen::{Message, Side};
use crate::recorder::{Recording, record_proxy};

/// One request of the script, in the client's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    ReadCoils(u16, u16),
    ReadDiscreteInputs(u16, u16),
    ReadHoldingRegisters(u16, u16),
    ReadInputRegisters(u16, u16),
    WriteSingleCoil(u16, bool),
    WriteSingleRegister(u16, u16),
    ReadExceptionStatus,
    /// Sub-function and the data after it.
    Diagnostics(u16, Vec<u8>),
    GetCommEventCounter,
    GetCommEventLog,
    WriteMultipleCoils(u16, Vec<bool>),
    WriteMultipleRegisters(u16, Vec<u16>),
    ReportServerId,
    /// Sub-requests: file number, record number, record length.
    ReadFileRecord(Vec<(u16, u16, u16)>),
    /// Sub-requests: file number, record number, values.
    WriteFileRecord(Vec<(u16, u16, Vec<u16>)>),
    MaskWriteRegister(u16, u16, u16),
    /// Read address, read quantity, write address, values.
    ReadWriteMultipleRegisters(u16, u16, u16, Vec<u16>),
    ReadFifoQueue(u16),
    ReadDeviceIdentification(ReadCode, u8),
    /// Any other function code with its data bytes.
    Custom(u8, Vec<u8>),
}

impl Op {
    /// The function code.
    pub fn function(&self) -> u8 {
        match self {
            Op::ReadCoils(..) => 1,
            Op::ReadDiscreteInputs(..) => 2,
            Op::ReadHoldingRegisters(..) => 3,
            Op::ReadInputRegisters(..) => 4,
            Op::WriteSingleCoil(..) => 5,
            Op::WriteSingleRegister(..) => 6,
            Op::ReadExceptionStatus => 7,
            Op::Diagnostics(..) => 8,
            Op::GetCommEventCounter => 11,
            Op::GetCommEventLog => 12,
            Op::WriteMultipleCoils(..) => 15,
            Op::WriteMultipleRegisters(..) => 16,
            Op::ReportServerId => 17,
            Op::ReadFileRecord(..) => 20,
            Op::WriteFileRecord(..) => 21,
            Op::MaskWriteRegister(..) => 22,
            Op::ReadWriteMultipleRegisters(..) => 23,
            Op::ReadFifoQueue(..) => 24,
            Op::ReadDeviceIdentification(..) => 43,
            Op::Custom(f, _) => *f,
        }
    }

    /// The `tokio-modbus` request: typed where the crate has a type, raw otherwise.
    pub fn request(&self) -> Request<'static> {
        let custom = |data: Vec<u8>| Request::Custom(self.function(), Cow::Owned(data));
        match self {
            Op::ReadCoils(a, q) => Request::ReadCoils(*a, *q),
            Op::ReadDiscreteInputs(a, q) => Request::ReadDiscreteInputs(*a, *q),
            Op::ReadHoldingRegisters(a, q) => Request::ReadHoldingRegisters(*a, *q),
            Op::ReadInputRegisters(a, q) => Request::ReadInputRegisters(*a, *q),
            Op::WriteSingleCoil(a, v) => Request::WriteSingleCoil(*a, *v),
            Op::WriteSingleRegister(a, v) => Request::WriteSingleRegister(*a, *v),
            Op::WriteMultipleCoils(a, v) => Request::WriteMultipleCoils(*a, Cow::Owned(v.clone())),
            Op::WriteMultipleRegisters(a, v) => {
                Request::WriteMultipleRegisters(*a, Cow::Owned(v.clone()))
            }
            Op::ReportServerId => Request::ReportServerId,
            Op::MaskWriteRegister(a, and, or) => Request::MaskWriteRegister(*a, *and, *or),
            Op::ReadWriteMultipleRegisters(ra, rq, wa, v) => {
                Request::ReadWriteMultipleRegisters(*ra, *rq, *wa, Cow::Owned(v.clone()))
            }
            Op::ReadDeviceIdentification(code, object) => {
                Request::ReadDeviceIdentification(*code, *object)
            }
            Op::ReadExceptionStatus | Op::GetCommEventCounter | Op::GetCommEventLog => {
                custom(Vec::new())
            }
            Op::Diagnostics(sub, data) => {
                let mut d = sub.to_be_bytes().to_vec();
                d.extend_from_slice(data);
                custom(d)
            }
            Op::ReadFileRecord(subs) => {
                let mut d = vec![(7 * subs.len()) as u8];
                for (file, record, len) in subs {
                    d.push(6);
                    d.extend(words(&[*file, *record, *len]));
                }
                custom(d)
            }
            Op::WriteFileRecord(subs) => custom(write_file_record_data(subs)),
            Op::ReadFifoQueue(a) => custom(a.to_be_bytes().to_vec()),
            Op::Custom(_, data) => custom(data.clone()),
        }
    }

    /// Whether the plant stays silent (Force Listen Only Mode).
    pub fn expects_silence(&self) -> bool {
        matches!(self, Op::Diagnostics(4, _))
    }

    /// The request fields the agent should decode.
    pub fn expected_request(&self) -> ModbusPdu {
        let mut p = ModbusPdu::default();
        match self {
            Op::ReadCoils(a, q)
            | Op::ReadDiscreteInputs(a, q)
            | Op::ReadHoldingRegisters(a, q)
            | Op::ReadInputRegisters(a, q) => {
                p.address = Some(*a);
                p.quantity = Some(*q);
            }
            Op::WriteSingleCoil(a, v) => {
                p.address = Some(*a);
                p.values = Some(Values::Coils(vec![*v]));
            }
            Op::WriteSingleRegister(a, v) => {
                p.address = Some(*a);
                p.values = Some(Values::Registers(vec![*v]));
            }
            Op::ReadExceptionStatus
            | Op::GetCommEventCounter
            | Op::GetCommEventLog
            | Op::ReportServerId => {}
            Op::Diagnostics(sub, data) => {
                p.sub_function = Some(*sub);
                p.sub_function_name = diagnostics_name(*sub).map(Cow::Borrowed);
                p.data_hex = hex_opt(data);
            }
            Op::WriteMultipleCoils(a, v) => {
                p.address = Some(*a);
                p.quantity = Some(v.len() as u16);
                p.byte_count = Some(v.len().div_ceil(8) as u8);
                p.values = Some(Values::Coils(v.clone()));
            }
            Op::WriteMultipleRegisters(a, v) => {
                p.address = Some(*a);
                p.quantity = Some(v.len() as u16);
                p.byte_count = Some((2 * v.len()) as u8);
                p.values = Some(Values::Registers(v.clone()));
            }
            Op::ReadFileRecord(subs) => {
                p.byte_count = Some((7 * subs.len()) as u8);
                p.file_records = Some(
                    subs.iter()
                        .map(|(file, record, len)| FileRecord {
                            reference_type: 6,
                            file_number: Some(*file),
                            record_number: Some(*record),
                            record_length: Some(*len),
                            values: None,
                        })
                        .collect(),
                );
            }
            Op::WriteFileRecord(subs) => {
                p.byte_count =
                    Some(subs.iter().map(|(_, _, v)| 7 + 2 * v.len()).sum::<usize>() as u8);
                p.file_records = Some(written_records(subs));
            }
            Op::MaskWriteRegister(a, and, or) => {
                p.address = Some(*a);
                p.and_mask = Some(*and);
                p.or_mask = Some(*or);
            }
            Op::ReadWriteMultipleRegisters(ra, rq, wa, v) => {
                p.read_address = Some(*ra);
                p.read_quantity = Some(*rq);
                p.write_address = Some(*wa);
                p.write_quantity = Some(v.len() as u16);
                p.byte_count = Some((2 * v.len()) as u8);
                p.write_values = Some(v.clone());
            }
            Op::ReadFifoQueue(a) => p.address = Some(*a),
            Op::ReadDeviceIdentification(code, object) => {
                p.mei_type = Some(14);
                p.read_device_id_code = Some(code.value());
                p.object_id = Some(*object);
            }
            Op::Custom(f, data) => {
                p.data_hex = hex_opt(data);
                if *f == 0x5A {
                    p.umas_function = data.get(1).copied();
                }
            }
        }
        p
    }

    /// The response fields the agent should decode from a normal response, as the client
    /// received it.
    pub fn expected_response(&self, response: &Response) -> ModbusPdu {
        let mut p = ModbusPdu::default();
        match (self, response) {
            (Op::ReadCoils(_, q), Response::ReadCoils(bits))
            | (Op::ReadDiscreteInputs(_, q), Response::ReadDiscreteInputs(bits)) => {
                // The client unpacks whole bytes; only the first `q` bits were asked for.
                p.byte_count = Some(usize::from(*q).div_ceil(8) as u8);
                p.values = Some(Values::Coils(
                    bits.iter().copied().take(usize::from(*q)).collect(),
                ));
            }
            (
                _,
                Response::ReadHoldingRegisters(v)
                | Response::ReadInputRegisters(v)
                | Response::ReadWriteMultipleRegisters(v),
            ) => {
                p.byte_count = Some((2 * v.len()) as u8);
                p.values = Some(Values::Registers(v.clone()));
            }
            (_, Response::WriteSingleCoil(a, v)) => {
                p.address = Some(*a);
                p.values = Some(Values::Coils(vec![*v]));
            }
            (_, Response::WriteSingleRegister(a, v)) => {
                p.address = Some(*a);
                p.values = Some(Values::Registers(vec![*v]));
            }
            (_, Response::WriteMultipleCoils(a, q) | Response::WriteMultipleRegisters(a, q)) => {
                p.address = Some(*a);
                p.quantity = Some(*q);
            }
            (_, Response::ReportServerId(id, run, extra)) => {
                p.byte_count = Some((2 + extra.len()) as u8);
                p.run_indicator = Some(*run);
                // The agent keeps the whole data raw (server id, run indicator, additional
                // data): the id's length is device specific and not on the wire.
                let mut data = vec![*id, if *run { 0xFF } else { 0x00 }];
                data.extend_from_slice(extra);
                p.data_hex = hex_opt(&data);
            }
            (_, Response::MaskWriteRegister(a, and, or)) => {
                p.address = Some(*a);
                p.and_mask = Some(*and);
                p.or_mask = Some(*or);
            }
            (_, Response::ReadDeviceIdentification(r)) => {
                p.mei_type = Some(14);
                p.read_device_id_code = Some(r.read_code.value());
                p.conformity_level = Some(r.conformity_level.value());
                p.more_follows = Some(r.more_follows);
                p.next_object_id = Some(r.next_object_id);
                p.objects = Some(
                    r.device_id_objects
                        .iter()
                        .map(|o| DeviceIdObject {
                            id: o.id,
                            name: device_object_name(o.id).map(Cow::Borrowed),
                            value: String::from_utf8_lossy(&o.value).into_owned(),
                        })
                        .collect(),
                );
            }
            (op, Response::Custom(_, bytes)) => expected_raw_response(op, bytes, &mut p),
            // A typed response to a request of another type: the client would have refused it.
            (_, _) => {}
        }
        p
    }
}

/// Response fields of the functions `tokio-modbus` leaves raw, read from the data bytes (after
/// the function code) with the specification's layout.
fn expected_raw_response(op: &Op, b: &[u8], p: &mut ModbusPdu) {
    let w = |at: usize| u16_at(b, at);
    match op {
        Op::ReadExceptionStatus => p.status = b.first().map(|&s| u16::from(s)),
        Op::Diagnostics(..) => {
            p.sub_function = w(0);
            p.sub_function_name = w(0).and_then(diagnostics_name).map(Cow::Borrowed);
            p.data_hex = hex_opt(b.get(2..).unwrap_or_default());
        }
        Op::GetCommEventCounter => {
            p.status = w(0);
            p.event_count = w(2);
        }
        Op::GetCommEventLog => {
            p.byte_count = b.first().copied();
            p.status = w(1);
            p.event_count = w(3);
            p.message_count = w(5);
            p.data_hex = hex_opt(b.get(7..).unwrap_or_default());
        }
        Op::ReadFileRecord(_) => {
            p.byte_count = b.first().copied();
            let mut records = Vec::new();
            let mut rest = b.get(1..).unwrap_or_default();
            while let [len, reference_type, tail @ ..] = rest {
                let n = usize::from(len.saturating_sub(1));
                let regs = tail.get(..n).unwrap_or(tail);
                records.push(FileRecord {
                    reference_type: *reference_type,
                    file_number: None,
                    record_number: None,
                    record_length: None,
                    values: Some(regs.chunks(2).filter_map(|c| u16_at(c, 0)).collect()),
                });
                rest = tail.get(n..).unwrap_or_default();
            }
            p.file_records = Some(records);
        }
        Op::WriteFileRecord(subs) => {
            // The normal response echoes the request.
            p.byte_count = b.first().copied();
            p.file_records = Some(written_records(subs));
        }
        Op::ReadFifoQueue(_) => {
            let count = w(2);
            p.quantity = count;
            let n = usize::from(count.unwrap_or(0));
            p.values = Some(Values::Registers(
                (0..n).filter_map(|k| w(4 + 2 * k)).collect(),
            ));
        }
        Op::Custom(f, _) => {
            p.data_hex = hex_opt(b);
            if *f == 0x5A {
                p.umas_function = b.get(1).copied();
            }
        }
        _ => p.data_hex = hex_opt(b),
    }
}

fn written_records(subs: &[(u16, u16, Vec<u16>)]) -> Vec<FileRecord> {
    subs.iter()
        .map(|(file, record, values)| FileRecord {
            reference_type: 6,
            file_number: Some(*file),
            record_number: Some(*record),
            record_length: Some(values.len() as u16),
            values: Some(values.clone()),
        })
        .collect()
}

fn write_file_record_data(subs: &[(u16, u16, Vec<u16>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (file, record, values) in subs {
        body.push(6);
        body.extend(words(&[*file, *record, values.len() as u16]));
        body.extend(words(values));
    }
    let mut d = vec![body.len() as u8];
    d.extend(body);
    d
}

/// One step of the script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub unit: u8,
    pub op: Op,
    /// Anomalies the content itself deserves (the same on every capture of it).
    pub anomalies: Vec<Anomaly>,
}

fn step(unit: u8, op: Op) -> Step {
    Step {
        unit,
        op,
        anomalies: Vec::new(),
    }
}

fn flagged(unit: u8, op: Op, anomalies: &[Anomaly]) -> Step {
    Step {
        unit,
        op,
        anomalies: anomalies.to_vec(),
    }
}

/// The golden script: every function code the agent decodes, each answered normally and with
/// an exception. The transaction id of step `i` is `i` (`tokio-modbus` counts from 0).
pub fn full_script() -> Vec<Step> {
    use Op::*;
    let ok = UNIT_OK;
    vec![
        step(ok, ReadCoils(0, 10)),
        step(ok, ReadCoils(95, 10)), // 02: past the end of the table
        step(ok, ReadDiscreteInputs(3, 13)),
        step(ok, ReadDiscreteInputs(200, 1)), // 02
        step(ok, ReadHoldingRegisters(10, 3)),
        flagged(
            ok,
            ReadHoldingRegisters(0, 126),
            &[Anomaly::QuantityOutOfRange],
        ), // 03: 125 at most
        step(ok, ReadInputRegisters(0, 4)),
        step(UNIT_BUSY, ReadInputRegisters(0, 4)), // 06
        step(ok, WriteSingleCoil(7, true)),
        step(ok, WriteSingleCoil(150, false)), // 02
        step(ok, WriteSingleRegister(20, 1234)),
        step(ok, WriteSingleRegister(20, 60_000)), // 03: above the set-point range
        step(ok, ReadExceptionStatus),
        step(UNIT_NO_PATH, ReadExceptionStatus), // 0A
        step(ok, Diagnostics(0x00, vec![0xA5, 0x37, 0x12, 0x34])),
        step(ok, Diagnostics(0x02, vec![0x00, 0x00])),
        step(ok, Diagnostics(0x0B, vec![0x00, 0x00])),
        step(ok, Diagnostics(0x03, vec![0x0D, 0x00])), // 01: serial-line only
        // Force Listen Only Mode is never answered; Restart Communications ends it.
        flagged(
            ok,
            Diagnostics(0x04, vec![0x00, 0x00]),
            &[Anomaly::UnansweredRequest],
        ),
        step(ok, Diagnostics(0x01, vec![0x00, 0x00])),
        step(ok, GetCommEventCounter),
        step(UNIT_NO_ANSWER, GetCommEventCounter), // 0B
        step(ok, GetCommEventLog),
        step(UNIT_FAILED, GetCommEventLog), // 04
        step(
            ok,
            WriteMultipleCoils(
                20,
                vec![
                    true, false, true, true, false, false, true, false, true, true,
                ],
            ),
        ),
        step(ok, WriteMultipleCoils(95, vec![true; 8])), // 02
        step(ok, WriteMultipleRegisters(30, vec![1, 2, 3])),
        step(ok, WriteMultipleRegisters(99, vec![1, 2])), // 02
        step(ok, ReportServerId),
        step(UNIT_BUSY, ReportServerId), // 06
        step(ok, ReadFileRecord(vec![(1, 2, 3), (2, 10, 2)])),
        step(ok, ReadFileRecord(vec![(3, 0, 1)])), // 02: no file 3
        step(ok, WriteFileRecord(vec![(1, 5, vec![0xAAAA, 0xBBBB])])),
        step(ok, WriteFileRecord(vec![(2, 49, vec![1, 2])])), // 02: past the last record
        step(ok, MaskWriteRegister(10, 0x00F2, 0x0025)),
        step(ok, MaskWriteRegister(500, 0xFFFF, 0x0000)), // 02
        step(
            ok,
            ReadWriteMultipleRegisters(30, 4, 31, vec![0x0102, 0x0304]),
        ),
        step(ok, ReadWriteMultipleRegisters(98, 5, 0, vec![7])), // 02
        step(ok, ReadFifoQueue(FIFO_ADDRESS)),
        step(ok, ReadFifoQueue(OVERFULL_FIFO_ADDRESS)), // 03: more than 31 queued
        step(ok, ReadDeviceIdentification(ReadCode::Basic, 0x00)),
        step(ok, ReadDeviceIdentification(ReadCode::Regular, 0x03)),
        step(ok, ReadDeviceIdentification(ReadCode::Specific, 0x80)),
        step(ok, ReadDeviceIdentification(ReadCode::Specific, 0x99)), // 02: no such object
        step(ok, Custom(FC_READ_TAG, vec![0x00, 0x05])),
        step(ok, Custom(FC_READ_TAG, vec![0x01, 0x00])), // 02: no tag 256
        step(ok, Custom(0x5A, vec![0x00, 0x02])),        // 01: not a Schneider PLC
        flagged(
            ok,
            Custom(55, vec![0xDE, 0xAD]),
            &[Anomaly::UnknownFunction],
        ), // 01
    ]
}

/// What the client got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Response(Response),
    Exception(u8),
    /// No response within the wait.
    Silence,
}

/// Runs `steps` with a `tokio-modbus` client against `addr`, one request at a time.
pub async fn run_client(addr: SocketAddr, steps: &[Step]) -> io::Result<Vec<Outcome>> {
    let mut ctx = tcp::connect_slave(addr, Slave(UNIT_OK)).await?;
    let mut outcomes = Vec::with_capacity(steps.len());
    for s in steps {
        ctx.set_slave(Slave(s.unit));
        let wait = if s.op.expects_silence() {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(5)
        };
        let outcome = match tokio::time::timeout(wait, ctx.call(s.op.request())).await {
            Err(_) if s.op.expects_silence() => Outcome::Silence,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no response to {:?}", s.op),
                ));
            }
            Ok(Ok(Ok(response))) => Outcome::Response(response),
            Ok(Ok(Err(code))) => Outcome::Exception(u8::from(code)),
            // `tokio-modbus` reads the exception of a raw function (8) as the typed function
            // code and then finds it does not match the raw request: the exception is still
            // what the server said.
            Ok(Err(ModbusError::Protocol(ProtocolError::FunctionCodeMismatch {
                result: Err(ExceptionResponse { exception, .. }),
                ..
            }))) => Outcome::Exception(u8::from(exception)),
            Ok(Err(e)) => return Err(io::Error::other(format!("{:?}: {e}", s.op))),
        };
        outcomes.push(outcome);
    }
    ctx.disconnect().await?;
    Ok(outcomes)
}

/// The truth about one transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct Transaction {
    pub tid: u16,
    pub unit: u8,
    pub func: u8,
    /// Request fields (`ts` left at 0, `len` from the recorded MBAP header).
    pub request: ModbusPdu,
    pub response: Option<ModbusPdu>,
    pub exception_code: Option<u8>,
    pub anomalies: Vec<Anomaly>,
    /// Index of the request and response ADUs in [`Session::dialogue`].
    pub request_msg: usize,
    pub response_msg: Option<usize>,
}

/// A recorded run of a script.
#[derive(Clone, Debug)]
pub struct Session {
    pub steps: Vec<Step>,
    pub outcomes: Vec<Outcome>,
    pub recording: Recording,
    /// The recording cut into ADUs.
    pub dialogue: Vec<Message>,
    pub transactions: Vec<Transaction>,
}

/// Serves a fresh plant, runs `steps` against it through the recording proxy, and returns
/// what was recorded with the truth about every transaction.
pub fn record_session(steps: Vec<Step>) -> io::Result<Session> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (outcomes, recording) = rt.block_on(async {
        let (server_addr, server) = serve_plant().await?;
        let (proxy_addr, proxy) = record_proxy(server_addr).await?;
        let outcomes = run_client(proxy_addr, &steps).await;
        let recording = tokio::time::timeout(Duration::from_secs(5), proxy)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the proxy did not see both sides close",
                )
            })?
            .map_err(io::Error::other)?;
        server.abort();
        Ok::<_, io::Error>((outcomes?, recording?))
    })?;
    let dialogue = recording.adus();
    let transactions = truth(&steps, &outcomes, &dialogue)?;
    Ok(Session {
        steps,
        outcomes,
        recording,
        dialogue,
        transactions,
    })
}

fn truth(
    steps: &[Step],
    outcomes: &[Outcome],
    dialogue: &[Message],
) -> io::Result<Vec<Transaction>> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let find = |from: Side, tid: u16| {
        dialogue
            .iter()
            .position(|m| m.from == from && m.bytes.get(..2) == Some(&tid.to_be_bytes()[..]))
    };
    let mut out = Vec::with_capacity(steps.len());
    for (i, (s, outcome)) in steps.iter().zip(outcomes).enumerate() {
        let tid = u16::try_from(i).map_err(|_| bad("too many steps".into()))?;
        let request_msg =
            find(Side::Client, tid).ok_or_else(|| bad(format!("no request ADU for tid {tid}")))?;
        let response_msg = find(Side::Server, tid);
        let len_of = |m: usize| {
            dialogue
                .get(m)
                .and_then(|m| u16_at(&m.bytes, 4))
                .unwrap_or(0)
        };
        let req_adu = dialogue
            .get(request_msg)
            .map(|m| m.bytes.as_slice())
            .unwrap_or_default();
        if req_adu.get(6) != Some(&s.unit) || req_adu.get(7) != Some(&s.op.function()) {
            return Err(bad(format!(
                "tid {tid}: recorded request {req_adu:02x?} is not {:?}",
                s.op
            )));
        }
        let mut request = s.op.expected_request();
        request.len = len_of(request_msg);
        let (response, exception_code) = match (outcome, response_msg) {
            (Outcome::Silence, None) => (None, None),
            (Outcome::Response(r), Some(m)) => {
                let mut p = s.op.expected_response(r);
                p.len = len_of(m);
                (Some(p), None)
            }
            (Outcome::Exception(code), Some(m)) => (
                Some(ModbusPdu {
                    len: len_of(m),
                    ..ModbusPdu::default()
                }),
                Some(*code),
            ),
            (o, m) => {
                return Err(bad(format!(
                    "tid {tid}: outcome {o:?} but response ADU {m:?}"
                )));
            }
        };
        out.push(Transaction {
            tid,
            unit: s.unit,
            func: s.op.function(),
            request,
            response,
            exception_code,
            anomalies: s.anomalies.clone(),
            request_msg,
            response_msg,
        });
    }
    Ok(out)
}

impl Session {
    /// The Modbus events a decoder should report for a capture of this session between
    /// `client` and `server`, with each PDU stamped by `first_byte_at_us` (the capture time of
    /// the frame that carried each message's first byte; see `pcapgen::Capture`).
    pub fn expected_events(
        &self,
        client: SocketAddr,
        server: SocketAddr,
        first_byte_at_us: &[Option<i64>],
    ) -> Vec<ModbusEvent> {
        let ts_of = |m: usize| {
            Timestamp::from_micros(first_byte_at_us.get(m).copied().flatten().unwrap_or(0))
        };
        self.transactions
            .iter()
            .map(|t| {
                let req_ts = ts_of(t.request_msg);
                let request = ModbusPdu {
                    ts: req_ts,
                    ..t.request.clone()
                };
                let response = t.response.clone().map(|r| ModbusPdu {
                    ts: t.response_msg.map(ts_of).unwrap_or_default(),
                    ..r
                });
                let latency_us = response.as_ref().and_then(|r| r.ts.micros_since(req_ts));
                ModbusEvent {
                    ts: req_ts,
                    src_ip: client.ip(),
                    src_port: client.port(),
                    dst_ip: server.ip(),
                    dst_port: server.port(),
                    tid: t.tid,
                    unit: t.unit,
                    func: t.func,
                    func_name: function_name(t.func),
                    request: Some(request),
                    response,
                    exception: t.exception_code.map(exception_name),
                    exception_code: t.exception_code,
                    latency_us,
                    anomalies: t.anomalies.clone(),
                }
            })
            .collect()
    }
}

/// Zeek's names (`consts.zeek`) for the functions in the script.
pub fn function_name(func: u8) -> Cow<'static, str> {
    Cow::Borrowed(match func {
        1 => "READ_COILS",
        2 => "READ_DISCRETE_INPUTS",
        3 => "READ_HOLDING_REGISTERS",
        4 => "READ_INPUT_REGISTERS",
        5 => "WRITE_SINGLE_COIL",
        6 => "WRITE_SINGLE_REGISTER",
        7 => "READ_EXCEPTION_STATUS",
        8 => "DIAGNOSTICS",
        11 => "GET_COMM_EVENT_COUNTER",
        12 => "GET_COMM_EVENT_LOG",
        15 => "WRITE_MULTIPLE_COILS",
        16 => "WRITE_MULTIPLE_REGISTERS",
        17 => "REPORT_SLAVE_ID",
        20 => "READ_FILE_RECORD",
        21 => "WRITE_FILE_RECORD",
        22 => "MASK_WRITE_REGISTER",
        23 => "READ_WRITE_MULTIPLE_REGISTERS",
        24 => "READ_FIFO_QUEUE",
        43 => "ENCAP_INTERFACE_TRANSPORT",
        90 => "PROGRAM_UNITY",
        other => return Cow::Owned(format!("unknown-{other}")),
    })
}

/// Zeek's names for the exception codes.
pub fn exception_name(code: u8) -> Cow<'static, str> {
    Cow::Borrowed(match code {
        1 => "ILLEGAL_FUNCTION",
        2 => "ILLEGAL_DATA_ADDRESS",
        3 => "ILLEGAL_DATA_VALUE",
        4 => "SLAVE_DEVICE_FAILURE",
        5 => "ACKNOWLEDGE",
        6 => "SLAVE_DEVICE_BUSY",
        8 => "MEMORY_PARITY_ERROR",
        10 => "GATEWAY_PATH_UNAVAILABLE",
        11 => "GATEWAY_TARGET_DEVICE_FAILED_TO_RESPOND",
        other => return Cow::Owned(format!("unknown-{other}")),
    })
}

/// The specification's names of the Diagnostics sub-functions in the script.
fn diagnostics_name(sub: u16) -> Option<&'static str> {
    Some(match sub {
        0x00 => "RETURN_QUERY_DATA",
        0x01 => "RESTART_COMMUNICATIONS_OPTION",
        0x02 => "RETURN_DIAGNOSTIC_REGISTER",
        0x03 => "CHANGE_ASCII_INPUT_DELIMITER",
        0x04 => "FORCE_LISTEN_ONLY_MODE",
        0x0B => "RETURN_BUS_MESSAGE_COUNT",
        _ => return None,
    })
}

/// The specification's names of the basic and regular device identification objects.
fn device_object_name(id: u8) -> Option<&'static str> {
    Some(match id {
        0x00 => "VendorName",
        0x01 => "ProductCode",
        0x02 => "MajorMinorRevision",
        0x03 => "VendorUrl",
        0x04 => "ProductName",
        0x05 => "ModelName",
        0x06 => "UserApplicationName",
        _ => return None,
    })
}

fn words(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
}

/// Lower-case hex, `None` for no bytes (the schema leaves `data_hex` out then).
pub fn hex_opt(data: &[u8]) -> Option<String> {
    if data.is_empty() {
        return None;
    }
    Some(data.iter().map(|b| format!("{b:02x}")).collect())
}
