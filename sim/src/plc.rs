//! The PLCs and RTUs: real Modbus/TCP servers (`tokio-modbus`) on loopback, each with a data
//! model moved by its [`Process`] on a fixed tick, a simulated IP identity for the frames, and
//! device identification (function 43 / MEI 14). A device answers what a small controller
//! answers: reads and writes within its tables (ILLEGAL DATA ADDRESS beyond, ILLEGAL DATA VALUE
//! above a register's device limit), diagnostics (function 8, with Force Listen Only Mode),
//! the vendor programming functions (90, 125, 126), and ILLEGAL FUNCTION for the rest. A unit
//! id other than its own gets GATEWAY TARGET DEVICE FAILED TO RESPOND, as from a gateway.
//!
//! Faults are flags on the shared state: `silent` (the application hangs: requests are read
//! and never answered) and `listen_only` (set by function 8 sub-function 4, cleared by
//! sub-function 1 or [`PlcHandle::restore`]).

use std::future::{Ready, ready};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_modbus::bytes::Bytes;
use tokio_modbus::prelude::{
    ConformityLevel, DeviceIdObject, ExceptionCode, ReadCode, ReadDeviceIdentificationResponse,
    Request, Response, SlaveRequest,
};
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};

use crate::process::{DataModel, Process, ProcessKind};
use crate::rng::Rng;

/// The Modbus/TCP port every simulated device listens on (in the frames).
pub const MODBUS_PORT: u16 = 502;
/// Schneider UMAS.
pub const FC_UMAS: u8 = 90;
/// Modicon program download and upload (undocumented, seen in the field).
pub const FC_PROGRAM_DOWNLOAD: u8 = 125;
pub const FC_PROGRAM_UPLOAD: u8 = 126;
/// UMAS "OK" status byte.
const UMAS_OK: u8 = 0xFE;

/// The device identification objects a device reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Object 0x00.
    pub vendor: String,
    /// Object 0x01.
    pub product_code: String,
    /// Object 0x02 (major.minor revision: the firmware).
    pub revision: String,
    /// Object 0x03.
    pub vendor_url: String,
    /// Object 0x04.
    pub product_name: String,
    /// Object 0x05.
    pub model_name: String,
}

impl Identity {
    fn objects(&self) -> [(u8, &str); 6] {
        [
            (0x00, &self.vendor),
            (0x01, &self.product_code),
            (0x02, &self.revision),
            (0x03, &self.vendor_url),
            (0x04, &self.product_name),
            (0x05, &self.model_name),
        ]
    }
}

/// One simulated device.
#[derive(Clone, Debug, Serialize)]
pub struct PlcSpec {
    /// Host name (syslog, reports).
    pub name: String,
    /// The simulated address in the frames.
    pub ip: Ipv4Addr,
    pub unit: u8,
    pub kind: ProcessKind,
    pub identity: Identity,
    /// Holding-register writes above this are refused (ILLEGAL DATA VALUE): the device's own
    /// engineering limit, wider than what operators use.
    pub holding_max: u16,
}

fn identity(product_code: &str, revision: &str, product_name: &str, model: &str) -> Identity {
    Identity {
        vendor: "Mamori Controls".to_owned(),
        product_code: product_code.to_owned(),
        revision: revision.to_owned(),
        vendor_url: "https://example.invalid/mamori-controls".to_owned(),
        product_name: product_name.to_owned(),
        model_name: model.to_owned(),
    }
}

