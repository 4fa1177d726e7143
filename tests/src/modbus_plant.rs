//! A small Modbus/TCP plant served by `tokio-modbus`: coils, discrete inputs, holding and input
//! registers, two files of records, a FIFO queue, communication counters and device
//! identification, with the exceptions a real device returns (illegal function, address or
//! value) and a few units that always fail the way gateways and busy devices do.
//!
//! The plant answers every function the agent decodes. Functions `tokio-modbus` does not type
//! (7, 8, 11, 12, 20, 21, 24, user-defined) arrive as `Request::Custom` and are answered with
//! `Response::Custom` bytes laid out as the specification says.

use std::future::{Ready, ready};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_modbus::bytes::Bytes;
use tokio_modbus::prelude::{
    ConformityLevel, DeviceIdObject, ExceptionCode, ReadCode, ReadDeviceIdentificationResponse,
    Request, Response, SlaveRequest,
};
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};

/// The unit that behaves.
pub const UNIT_OK: u8 = 1;
/// A unit that answers every request with exception 6 (server device busy).
pub const UNIT_BUSY: u8 = 2;
/// A unit that answers every request with exception 4 (server device failure).
pub const UNIT_FAILED: u8 = 3;
/// A unit that reports its server id the way libmodbus does: id, run indicator, then
/// additional data.
pub const UNIT_SERVER_ID_WITH_DATA: u8 = 5;
/// Behind a gateway with no path to it: exception 10.
pub const UNIT_NO_PATH: u8 = 10;
/// Behind a gateway, not answering: exception 11.
pub const UNIT_NO_ANSWER: u8 = 11;

/// Registers and coils per table.
pub const TABLE_SIZE: u16 = 100;
/// Largest value the plant accepts in a holding register (a set-point range).
pub const MAX_SETPOINT: u16 = 10_000;
/// The FIFO queue's pointer address, and a second one that holds too many entries.
pub const FIFO_ADDRESS: u16 = 0x0400;
pub const OVERFULL_FIFO_ADDRESS: u16 = 0x0401;
/// Files 1 and 2 exist, with this many records each.
pub const FILE_RECORDS: u16 = 50;
/// The plant's server id (function 17).
pub const SERVER_ID: u8 = 0x4D;
/// The user-defined function the plant implements: read a tag (2-byte tag id in, tag id and
/// 2-byte value out).
pub const FC_READ_TAG: u8 = 65;

/// The device identification objects (function 43 / MEI 14), id and value.
pub const DEVICE_ID: &[(u8, &str)] = &[
    (0x00, "Mamori Test Plant"),
    (0x01, "MTP-502"),
    (0x02, "v1.2.3"),
    (0x03, "https://example.invalid/mamori"),
    (0x04, "Golden Plant"),
    (0x05, "GP-1"),
    (0x06, "golden tests"),
    (0x80, "extended object"),
];

/// The plant's state.
#[derive(Debug)]
pub struct Plant {
    coils: Vec<bool>,
    discrete_inputs: Vec<bool>,
    holding: Vec<u16>,
    input: Vec<u16>,
    /// Files 1 and 2.
    files: [Vec<u16>; 2],
    fifo: Vec<u16>,
    overfull_fifo: Vec<u16>,
    diagnostic_register: u16,
    bus_messages: u16,
    event_count: u16,
    listen_only: bool,
}

impl Default for Plant {
    fn default() -> Self {
        Plant::new()
    }
}

impl Plant {
    pub fn new() -> Self {
        let n = usize::from(TABLE_SIZE);
        Plant {
            coils: (0..n).map(|i| i % 3 == 0).collect(),
            discrete_inputs: (0..n).map(|i| i % 2 == 1).collect(),
            holding: (0..n).map(|i| 1000 + i as u16).collect(),
            input: (0..n).map(|i| 0x4000 | i as u16).collect(),
            files: [
                (0..FILE_RECORDS).map(|r| 0x1000 + r).collect(),
                (0..FILE_RECORDS).map(|r| 0x2000 + r).collect(),
            ],
            fifo: vec![0x0101, 0x0202, 0x0303],
            overfull_fifo: (0..32).collect(),
            diagnostic_register: 0x0021,
            bus_messages: 0,
            event_count: 0,
            listen_only: false,
        }
    }

