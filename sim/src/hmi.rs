//! The legitimate side of the plant: the HMI polling each device on fixed cycles over one
//! connection per device, the operator making occasional set-point writes within the normal
//! range through the HMI, and the engineering workstation reading device identification
//! (43/14) now and then, one short connection per read, as an asset tool does.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_modbus::prelude::{ExceptionCode, ReadCode, Request, Response};

use crate::client::ModbusClient;
use crate::error::SimError;
use crate::plc::PlcHandle;
use crate::process::{feeder, pumps, tank};
use crate::rng::Rng;
use crate::tap::Tap;

/// A Modbus table a poll reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Coils,
    DiscreteInputs,
    HoldingRegisters,
    InputRegisters,
}

impl Table {
    fn request(self, address: u16, quantity: u16) -> Request<'static> {
        match self {
            Table::Coils => Request::ReadCoils(address, quantity),
            Table::DiscreteInputs => Request::ReadDiscreteInputs(address, quantity),
            Table::HoldingRegisters => Request::ReadHoldingRegisters(address, quantity),
            Table::InputRegisters => Request::ReadInputRegisters(address, quantity),
        }
    }
}

/// One poll the HMI repeats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PollChannel {
    /// Index of the device in the plant's device list.
    pub plc: usize,
    pub table: Table,
    pub address: u16,
    pub quantity: u16,
    /// The cycle, in plant time.
    pub period: Duration,
}

/// The HMI's polls: process values every second, commands and settings every two.
pub fn default_channels() -> Vec<PollChannel> {
    let ch = |plc, table, address, quantity, secs| PollChannel {
        plc,
        table,
        address,
        quantity,
        period: Duration::from_secs(secs),
    };
    vec![
        ch(0, Table::InputRegisters, tank::IR_LEVEL, 4, 1),
        ch(0, Table::Coils, tank::CO_PUMP, 3, 1),
        ch(0, Table::HoldingRegisters, tank::HR_LEVEL_SETPOINT, 3, 2),
        ch(1, Table::InputRegisters, feeder::IR_CURRENT, 6, 1),
        ch(1, Table::Coils, feeder::CO_BREAKER, feeder::FEEDERS, 2),
        ch(1, Table::DiscreteInputs, 0, 5, 2),
        ch(2, Table::InputRegisters, pumps::IR_PRESSURE, 5, 1),
        ch(2, Table::Coils, pumps::CO_PUMP, 4, 2),
        ch(
            2,
            Table::HoldingRegisters,
            pumps::HR_PRESSURE_SETPOINT,
            2,
            2,
        ),
    ]
}

/// A set-point the operator adjusts: device index, holding register, normal range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct OperatorSetpoint {
    pub plc: usize,
    pub address: u16,
    pub min: u16,
    pub max: u16,
}

pub fn default_operator_setpoints() -> Vec<OperatorSetpoint> {
    vec![
        OperatorSetpoint {
            plc: 0,
            address: tank::HR_LEVEL_SETPOINT,
            min: tank::OPERATOR_RANGE.0,
            max: tank::OPERATOR_RANGE.1,
        },
        OperatorSetpoint {
            plc: 2,
            address: pumps::HR_PRESSURE_SETPOINT,
            min: pumps::OPERATOR_RANGE.0,
            max: pumps::OPERATOR_RANGE.1,
        },
    ]
}

/// The outcome of a request: the response or the exception, or why there was none.
pub type CallResult = Result<Result<Response, ExceptionCode>, SimError>;

/// A request sent on the HMI's own connection to a device (operator actions, and a
/// compromised HMI in the scenarios).
#[derive(Debug)]
pub struct HmiCommand {
    pub request: Request<'static>,
    pub done: oneshot::Sender<CallResult>,
}

/// Sends `request` on the HMI connection behind `tx` and waits for its outcome.
pub async fn hmi_call(tx: &mpsc::Sender<HmiCommand>, request: Request<'static>) -> CallResult {
    let (done, rx) = oneshot::channel();
    tx.send(HmiCommand { request, done })
        .await
        .map_err(|_| SimError::ShutDown)?;
    rx.await.map_err(|_| SimError::ShutDown)?
}

/// One poll as the HMI task runs it (real time).
#[derive(Clone, Debug)]
pub(crate) struct Poll {
    pub table: Table,
    pub address: u16,
    pub quantity: u16,
    pub period: Duration,
}