/// The plant's three devices: the water tank PLC, the substation feeder RTU and the pumping
/// station PLC, on `10.20.0.21..=23`.
pub fn default_plcs() -> Vec<PlcSpec> {
    vec![
        PlcSpec {
            name: "plc-tank-1".to_owned(),
            ip: Ipv4Addr::new(10, 20, 0, 21),
            unit: 1,
            kind: ProcessKind::WaterTank,
            identity: identity("MC-200", "2.4.1", "MC-200 Water PLC", "MC-200-W"),
            holding_max: 1000,
        },
        PlcSpec {
            name: "rtu-feeder-1".to_owned(),
            ip: Ipv4Addr::new(10, 20, 0, 22),
            unit: 1,
            kind: ProcessKind::Feeder,
            identity: identity("FR-40", "5.1.0", "FR-40 Feeder RTU", "FR-40-4F"),
            holding_max: 2000,
        },
        PlcSpec {
            name: "plc-pump-3".to_owned(),
            ip: Ipv4Addr::new(10, 20, 0, 23),
            unit: 1,
            kind: ProcessKind::PumpStation,
            identity: identity("MC-200", "2.4.1", "MC-200 Pump PLC", "MC-200-P"),
            holding_max: 1000,
        },
    ]
}

/// A device's live state, shared by its server connections and its process tick.
#[derive(Debug)]
pub struct PlcState {
    pub data: DataModel,
    pub identity: Identity,
    /// A hung application: requests are read and never answered.
    pub silent: bool,
    /// Force Listen Only Mode (function 8 sub-function 4) is in effect.
    pub listen_only: bool,
    process: Process,
    rng: Rng,
    unit: u8,
    holding_max: u16,
    bus_messages: u16,
}

impl PlcState {
    /// Advances the process by `dt` seconds.
    pub fn step(&mut self, dt: f64) {
        self.process.step(&mut self.data, dt, &mut self.rng);
    }