    /// Handles one request; `Ok(None)` means no response at all (listen-only mode).
    pub fn handle(
        &mut self,
        unit: u8,
        request: Request<'_>,
    ) -> Result<Option<Response>, ExceptionCode> {
        let restart =
            matches!(&request, Request::Custom(8, data) if data.get(..2) == Some(&[0, 1][..]));
        if self.listen_only && !restart {
            return Ok(None);
        }
        self.bus_messages = self.bus_messages.wrapping_add(1);
        match unit {
            UNIT_BUSY => return Err(ExceptionCode::ServerDeviceBusy),
            UNIT_FAILED => return Err(ExceptionCode::ServerDeviceFailure),
            UNIT_NO_PATH => return Err(ExceptionCode::GatewayPathUnavailable),
            UNIT_NO_ANSWER => return Err(ExceptionCode::GatewayTargetDevice),
            _ => {}
        }
        if matches!(&request, Request::Custom(8, data) if data.get(..2) == Some(&[0, 4][..])) {
            // Force Listen Only Mode: no response, now or until a restart.
            self.listen_only = true;
            return Ok(None);
        }
        let response = match request {
            Request::ReadCoils(a, q) => Response::ReadCoils(read(&self.coils, a, q, 2000)?),
            Request::ReadDiscreteInputs(a, q) => {
                Response::ReadDiscreteInputs(read(&self.discrete_inputs, a, q, 2000)?)
            }
            Request::ReadHoldingRegisters(a, q) => {
                Response::ReadHoldingRegisters(read(&self.holding, a, q, 125)?)
            }
            Request::ReadInputRegisters(a, q) => {
                Response::ReadInputRegisters(read(&self.input, a, q, 125)?)
            }
            Request::WriteSingleCoil(a, v) => {
                *cell(&mut self.coils, a)? = v;
                self.event_count += 1;
                Response::WriteSingleCoil(a, v)
            }
            Request::WriteSingleRegister(a, v) => {
                let c = cell(&mut self.holding, a)?;
                if v > MAX_SETPOINT {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                *c = v;
                self.event_count += 1;
                Response::WriteSingleRegister(a, v)
            }
            Request::WriteMultipleCoils(a, values) => {
                write(&mut self.coils, a, &values, 1968)?;
                self.event_count += 1;
                Response::WriteMultipleCoils(a, values.len() as u16)
            }
            Request::WriteMultipleRegisters(a, values) => {
                write(&mut self.holding, a, &values, 123)?;
                self.event_count += 1;
                Response::WriteMultipleRegisters(a, values.len() as u16)
            }
            Request::ReportServerId => {
                // Byte count, server id, run indicator (ON), additional data. Written raw:
                // `tokio-modbus` 0.17 sizes a typed `Response::ReportServerId` one byte short
                // in the MBAP length, and its own client then fails to read the reply.
                let extra: &[u8] = if unit == UNIT_SERVER_ID_WITH_DATA {
                    b"MTP"
                } else {
                    b""
                };
                let mut data = vec![2 + extra.len() as u8, SERVER_ID, 0xFF];
                data.extend_from_slice(extra);
                Response::Custom(17, Bytes::from(data))
            }
            Request::MaskWriteRegister(a, and_mask, or_mask) => {
                let c = cell(&mut self.holding, a)?;
                *c = (*c & and_mask) | (or_mask & !and_mask);
                self.event_count += 1;
                Response::MaskWriteRegister(a, and_mask, or_mask)
            }
            Request::ReadWriteMultipleRegisters(ra, rq, wa, values) => {
                // The specification performs the write before the read.
                if rq == 0 || rq > 125 {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                range(&self.holding, ra, rq)?;
                write(&mut self.holding, wa, &values, 121)?;
                self.event_count += 1;
                Response::ReadWriteMultipleRegisters(read(&self.holding, ra, rq, 125)?)
            }
            Request::ReadDeviceIdentification(code, object) => self.device_id(code, object)?,
            Request::Custom(func, data) => {
                Response::Custom(func, Bytes::from(self.custom(func, &data)?))
            }
        };
        Ok(Some(response))
    }

    fn device_id(&self, code: ReadCode, object: u8) -> Result<Response, ExceptionCode> {
        let objects: Vec<DeviceIdObject> = match code {
            ReadCode::Specific => {
                let (id, v) = DEVICE_ID
                    .iter()
                    .find(|(id, _)| *id == object)
                    .ok_or(ExceptionCode::IllegalDataAddress)?;
                vec![DeviceIdObject {
                    id: *id,
                    value: Bytes::from_static(v.as_bytes()),
                }]
            }
            _ => {
                let last = match code {
                    ReadCode::Basic => 0x02,
                    ReadCode::Regular => 0x7F,
                    _ => 0xFF,
                };
                // A stream starting at an object the category does not have starts over.
                let first = if object > last { 0 } else { object };
                DEVICE_ID
                    .iter()
                    .filter(|(id, _)| (first..=last).contains(id))
                    .map(|(id, v)| DeviceIdObject {
                        id: *id,
                        value: Bytes::from_static(v.as_bytes()),
                    })
                    .collect()
            }
        };
        Ok(Response::ReadDeviceIdentification(
            ReadDeviceIdentificationResponse {
                read_code: code,
                conformity_level: ConformityLevel::ExtendedIdentification,
                more_follows: false,
                next_object_id: 0,
                device_id_objects: objects,
            },
        ))
    }

    /// The data bytes (after the function code) of a response to a function `tokio-modbus`
    /// leaves to `Custom`.
    fn custom(&mut self, func: u8, data: &[u8]) -> Result<Vec<u8>, ExceptionCode> {
        match func {
            // Read Exception Status: the first eight coils as the status byte.
            7 => Ok(vec![
                self.coils
                    .iter()
                    .take(8)
                    .enumerate()
                    .fold(0u8, |b, (i, &c)| b | (u8::from(c) << i)),
            ]),
            8 => self.diagnostics(data),
            // Get Comm Event Counter: status word (0 = ready), event count.
            11 => Ok(words(&[0x0000, self.event_count])),
            // Get Comm Event Log: byte count, status, event count, message count, events
            // (most recent first).
            12 => {
                let events = [0x20u8, 0x00, 0x40];
                let mut out = vec![6 + events.len() as u8];
                out.extend(words(&[0x0000, self.event_count, self.bus_messages]));
                out.extend_from_slice(&events);
                Ok(out)
            }
            20 => self.read_file_record(data),
            21 => self.write_file_record(data),
            24 => {
                let address = u16_at(data, 0).ok_or(ExceptionCode::IllegalDataValue)?;
                let queue = match address {
                    FIFO_ADDRESS => &self.fifo,
                    OVERFULL_FIFO_ADDRESS => &self.overfull_fifo,
                    _ => return Err(ExceptionCode::IllegalDataAddress),
                };
                if queue.len() > 31 {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                let n = queue.len() as u16;
                let mut out = words(&[2 + 2 * n, n]);
                out.extend(words(queue));
                Ok(out)
            }
            FC_READ_TAG => {
                let tag = u16_at(data, 0).ok_or(ExceptionCode::IllegalDataValue)?;
                if data.len() != 2 || tag >= TABLE_SIZE {
                    return Err(ExceptionCode::IllegalDataAddress);
                }
                let value = self
                    .input
                    .get(usize::from(tag))
                    .copied()
                    .ok_or(ExceptionCode::IllegalDataAddress)?;
                Ok(words(&[tag, value]))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }

    fn diagnostics(&mut self, data: &[u8]) -> Result<Vec<u8>, ExceptionCode> {
        let sub = u16_at(data, 0).ok_or(ExceptionCode::IllegalDataValue)?;
        match sub {
            // Return Query Data: echo.
            0x00 => Ok(data.to_vec()),
            // Restart Communications Option: leaves listen-only mode, echo.
            0x01 => {
                self.listen_only = false;
                Ok(data.to_vec())
            }
            0x02 => Ok(words(&[sub, self.diagnostic_register])),
            0x0A => {
                self.bus_messages = 0;
                Ok(data.to_vec())
            }
            0x0B => Ok(words(&[sub, self.bus_messages])),
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }

    fn file(&mut self, reference_type: u8, file: u16) -> Result<&mut Vec<u16>, ExceptionCode> {
        if reference_type != 6 {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        match file {
            1 | 2 => self
                .files
                .get_mut(usize::from(file - 1))
                .ok_or(ExceptionCode::IllegalDataAddress),
            _ => Err(ExceptionCode::IllegalDataAddress),
        }
    }

    fn read_file_record(&mut self, data: &[u8]) -> Result<Vec<u8>, ExceptionCode> {
        let (&byte_count, subs) = data.split_first().ok_or(ExceptionCode::IllegalDataValue)?;
        if usize::from(byte_count) != subs.len() || subs.len() % 7 != 0 {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let mut body = Vec::new();
        for sub in subs.chunks(7) {
            let reference_type = sub.first().copied().unwrap_or(0);
            let file = u16_at(sub, 1).unwrap_or(0);
            let record = u16_at(sub, 3).unwrap_or(0);
            let len = u16_at(sub, 5).unwrap_or(0);
            let records = self.file(reference_type, file)?;
            let values = records
                .get(usize::from(record)..usize::from(record) + usize::from(len))
                .ok_or(ExceptionCode::IllegalDataAddress)?;
            body.push(1 + 2 * len as u8); // sub-response length: reference type + data
            body.push(6);
            body.extend(words(values));
        }
        let mut out = vec![body.len() as u8];
        out.extend(body);
        Ok(out)
    }

    fn write_file_record(&mut self, data: &[u8]) -> Result<Vec<u8>, ExceptionCode> {
        let (&byte_count, mut rest) = data.split_first().ok_or(ExceptionCode::IllegalDataValue)?;
        if usize::from(byte_count) != rest.len() {
            return Err(ExceptionCode::IllegalDataValue);
        }
        while !rest.is_empty() {
            let reference_type = rest.first().copied().unwrap_or(0);
            let file = u16_at(rest, 1).ok_or(ExceptionCode::IllegalDataValue)?;
            let record = u16_at(rest, 3).ok_or(ExceptionCode::IllegalDataValue)?;
            let len = u16_at(rest, 5).ok_or(ExceptionCode::IllegalDataValue)?;
            let values: Vec<u16> = (0..len)
                .map(|k| u16_at(rest, 7 + 2 * usize::from(k)))
                .collect::<Option<_>>()
                .ok_or(ExceptionCode::IllegalDataValue)?;
            let records = self.file(reference_type, file)?;
            let slot = records
                .get_mut(usize::from(record)..usize::from(record) + usize::from(len))
                .ok_or(ExceptionCode::IllegalDataAddress)?;
            slot.copy_from_slice(&values);
            rest = rest.get(7 + 2 * usize::from(len)..).unwrap_or_default();
        }
        // The normal response echoes the request.
        Ok(data.to_vec())
    }
}

fn words(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
}

fn range<T>(
    table: &[T],
    address: u16,
    quantity: u16,
) -> Result<std::ops::Range<usize>, ExceptionCode> {
    let start = usize::from(address);
    let end = start + usize::from(quantity);
    if end > table.len() {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok(start..end)
}

fn read<T: Copy>(
    table: &[T],
    address: u16,
    quantity: u16,
    max: u16,
) -> Result<Vec<T>, ExceptionCode> {
    if quantity == 0 || quantity > max {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let r = range(table, address, quantity)?;
    table
        .get(r)
        .map(<[T]>::to_vec)
        .ok_or(ExceptionCode::IllegalDataAddress)
}

fn write<T: Copy>(
    table: &mut [T],
    address: u16,
    values: &[T],
    max: u16,
) -> Result<(), ExceptionCode> {
    if values.is_empty() || values.len() > usize::from(max) {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let r = range(table, address, values.len() as u16)?;
    table
        .get_mut(r)
        .ok_or(ExceptionCode::IllegalDataAddress)?
        .copy_from_slice(values);
    Ok(())
}

fn cell<T>(table: &mut [T], address: u16) -> Result<&mut T, ExceptionCode> {
    table
        .get_mut(usize::from(address))
        .ok_or(ExceptionCode::IllegalDataAddress)
}

/// The `tokio-modbus` service around a shared [`Plant`].
#[derive(Clone, Debug)]
pub struct PlantService {
    plant: Arc<Mutex<Plant>>,
}

impl Service for PlantService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let mut plant = self.plant.lock().unwrap_or_else(PoisonError::into_inner);
        ready(plant.handle(req.slave, req.request))
    }
}

/// Serves a fresh plant on `127.0.0.1:0`; returns its address and the server task.
pub async fn serve_plant() -> io::Result<(SocketAddr, JoinHandle<()>)> {
    serve_plant_on("127.0.0.1:0".parse().map_err(io::Error::other)?).await
}

/// Serves a fresh plant on `addr`; returns the bound address and the server task.
pub async fn serve_plant_on(addr: SocketAddr) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let plant = Arc::new(Mutex::new(Plant::new()));
    let task = tokio::spawn(async move {
        let server = Server::new(listener);
        let on_connected = move |stream, socket_addr| {
            let service = PlantService {
                plant: Arc::clone(&plant),
            };
            async move { accept_tcp_connection(stream, socket_addr, move |_| Ok(Some(service.clone()))) }
        };
        // The server runs until the task is aborted; a broken connection ends only itself.
        let _ = server.serve(&on_connected, |_err| {}).await;
    });
    Ok((addr, task))
}
