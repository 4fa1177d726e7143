//! Bounded IPv4 fragment reassembly. A datagram is held until every byte from offset 0 to the
//! end announced by the last fragment has arrived; the number of datagrams in progress, their
//! total bytes and their age are all capped, and what is given up is counted.

use std::collections::HashMap;
use std::net::IpAddr;

use mamori_models::Timestamp;

/// Limits of the reassembly table.
#[derive(Clone, Copy, Debug)]
pub struct DefragLimits {
    pub max_datagrams: usize,
    pub max_bytes: usize,
    pub timeout_us: i64,
}

impl Default for DefragLimits {
    fn default() -> Self {
        DefragLimits {
            max_datagrams: 1024,
            max_bytes: 4 * 1024 * 1024,
            timeout_us: 30_000_000,
        }
    }
}

/// Why fragments were given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefragDrop {
    /// The table was full (datagrams or bytes).
    TableFull,
    /// A fragment would make the datagram larger than 65535 bytes.
    Oversized,
    /// The datagram was not complete within the timeout.
    Timeout,
}

/// What one fragment led to.
#[derive(Debug, PartialEq, Eq)]
pub enum DefragOutcome {
    /// Held, waiting for the rest.
    Pending,
    /// The whole transport payload of the datagram.
    Complete { protocol: u8, payload: Vec<u8> },
    /// Given up (and the datagram's fragments with it).
    Dropped(DefragDrop),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    id: u16,
    protocol: u8,
}

#[derive(Debug)]
struct Datagram {
    first_ts: Timestamp,
    parts: Vec<(u32, Vec<u8>)>,
    end: Option<u32>,
    bytes: usize,
}

/// IPv4 fragment reassembly table.
#[derive(Debug, Default)]
pub struct Defragmenter {
    limits: DefragLimits,
    table: HashMap<Key, Datagram>,
    bytes: usize,
}

const MAX_DATAGRAM: u32 = 65_535;

impl Defragmenter {
    pub fn new(limits: DefragLimits) -> Self {
        Defragmenter {
            limits,
            table: HashMap::new(),
            bytes: 0,
        }
    }

    /// Datagrams in progress.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Adds one fragment.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        ts: Timestamp,
        src: IpAddr,
        dst: IpAddr,
        id: u16,
        protocol: u8,
        offset: u32,
        more_fragments: bool,
        payload: &[u8],
    ) -> DefragOutcome {
        let key = Key {
            src,
            dst,
            id,
            protocol,
        };
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let Some(end) = offset.checked_add(len).filter(|&e| e <= MAX_DATAGRAM) else {
            self.remove(&key);
            return DefragOutcome::Dropped(DefragDrop::Oversized);
        };
        if !self.table.contains_key(&key)
            && (self.table.len() >= self.limits.max_datagrams
                || self.bytes + payload.len() > self.limits.max_bytes)
        {
            return DefragOutcome::Dropped(DefragDrop::TableFull);
        }
        if self.bytes + payload.len() > self.limits.max_bytes {
            self.remove(&key);
            return DefragOutcome::Dropped(DefragDrop::TableFull);
        }
        let entry = self.table.entry(key).or_insert_with(|| Datagram {
            first_ts: ts,
            parts: Vec::new(),
            end: None,
            bytes: 0,
        });
        entry.parts.push((offset, payload.to_vec()));
        entry.bytes += payload.len();
        self.bytes += payload.len();
        if !more_fragments {
            entry.end = Some(end);
        }
        let Some(total) = entry.end else {
            return DefragOutcome::Pending;
        };
        entry.parts.sort_by_key(|(o, _)| *o);
        let mut covered = 0u32;
        for (o, data) in &entry.parts {
            if *o > covered {
                return DefragOutcome::Pending;
            }
            covered = covered.max(o + u32::try_from(data.len()).unwrap_or(0));
        }
        if covered < total {
            return DefragOutcome::Pending;
        }
        let Some(datagram) = self.table.remove(&key) else {
            return DefragOutcome::Pending;
        };
        self.bytes = self.bytes.saturating_sub(datagram.bytes);
        // Overlaps resolve in favour of the data that arrived at the lower offset first.
        let mut payload = Vec::with_capacity(total as usize);
        for (o, data) in datagram.parts {
            let have = payload.len();
            let skip = have.saturating_sub(o as usize);
            if let Some(tail) = data.get(skip..) {
                payload.extend_from_slice(tail);
            }
        }
        payload.truncate(total as usize);
        DefragOutcome::Complete { protocol, payload }
    }

    /// Drops datagrams older than the timeout; returns how many.
    pub fn expire(&mut self, now: Timestamp) -> usize {
        let before = self.table.len();
        let timeout = self.limits.timeout_us;
        let mut freed = 0;
        self.table.retain(|_, d| {
            let keep = now.as_micros().saturating_sub(d.first_ts.as_micros()) <= timeout;
            if !keep {
                freed += d.bytes;
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
        before - self.table.len()
    }

    fn remove(&mut self, key: &Key) {
        if let Some(d) = self.table.remove(key) {
            self.bytes = self.bytes.saturating_sub(d.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(d: &mut Defragmenter, offset: u32, more: bool, data: &[u8]) -> DefragOutcome {
        d.push(
            Timestamp::from_micros(0),
            [1, 1, 1, 1].into(),
            [2, 2, 2, 2].into(),
            7,
            17,
            offset,
            more,
            data,
        )
    }

    #[test]
    fn reassembles_out_of_order_fragments() {
        let mut d = Defragmenter::new(DefragLimits::default());
        assert_eq!(push(&mut d, 8, false, b"IJKL"), DefragOutcome::Pending);
        assert_eq!(
            push(&mut d, 0, true, b"ABCDEFGH"),
            DefragOutcome::Complete {
                protocol: 17,
                payload: b"ABCDEFGHIJKL".to_vec()
            }
        );
        assert!(d.is_empty());
    }

    #[test]
    fn bounded_and_expiring() {
        let mut d = Defragmenter::new(DefragLimits {
            max_datagrams: 1,
            max_bytes: 16,
            timeout_us: 10,
        });
        assert_eq!(push(&mut d, 0, true, b"ABCDEFGH"), DefragOutcome::Pending);
        let other = d.push(
            Timestamp::from_micros(0),
            [9, 9, 9, 9].into(),
            [2, 2, 2, 2].into(),
            1,
            17,
            0,
            true,
            b"x",
        );
        assert_eq!(other, DefragOutcome::Dropped(DefragDrop::TableFull));
        assert_eq!(
            push(&mut d, 65_530, false, b"0123456789"),
            DefragOutcome::Dropped(DefragDrop::Oversized)
        );
        assert_eq!(push(&mut d, 0, true, b"ABCDEFGH"), DefragOutcome::Pending);
        assert_eq!(d.expire(Timestamp::from_micros(100)), 1);
        assert!(d.is_empty());
    }
}
