//! A recording TCP proxy: it sits between a client and a server on loopback, forwards both
//! directions unchanged and records every read with its direction and time. The recording is
//! the "capture" the golden pcaps are built from: the application bytes exactly as they
//! crossed the connection, observed by our own code rather than by a capture tool.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::pcapgen::{Message, Side};

/// One read from one side of the proxied connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Who sent the bytes.
    pub from: Side,
    /// Microseconds since the proxy accepted the connection.
    pub at_us: u64,
    pub bytes: Vec<u8>,
}

/// Everything that crossed one proxied connection, in the order the proxy read it. Bytes are
/// recorded before they are forwarded, so a response is always recorded after its request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recording {
    pub chunks: Vec<Chunk>,
}

impl Recording {
    /// The bytes one side sent, concatenated.
    pub fn stream(&self, from: Side) -> Vec<u8> {
        self.chunks
            .iter()
            .filter(|c| c.from == from)
            .flat_map(|c| c.bytes.iter().copied())
            .collect()
    }

    /// The recording cut into Modbus/TCP ADUs (by the MBAP length field), in the order their
    /// last byte was read. A trailing partial ADU is returned as its own message.
    pub fn adus(&self) -> Vec<Message> {
        let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        let mut out = Vec::new();
        for chunk in &self.chunks {
            let idx = usize::from(chunk.from == Side::Server);
            let Some(buf) = pending.get_mut(idx) else {
                continue;
            };
            buf.extend_from_slice(&chunk.bytes);
            while let Some(n) = adu_len(buf).filter(|&n| buf.len() >= n) {
                let rest = buf.split_off(n);
                out.push(Message {
                    from: chunk.from,
                    bytes: std::mem::replace(buf, rest),
                });
            }
        }
        for (idx, buf) in pending.into_iter().enumerate() {
            if !buf.is_empty() {
                out.push(Message {
                    from: if idx == 0 { Side::Client } else { Side::Server },
                    bytes: buf,
                });
            }
        }
        out
    }
}

/// The length of the ADU at the start of `buf` (header included), once the header is there.
fn adu_len(buf: &[u8]) -> Option<usize> {
    let len = u16::from_be_bytes([*buf.get(4)?, *buf.get(5)?]);
    Some(6 + usize::from(len))
}

/// Listens on `127.0.0.1:0` and proxies the first connection to `upstream`. Returns the
/// address to connect to and a task that ends, with the recording, when both directions have
/// closed.
pub async fn record_proxy(
    upstream: SocketAddr,
) -> io::Result<(SocketAddr, JoinHandle<io::Result<Recording>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let (client, _) = listener.accept().await?;
        let server = TcpStream::connect(upstream).await?;
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        let start = Instant::now();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (client_rx, client_tx) = client.into_split();
        let (server_rx, server_tx) = server.into_split();
        let up = pump(client_rx, server_tx, Side::Client, Arc::clone(&log), start);
        let down = pump(server_rx, client_tx, Side::Server, Arc::clone(&log), start);
        let (a, b) = tokio::join!(up, down);
        a?;
        b?;
        let chunks = std::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(Recording { chunks })
    });
    Ok((addr, task))
}

async fn pump(
    mut rx: OwnedReadHalf,
    mut tx: OwnedWriteHalf,
    from: Side,
    log: Arc<Mutex<Vec<Chunk>>>,
    start: Instant,
) -> io::Result<()> {
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match rx.read(&mut buf).await {
            Ok(n) => n,
            // A reset after the dialogue is over ends the direction like a FIN.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(e),
        };
        let Some(bytes) = buf.get(..n).filter(|b| !b.is_empty()) else {
            // The peer closed: pass the close on (the other side may already be gone).
            let _ = tx.shutdown().await;
            return Ok(());
        };
        let at_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        log.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Chunk {
                from,
                at_us,
                bytes: bytes.to_vec(),
            });
        tx.write_all(bytes).await?;
    }
}
