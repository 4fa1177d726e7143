//! Datagrams the kernel dropped on the UDP listener's socket, read from procfs.
//!
//! UDP cannot push back: when the socket's receive buffer is full the kernel drops the
//! datagram before the receiver sees it (a third of a 2 million datagram flood once vanished
//! that way, in no metric). Linux counts those drops per socket (`sk_drops`) and shows them in
//! the `drops` column of `/proc/net/udp` and `/proc/net/udp6`, on the row of the socket's inode.
//! The inode is taken once at start (`fstat` on a duplicate of the socket's descriptor, all safe
//! std calls); the tables are read when Prometheus scrapes, never on the receive path.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

/// The inode of a socket, as `/proc/net/*` shows it; `None` if it cannot be had.
pub(crate) fn socket_inode(sock: &impl AsFd) -> Option<u64> {
    let fd = sock.as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some(meta.ino())
}

/// The kernel's drop count of the UDP socket with `inode`; `None` where procfs is not
/// available or the socket is not listed (it was closed).
pub(crate) fn udp_socket_drops(inode: u64) -> Option<u64> {
    ["/proc/net/udp", "/proc/net/udp6"].iter().find_map(|path| {
        let table = std::fs::read_to_string(path).ok()?;
        drops_in_table(&table, inode)
    })
}

/// Columns of `/proc/net/udp` (see `udp4_format_sock` in Linux's `net/ipv4/udp.c`): `sl
/// local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ref
/// pointer drops`.
const INODE_COLUMN: usize = 9;
const DROPS_COLUMN: usize = 12;

fn drops_in_table(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        let ino: u64 = cols.clone().nth(INODE_COLUMN)?.parse().ok()?;
        if ino != inode {
            return None;
        }
        cols.nth(DROPS_COLUMN)?.parse().ok()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Two rows of a real `/proc/net/udp` (Linux 6.x), the second with drops.
    const TABLE: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 0100007F:0202 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 41234 2 0000000000000000 0
  456: 00000000:D431 00000000:0000 07 00000000:00034100 00:00000000 00000000  1000        0 98765 2 0000000000000000 667
";

    #[test]
    fn drops_are_read_from_the_row_of_the_inode() {
        assert_eq!(drops_in_table(TABLE, 98765), Some(667));
        assert_eq!(drops_in_table(TABLE, 41234), Some(0));
        assert_eq!(drops_in_table(TABLE, 1), None);
    }

    #[test]
    fn a_real_socket_is_found_with_no_drops() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inode = socket_inode(&sock).unwrap();
        if std::path::Path::new("/proc/net/udp").exists() {
            assert_eq!(udp_socket_drops(inode), Some(0));
        }
        let v6 = std::net::UdpSocket::bind("[::1]:0");
        if let Ok(v6) = v6
            && std::path::Path::new("/proc/net/udp6").exists()
        {
            assert_eq!(udp_socket_drops(socket_inode(&v6).unwrap()), Some(0));
        }
    }
}