    /// Handles one request; `Ok(None)` is no response at all.
    pub fn handle(
        &mut self,
        unit: u8,
        request: Request<'_>,
    ) -> Result<Option<Response>, ExceptionCode> {
        let restart =
            matches!(&request, Request::Custom(8, data) if data.get(..2) == Some(&[0, 1][..]));
        if self.silent || (self.listen_only && !restart) {
            return Ok(None);
        }
        if unit != self.unit && unit != 0xFF {
            return Err(ExceptionCode::GatewayTargetDevice);
        }
        self.bus_messages = self.bus_messages.wrapping_add(1);
        let d = &mut self.data;
        let response = match request {
            Request::ReadCoils(a, q) => Response::ReadCoils(read(&d.coils, a, q, 2000)?),
            Request::ReadDiscreteInputs(a, q) => {
                Response::ReadDiscreteInputs(read(&d.discrete_inputs, a, q, 2000)?)
            }
            Request::ReadHoldingRegisters(a, q) => {
                Response::ReadHoldingRegisters(read(&d.holding, a, q, 125)?)
            }
            Request::ReadInputRegisters(a, q) => {
                Response::ReadInputRegisters(read(&d.input, a, q, 125)?)
            }
            Request::WriteSingleCoil(a, v) => {
                *cell(&mut d.coils, a)? = v;
                Response::WriteSingleCoil(a, v)
            }
            Request::WriteSingleRegister(a, v) => {
                let c = cell(&mut d.holding, a)?;
                if v > self.holding_max {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                *c = v;
                Response::WriteSingleRegister(a, v)
            }
            Request::WriteMultipleCoils(a, values) => {
                write(&mut d.coils, a, &values, 1968)?;
                Response::WriteMultipleCoils(a, u16::try_from(values.len()).unwrap_or(0))
            }
            Request::WriteMultipleRegisters(a, values) => {
                if values.iter().any(|&v| v > self.holding_max) {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                write(&mut d.holding, a, &values, 123)?;
                Response::WriteMultipleRegisters(a, u16::try_from(values.len()).unwrap_or(0))
            }
            Request::ReadDeviceIdentification(code, object) => self.device_id(code, object)?,
            Request::Custom(8, data) => {
                let sub = u16_at(&data, 0).ok_or(ExceptionCode::IllegalDataValue)?;
                match sub {
                    // Return Query Data: echo.
                    0x00 => Response::Custom(8, Bytes::from(data.to_vec())),
                    // Restart Communications Option: leaves listen-only mode, echo.
                    0x01 => {
                        self.listen_only = false;
                        Response::Custom(8, Bytes::from(data.to_vec()))
                    }
                    // Force Listen Only Mode: no response, now or until a restart.
                    0x04 => {
                        self.listen_only = true;
                        return Ok(None);
                    }
                    0x0B => Response::Custom(8, Bytes::from(words(&[sub, self.bus_messages]))),
                    _ => return Err(ExceptionCode::IllegalFunction),
                }
            }
            Request::Custom(FC_UMAS, data) => {
                // Session byte echoed, then the OK status; a reservation (0x10) also returns a
                // session id.
                let session = data.first().copied().unwrap_or(0);
                let mut out = vec![session, UMAS_OK];
                if data.get(1) == Some(&0x10) {
                    out.push(0x2A);
                }
                Response::Custom(FC_UMAS, Bytes::from(out))
            }
            Request::Custom(fc @ (FC_PROGRAM_DOWNLOAD | FC_PROGRAM_UPLOAD), data) => {
                // Acknowledge with the block header the request carried.
                Response::Custom(
                    fc,
                    Bytes::from(data.iter().take(4).copied().collect::<Vec<u8>>()),
                )
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        Ok(Some(response))
    }

    fn device_id(&self, code: ReadCode, object: u8) -> Result<Response, ExceptionCode> {
        let all = self.identity.objects();
        let pick = |(id, v): &(u8, &str)| DeviceIdObject {
            id: *id,
            value: Bytes::from(v.as_bytes().to_vec()),
        };
        let objects: Vec<DeviceIdObject> = match code {
            ReadCode::Specific => vec![
                all.iter()
                    .find(|(id, _)| *id == object)
                    .map(pick)
                    .ok_or(ExceptionCode::IllegalDataAddress)?,
            ],
            _ => {
                let last = if code == ReadCode::Basic { 0x02 } else { 0x7F };
                let first = if object > last { 0 } else { object };
                all.iter()
                    .filter(|(id, _)| (first..=last).contains(id))
                    .map(pick)
                    .collect()
            }
        };
        Ok(Response::ReadDeviceIdentification(
            ReadDeviceIdentificationResponse {
                read_code: code,
                conformity_level: ConformityLevel::RegularIdentification,
                more_follows: false,
                next_object_id: 0,
                device_id_objects: objects,
            },
        ))
    }
}

fn words(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
}

fn span<T>(
    table: &[T],
    address: u16,
    quantity: usize,
) -> Result<std::ops::Range<usize>, ExceptionCode> {
    let start = usize::from(address);
    let end = start + quantity;
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
    let r = span(table, address, usize::from(quantity))?;
    table
        .get(r)
        .map(<[T]>::to_vec)
        .ok_or(ExceptionCode::IllegalDataAddress)
}

fn write<T: Copy>(
    table: &mut [T],
    address: u16,
    values: &[T],
    max: usize,
) -> Result<(), ExceptionCode> {
    if values.is_empty() || values.len() > max {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let r = span(table, address, values.len())?;
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

/// The `tokio-modbus` service around a device's shared state.
#[derive(Clone, Debug)]
struct PlcService {
    state: Arc<Mutex<PlcState>>,
}

impl Service for PlcService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        ready(st.handle(req.slave, req.request))
    }
}

/// A running device: its spec, where it really listens and its state.
#[derive(Clone, Debug)]
pub struct PlcHandle {
    pub spec: Arc<PlcSpec>,
    /// The loopback address its server listens on.
    pub listen: SocketAddr,
    state: Arc<Mutex<PlcState>>,
    /// The data model and identity it started with (what [`Self::restore`] puts back).
    initial: Arc<(DataModel, Identity)>,
}

impl PlcHandle {
    /// The address the frames show for it.
    pub fn sim_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.spec.ip, MODBUS_PORT)
    }

    /// Runs `f` on the live state (a local action at the device: no network traffic).
    pub fn with_state<R>(&self, f: impl FnOnce(&mut PlcState) -> R) -> R {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut st)
    }

    /// Puts the set-points, commands and communication mode back as they were at start (a
    /// technician at the panel); the measurements and the identity are left as they are.
    pub fn restore(&self) {
        let (initial, _) = &*self.initial;
        self.with_state(|st| {
            st.data.coils.clone_from(&initial.coils);
            st.data.holding.clone_from(&initial.holding);
            st.data.discrete_inputs.clone_from(&initial.discrete_inputs);
            st.listen_only = false;
            st.silent = false;
        });
    }

    /// The identity it started with.
    pub fn initial_identity(&self) -> Identity {
        self.initial.1.clone()
    }
}

/// Starts `spec` on `127.0.0.1:0` with its process ticking every `tick` of real time, each
/// tick advancing the process by `tick_s` seconds of plant time. Returns the handle and the
/// server and tick tasks.
pub async fn start_plc(
    spec: PlcSpec,
    rng: Rng,
    tick: Duration,
    tick_s: f64,
) -> io::Result<(PlcHandle, Vec<JoinHandle<()>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let listen = listener.local_addr()?;
    let (process, data) = Process::new(spec.kind);
    let state = Arc::new(Mutex::new(PlcState {
        data: data.clone(),
        identity: spec.identity.clone(),
        silent: false,
        listen_only: false,
        process,
        rng,
        unit: spec.unit,
        holding_max: spec.holding_max,
        bus_messages: 0,
    }));
    let served = Arc::clone(&state);
    let server = tokio::spawn(async move {
        let server = Server::new(listener);
        let on_connected = move |stream, socket_addr| {
            let service = PlcService {
                state: Arc::clone(&served),
            };
            async move { accept_tcp_connection(stream, socket_addr, move |_| Ok(Some(service.clone()))) }
        };
        // Runs until aborted; a broken connection ends only itself.
        let _ = server.serve(&on_connected, |_err| {}).await;
    });
    let ticked = Arc::clone(&state);
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            ticked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .step(tick_s);
        }
    });
    let initial = Arc::new((data, spec.identity.clone()));
    let handle = PlcHandle {
        spec: Arc::new(spec),
        listen,
        state,
        initial,
    };
    Ok((handle, vec![server, ticker]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn state() -> PlcState {
        let spec = default_plcs().into_iter().next().unwrap();
        let (process, data) = Process::new(spec.kind);
        PlcState {
            data,
            identity: spec.identity,
            silent: false,
            listen_only: false,
            process,
            rng: Rng::new(1),
            unit: 1,
            holding_max: 1000,
            bus_messages: 0,
        }
    }

    #[test]
    fn force_listen_only_silences_until_restart() {
        let mut st = state();
        let listen_only = Request::Custom(8, vec![0, 4, 0, 0].into());
        assert_eq!(st.handle(1, listen_only), Ok(None));
        assert_eq!(st.handle(1, Request::ReadCoils(0, 1)), Ok(None));
        let restart = Request::Custom(8, vec![0, 1, 0, 0].into());
        assert!(matches!(st.handle(1, restart), Ok(Some(_))));
        assert!(matches!(
            st.handle(1, Request::ReadCoils(0, 1)),
            Ok(Some(_))
        ));
    }

    #[test]
    fn limits_and_units_answer_with_exceptions() {
        let mut st = state();
        assert_eq!(
            st.handle(1, Request::ReadHoldingRegisters(64, 1)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            st.handle(1, Request::WriteSingleRegister(0, 5000)),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            st.handle(7, Request::ReadCoils(0, 1)),
            Err(ExceptionCode::GatewayTargetDevice)
        );
        assert_eq!(
            st.handle(1, Request::Custom(66, vec![0, 0].into())),
            Err(ExceptionCode::IllegalFunction)
        );
    }
}
