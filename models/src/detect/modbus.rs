//! What a Modbus transaction means for the detectors: the function's class (read, write,
//! diagnostics, ...), the data table and address range it touches, the values it carries.
//! Shared by every Modbus detector so that they agree on the data model.

use serde::{Deserialize, Serialize};

use super::alert::Severity;
use crate::event::{ModbusEvent, Values};

/// The four tables of the Modbus data model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Coils,
    DiscreteInputs,
    InputRegisters,
    HoldingRegisters,
}

/// What a function can do to a device, which is what a new one is weighted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionClass {
    Read,
    Write,
    /// Diagnostics (8): counters, restart, listen-only mode.
    Diagnostics,
    /// Device identification (43/14) and Report Server ID (17): fingerprinting.
    Identification,
    /// Vendor programming and firmware (90 UMAS, 125, 126): can replace the logic.
    Program,
    /// User-defined or unknown codes.
    Other,
}

impl FunctionClass {
    pub fn of(func: u8) -> FunctionClass {
        match func {
            1..=4 | 7 | 11 | 12 | 20 | 24 => FunctionClass::Read,
            5 | 6 | 15 | 16 | 21..=23 => FunctionClass::Write,
            8 => FunctionClass::Diagnostics,
            17 | 43 => FunctionClass::Identification,
            90 | 125 | 126 => FunctionClass::Program,
            _ => FunctionClass::Other,
        }
    }

    /// How serious a function of this class is when it is new on a path.
    pub fn novelty_severity(self) -> Severity {
        match self {
            FunctionClass::Read => Severity::Low,
            FunctionClass::Identification | FunctionClass::Other => Severity::Medium,
            FunctionClass::Write | FunctionClass::Diagnostics => Severity::High,
            FunctionClass::Program => Severity::Critical,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FunctionClass::Read => "read",
            FunctionClass::Write => "write",
            FunctionClass::Diagnostics => "diagnostics",
            FunctionClass::Identification => "identification",
            FunctionClass::Program => "program",
            FunctionClass::Other => "other",
        }
    }
}

/// Diagnostics sub-functions that take a device off the bus or restart it.
pub fn is_disruptive_diagnostic(ev: &ModbusEvent) -> bool {
    // 1 restart communications, 4 force listen-only mode.
    ev.func == 8
        && ev
            .request
            .as_ref()
            .and_then(|r| r.sub_function)
            .is_some_and(|s| s == 1 || s == 4)
}

/// The severity of a function on this event, diagnostics refined by sub-function and
/// broadcast writes raised (every device behind a gateway obeys them).
pub fn event_severity(ev: &ModbusEvent) -> Severity {
    let class = FunctionClass::of(ev.func);
    let mut sev = class.novelty_severity();
    if is_disruptive_diagnostic(ev) {
        sev = Severity::Critical;
    }
    if ev.unit == 0 && class != FunctionClass::Read {
        sev = sev.max(Severity::High);
    }
    sev
}

/// One contiguous access of a transaction to a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    pub table: Table,
    pub first: u16,
    pub last: u16,
    pub write: bool,
}

fn span(table: Table, address: u16, quantity: u16, write: bool) -> Option<Access> {
    let q = quantity.max(1);
    Some(Access {
        table,
        first: address,
        last: address.saturating_add(q - 1),
        write,
    })
}

/// The accesses of a request (at most two: function 23 reads and writes).
pub fn accesses(ev: &ModbusEvent) -> [Option<Access>; 2] {
    let Some(req) = ev.request.as_ref() else {
        return [None, None];
    };
    let a = req.address;
    let q = req.quantity;
    match ev.func {
        1 => [
            a.and_then(|a| span(Table::Coils, a, q.unwrap_or(1), false)),
            None,
        ],
        2 => [
            a.and_then(|a| span(Table::DiscreteInputs, a, q.unwrap_or(1), false)),
            None,
        ],
        3 => [
            a.and_then(|a| span(Table::HoldingRegisters, a, q.unwrap_or(1), false)),
            None,
        ],
        4 => [
            a.and_then(|a| span(Table::InputRegisters, a, q.unwrap_or(1), false)),
            None,
        ],
        5 => [a.and_then(|a| span(Table::Coils, a, 1, true)), None],
        6 | 22 => [
            a.and_then(|a| span(Table::HoldingRegisters, a, 1, true)),
            None,
        ],
        15 => [
            a.and_then(|a| span(Table::Coils, a, q.unwrap_or(1), true)),
            None,
        ],
        16 => [
            a.and_then(|a| span(Table::HoldingRegisters, a, q.unwrap_or(1), true)),
            None,
        ],
        24 => [
            a.and_then(|a| span(Table::HoldingRegisters, a, 1, false)),
            None,
        ],
        23 => [
            req.read_address.and_then(|a| {
                span(
                    Table::HoldingRegisters,
                    a,
                    req.read_quantity.unwrap_or(1),
                    false,
                )
            }),
            req.write_address.and_then(|a| {
                span(
                    Table::HoldingRegisters,
                    a,
                    req.write_quantity.unwrap_or(1),
                    true,
                )
            }),
        ],
        _ => [None, None],
    }
}

/// Register values read by the transaction: (first address, values). Coils are left out on
/// purpose (see the `values` module).
pub fn register_reads(ev: &ModbusEvent) -> Option<(Table, u16, &[u16])> {
    if ev.exception_code.is_some() {
        return None;
    }
    let req = ev.request.as_ref()?;
    let resp = ev.response.as_ref()?;
    let Some(Values::Registers(values)) = resp.values.as_ref() else {
        return None;
    };
    match ev.func {
        3 => Some((Table::HoldingRegisters, req.address?, values.as_slice())),
        4 => Some((Table::InputRegisters, req.address?, values.as_slice())),
        23 => Some((
            Table::HoldingRegisters,
            req.read_address?,
            values.as_slice(),
        )),
        _ => None,
    }
}

/// Register values written by the request: (first address, values).
pub fn register_writes(ev: &ModbusEvent) -> Option<(u16, &[u16])> {
    let req = ev.request.as_ref()?;
    match ev.func {
        6 | 16 => match req.values.as_ref()? {
            Values::Registers(v) => Some((req.address?, v.as_slice())),
            Values::Coils(_) => None,
        },
        23 => Some((req.write_address?, req.write_values.as_deref()?)),
        _ => None,
    }
}

/// The channel's start address and quantity, as a poll is identified by them.
pub fn address_quantity(ev: &ModbusEvent) -> (u16, u16) {
    match ev.request.as_ref() {
        Some(r) => (
            r.address.or(r.read_address).unwrap_or(0),
            r.quantity.or(r.read_quantity).unwrap_or(0),
        ),
        None => (0, 0),
    }
}