/// The HMI's loop for one device: polls on their cycles (no drift: each is due a whole number
/// of periods after its start, a late one is skipped), commands in between. After a failed
/// request it waits `reconnect_delay` before trying again; the polls due meanwhile are missed.
pub(crate) async fn run_hmi(
    mut client: ModbusClient,
    polls: Vec<Poll>,
    reconnect_delay: Duration,
    mut commands: mpsc::Receiver<HmiCommand>,
    mut shutdown: watch::Receiver<bool>,
) {
    let unit = client.plc().spec.unit;
    let start = Instant::now();
    // Staggered so that the channels of one device do not all fire in the same instant.
    let mut due: Vec<Instant> = (0..polls.len())
        .map(|i| start + Duration::from_millis(15 * i as u64))
        .collect();
    let mut retry_at: Option<Instant> = None;
    loop {
        let next = due
            .iter()
            .min()
            .copied()
            .unwrap_or(start + Duration::from_secs(1));
        tokio::select! {
            _ = shutdown.changed() => break,
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { break };
                let result = client.call(unit, cmd.request).await;
                let _ = cmd.done.send(result);
            }
            () = tokio::time::sleep_until(next) => {
                let now = Instant::now();
                for (poll, at) in polls.iter().zip(due.iter_mut()) {
                    if *at > now {
                        continue;
                    }
                    while *at <= now {
                        *at += poll.period;
                    }
                    if retry_at.is_some_and(|t| now < t) {
                        continue;
                    }
                    let request = poll.table.request(poll.address, poll.quantity);
                    match client.call(unit, request).await {
                        Ok(_) => retry_at = None,
                        Err(e) => {
                            tracing::debug!(plc = %client.plc().spec.name, error = %e, "poll failed");
                            retry_at = Some(Instant::now() + reconnect_delay);
                        }
                    }
                }
            }
        }
    }
    client.close().await;
}

/// The operator: every `gap` (uniform between the bounds, real time) one set-point written
/// through the HMI, to a value in its normal range.
pub(crate) async fn run_operator(
    hmi: Vec<mpsc::Sender<HmiCommand>>,
    setpoints: Vec<OperatorSetpoint>,
    gap: (Duration, Duration),
    mut rng: Rng,
    mut shutdown: watch::Receiver<bool>,
) {
    if setpoints.is_empty() {
        return;
    }
    loop {
        let wait = Duration::from_secs_f64(rng.range_f64(gap.0.as_secs_f64(), gap.1.as_secs_f64()));
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let pick = usize::try_from(rng.next_u64() % setpoints.len() as u64).unwrap_or(0);
        let Some(sp) = setpoints.get(pick) else {
            continue;
        };
        let value = rng.range_u16(sp.min, sp.max);
        if let Some(tx) = hmi.get(sp.plc) {
            let outcome = hmi_call(tx, Request::WriteSingleRegister(sp.address, value)).await;
            tracing::debug!(
                plc = sp.plc,
                address = sp.address,
                value,
                ok = outcome.is_ok(),
                "operator write"
            );
        }
    }
}

/// Reads the basic device identification (vendor, product code, revision) of every device
/// from `ip`, one connection each. Returns the revisions read.
pub async fn read_identities(
    tap: &Arc<Tap>,
    ip: Ipv4Addr,
    plcs: &[PlcHandle],
    timeout: Duration,
) -> Vec<Option<String>> {
    let mut out = Vec::with_capacity(plcs.len());
    for plc in plcs {
        let mut client = ModbusClient::new(Arc::clone(tap), ip, plc.clone(), timeout);
        let request = Request::ReadDeviceIdentification(ReadCode::Basic, 0x00);
        let revision = match client.call(plc.spec.unit, request).await {
            Ok(Ok(Response::ReadDeviceIdentification(r))) => r
                .device_id_objects
                .iter()
                .find(|o| o.id == 0x02)
                .map(|o| String::from_utf8_lossy(&o.value).into_owned()),
            _ => None,
        };
        client.close().await;
        out.push(revision);
    }
    out
}

/// The engineering workstation's inventory: identities read at start and every `period`.
pub(crate) async fn run_inventory(
    tap: Arc<Tap>,
    ip: Ipv4Addr,
    plcs: Vec<PlcHandle>,
    period: Duration,
    timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        read_identities(&tap, ip, &plcs, timeout).await;
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}
