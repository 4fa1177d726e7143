//! Real Prometheus and Alertmanager servers for end-to-end tests: each started on a free
//! loopback port with its data in a given folder, waited for until ready, killed when dropped.
//! Whether a test may skip without them is the test's business ([`installed`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's `prometheus-alertmanager`.
pub const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
/// Debian's `prometheus`.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A server process, killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `binary` is there. When it is not: panics if the environment variable `require`
/// is `1` (CI), else prints why the test skips and returns false.
pub fn installed(binary: &str, require: &str) -> bool {
    if Path::new(binary).exists() {
        return true;
    }
    if std::env::var(require).as_deref() == Ok("1") {
        panic!("{require}=1 but {binary} is missing");
    }
    println!("skipping: {binary} is missing");
    false
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One plain HTTP/1.0 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn start(mut command: Command, addr: SocketAddr, what: &str) -> std::io::Result<Server> {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let server = Server { child, addr };
    let end = Instant::now() + Duration::from_secs(30);
    while !http_get(addr, "/-/ready").is_ok_and(|(status, _)| status == 200) {
        if Instant::now() > end {
            return Err(std::io::Error::other(format!(
                "{what} not ready after 30 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(server)
}

/// A real Alertmanager with one receiver that sends nowhere, data in `dir`.
pub fn alertmanager(dir: &Path) -> std::io::Result<Server> {
    std::fs::write(
        dir.join("alertmanager.yml"),
        "route:\n  receiver: soc\nreceivers:\n  - name: soc\n",
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut c = Command::new(ALERTMANAGER);
    c.arg(format!(
        "--config.file={}",
        dir.join("alertmanager.yml").display()
    ))
    .arg(format!("--storage.path={}", dir.join("am-data").display()))
    .arg(format!("--web.listen-address={addr}"))
    .arg("--cluster.listen-address=")
    .arg("--log.level=warn");
    start(c, addr, "Alertmanager")
}

/// A real Prometheus scraping `target` (job `mamori-collector`) every second, data in `dir`.
pub fn prometheus(dir: &Path, target: SocketAddr) -> std::io::Result<Server> {
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: mamori-collector\n    static_configs:\n      \
             - targets: ['{target}']\n"
        ),
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut c = Command::new(PROMETHEUS);
    c.arg(format!(
        "--config.file={}",
        dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.join("tsdb").display()
    ))
    .arg(format!("--web.listen-address={addr}"));
    start(c, addr, "Prometheus")
}
