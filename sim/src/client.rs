//! A Modbus/TCP client of a simulated host: a `tokio-modbus` context over a connection through
//! the tap. A request that times out or fails drops the connection (the next request opens a
//! new one), as HMIs and scanners do after a lost response.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio_modbus::client::{Client as _, Context};
use tokio_modbus::prelude::{ExceptionCode, Request, Response, Slave, SlaveContext as _};

use crate::error::SimError;
use crate::plc::PlcHandle;
use crate::tap::Tap;

/// One host's connection to one device.
pub struct ModbusClient {
    tap: Arc<Tap>,
    ip: Ipv4Addr,
    plc: PlcHandle,
    timeout: Duration,
    ctx: Option<Context>,
}

impl std::fmt::Debug for ModbusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusClient")
            .field("ip", &self.ip)
            .field("plc", &self.plc.spec.name)
            .field("connected", &self.ctx.is_some())
            .finish()
    }
}

impl ModbusClient {
    /// A client from the simulated address `ip`; it connects on first use.
    pub fn new(tap: Arc<Tap>, ip: Ipv4Addr, plc: PlcHandle, timeout: Duration) -> Self {
        ModbusClient {
            tap,
            ip,
            plc,
            timeout,
            ctx: None,
        }
    }

    pub fn plc(&self) -> &PlcHandle {
        &self.plc
    }

    pub fn is_connected(&self) -> bool {
        self.ctx.is_some()
    }

    /// Opens the connection if it is not open.
    pub async fn connect(&mut self) -> Result<(), SimError> {
        if self.ctx.is_none() {
            let stream = self
                .tap
                .connect(self.ip, self.plc.sim_addr(), self.plc.listen)
                .await?;
            self.ctx = Some(tokio_modbus::client::tcp::attach_slave(
                stream,
                Slave(self.plc.spec.unit),
            ));
        }
        Ok(())
    }

    /// Sends `request` to `unit` and waits for the response (an exception is a value).
    pub async fn call(
        &mut self,
        unit: u8,
        request: Request<'static>,
    ) -> Result<Result<Response, ExceptionCode>, SimError> {
        self.call_within(unit, request, self.timeout).await
    }

    /// Like [`Self::call`] with its own timeout.
    pub async fn call_within(
        &mut self,
        unit: u8,
        request: Request<'static>,
        timeout: Duration,
    ) -> Result<Result<Response, ExceptionCode>, SimError> {
        self.connect().await?;
        let Some(ctx) = self.ctx.as_mut() else {
            return Err(SimError::ShutDown);
        };
        ctx.set_slave(Slave(unit));
        match tokio::time::timeout(timeout, ctx.call(request)).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => {
                self.ctx = None;
                Err(SimError::Modbus(e))
            }
            Err(_) => {
                // The response may still come: a new connection keeps it from being read as
                // the answer to the next request.
                self.ctx = None;
                Err(SimError::Timeout(timeout))
            }
        }
    }

    /// Closes the connection (FIN from the client).
    pub async fn close(&mut self) {
        if let Some(mut ctx) = self.ctx.take() {
            let _ = ctx.disconnect().await;
        }
    }
}
