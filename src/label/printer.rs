//! Sending one ZPL job to a printer: raw TCP (Zebra-compatible, port 9100), CUPS through
//! `lp -o raw`, or a `.zpl` file in a directory. Each send is bounded by a timeout and either
//! hands the whole job over or fails with `label.printer_unavailable`, naming the printer. It
//! never retries: the station's queue decides when to try again.

use super::Label;
use crate::config::PrinterAddress;
use crate::error::{Error, ErrorCode, Result};
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The CUPS client used for `cups:QUEUE` (found on `PATH`).
pub const LP: &str = "lp";

/// How often a running `lp` is checked for having finished.
const LP_POLL: Duration = Duration::from_millis(20);

/// Send `label` to `printer`; a `file:` directory is relative to `base_dir`.
pub fn send(
    printer: &PrinterAddress,
    base_dir: &Path,
    label: &Label,
    timeout: Duration,
) -> Result<()> {
    let unavailable = |why: String| Error::Label {
        code: ErrorCode::LabelPrinterUnavailable,
        message: format!(
            "printer {printer} did not take the label of {}: {why}",
            label.registration_id
        ),
    };
    match printer {
        PrinterAddress::ZplTcp { host, port } => {
            tcp(host, *port, label.zpl.as_bytes(), timeout).map_err(unavailable)
        }
        PrinterAddress::Cups { queue } => lp(queue, label, timeout).map_err(unavailable),
        PrinterAddress::File { dir } => {
            let dir = if dir.is_absolute() {
                dir.clone()
            } else {
                base_dir.join(dir)
            };
            file(&dir, label).map_err(|e| unavailable(format!("{}: {e}", dir.display())))
        }
    }
}

/// One connection per label: connect, write the whole job, close our side.
fn tcp(host: &str, port: u16, job: &[u8], timeout: Duration) -> std::result::Result<(), String> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last = format!("{host} has no address");
    for addr in addrs {
        let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => s,
            Err(e) => {
                last = format!("connecting to {addr}: {e}");
                continue;
            }
        };
        stream
            .set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(job)
            .and_then(|()| stream.flush())
            .map_err(|e| format!("sending to {addr}: {e}"))?;
        // The printer sees the end of the job; nothing is read back (raw port).
        let _ = stream.shutdown(std::net::Shutdown::Write);
        return Ok(());
    }
    Err(last)
}

/// `lp -d QUEUE -o raw -t ID`, the job on standard input, bounded by `timeout`.
fn lp(queue: &str, label: &Label, timeout: Duration) -> std::result::Result<(), String> {
    let mut child = Command::new(LP)
        .args(["-d", queue, "-o", "raw", "-t", &label.registration_id])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{LP}` (install cups-client): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(label.zpl.as_bytes())
            .map_err(|e| format!("writing to `{LP}`: {e}"))?;
    }
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(format!("`{LP}` exited with {status}: {}", err.trim()));
            }
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{LP}` did not finish within {timeout:?}"));
            }
            None => std::thread::sleep(LP_POLL),
        }
    }
}

/// `DIR/<UTC time>-<registration ID>.zpl`, written under a temporary name and renamed, so a
/// reader of the directory never sees half a label.
fn file(dir: &Path, label: &Label) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stamp: String = humantime::format_rfc3339_millis(std::time::SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let base = format!("{stamp}-{}", label.registration_id);
    let mut name = format!("{base}.zpl");
    let mut n = 1;
    while dir.join(&name).exists() {
        n += 1;
        name = format!("{base}-{n}.zpl");
    }
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(label.zpl.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label() -> Label {
        Label {
            registration_id: "dev-1".into(),
            zpl: "^XA^FDdev-1^FS^XZ".into(),
        }
    }

    #[test]
    fn label_file_printer_writes_one_file_per_label() {
        let dir = tempfile::tempdir().unwrap();
        let printer = PrinterAddress::File { dir: "out".into() };
        for _ in 0..2 {
            send(&printer, dir.path(), &label(), Duration::from_secs(1)).unwrap();
        }
        let files: Vec<_> = std::fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(
            files
                .iter()
                .all(|f| f.ends_with(".zpl") && f.contains("dev-1"))
        );
    }

    #[test]
    fn label_tcp_printer_that_refuses_is_unavailable_naming_it() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let printer = PrinterAddress::ZplTcp {
            host: "127.0.0.1".into(),
            port,
        };
        let e = send(&printer, Path::new("."), &label(), Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::LabelPrinterUnavailable);
        assert!(
            e.to_string()
                .contains(&format!("zpl-tcp://127.0.0.1:{port}")),
            "{e}"
        );
    }
}
