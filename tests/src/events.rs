//! Events built the way the agent writes them, for the plants generated in simulated time
//! ([`crate::scenario`], [`crate::scenario_syslog`], [`crate::plants`]): one Modbus transaction,
//! one flow, one syslog message. Function and exception names come from the agent's own tables,
//! so a generated event reads like a replayed one.

use std::borrow::Cow;
use std::net::IpAddr;

use mamori_agent::proto::modbus::names;
use mamori_models::{
    Anomaly, Event, FlowEvent, ModbusEvent, ModbusPdu, SyslogEvent, SyslogFormat, Timestamp,
    Transport,
};

/// One second in microseconds, the unit of every generated time.
pub const SEC: i64 = 1_000_000;

pub fn ts(us: i64) -> Timestamp {
    Timestamp::from_micros(us)
}

/// Zeek's name for a function, `unknown-<n>` when it has none (as the agent writes it).
pub fn function_name(func: u8) -> Cow<'static, str> {
    names::function_name(func).map_or_else(|| Cow::Owned(format!("unknown-{func}")), Cow::Borrowed)
}

/// One Modbus/TCP transaction. No response means the request went unanswered.
#[derive(Clone, Debug)]
pub struct Transaction {
    pub client: IpAddr,
    pub client_port: u16,
    pub server: IpAddr,
    pub server_port: u16,
    pub tid: u16,
    pub unit: u8,
    pub func: u8,
    pub request: ModbusPdu,
    pub response: Option<ModbusPdu>,
    /// The exception code when the response is an exception.
    pub exception: Option<u8>,
}

impl Transaction {
    pub fn into_event(self) -> Event {
        let latency_us = self
            .response
            .as_ref()
            .and_then(|r| r.ts.micros_since(self.request.ts));
        let anomalies = if self.response.is_none() {
            vec![Anomaly::UnansweredRequest]
        } else {
            Vec::new()
        };
        Event::Modbus(ModbusEvent {
            ts: self.request.ts,
            src_ip: self.client,
            src_port: self.client_port,
            dst_ip: self.server,
            dst_port: self.server_port,
            tid: self.tid,
            unit: self.unit,
            func: self.func,
            func_name: function_name(self.func),
            request: Some(self.request),
            response: self.response,
            exception: self
                .exception
                .map(|c| Cow::Borrowed(names::exception_name(c).unwrap_or("UNKNOWN"))),
            exception_code: self.exception,
            latency_us,
            anomalies,
        })
    }
}

/// A flow with no packets counted yet: set the counts and the service with struct update.
pub fn flow(
    transport: Transport,
    (t, end): (i64, i64),
    (src_ip, src_port): (IpAddr, u16),
    (dst_ip, dst_port): (IpAddr, u16),
    state: &'static str,
    reason: &'static str,
) -> FlowEvent {
    FlowEvent {
        ts: ts(t),
        end_ts: ts(end),
        transport,
        src_ip,
        src_port,
        dst_ip,
        dst_port,
        service: None,
        orig_pkts: 0,
        orig_bytes: 0,
        resp_pkts: 0,
        resp_bytes: 0,
        state: Cow::Borrowed(state),
        reason: Cow::Borrowed(reason),
        anomalies: Vec::new(),
    }
}

/// Who logs, and how: an RFC 5424 sender.
#[derive(Clone, Copy, Debug)]
pub struct LogSource<'a> {
    pub hostname: &'a str,
    pub ip: IpAddr,
    pub app: &'a str,
    pub procid: Option<&'a str>,
    pub facility: u8,
    pub severity: u8,
}

impl LogSource<'_> {
    /// One message sent at `t` (µs), received at once, from port 514.
    pub fn message(&self, t: i64, msg: String) -> Event {
        Event::Syslog(SyslogEvent {
            ts: ts(t),
            received_ts: ts(t),
            src_ip: Some(self.ip),
            src_port: Some(514),
            format: SyslogFormat::Rfc5424,
            priority: Some(self.facility * 8 + self.severity),
            facility: Some(self.facility),
            severity: Some(self.severity),
            version: Some(1),
            timestamp: None,
            hostname: Some(self.hostname.to_owned()),
            app_name: Some(self.app.to_owned()),
            procid: self.procid.map(str::to_owned),
            msgid: None,
            structured_data: None,
            msg: Some(msg),
            anomalies: Vec::new(),
        })
    }
}
