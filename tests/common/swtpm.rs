//! A real TPM 2.0 simulator for tests: `swtpm` on free loopback ports, manufactured by
//! `swtpm_setup` with its own local CA (so EK certificates can be verified for real), stopped
//! when dropped.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the simulated TPM is manufactured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manufacture {
    /// No EK: the station creates one from the TCG template.
    Blank,
    /// An EK persisted at 0x81010001, no EK certificate.
    EkOnly,
    /// EK persisted and its certificate (signed by the local CA) in NV.
    EkWithCertificate,
}

pub struct Swtpm {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub tcti: String,
}

fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < 65_000 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free pair of loopback ports");
}

impl Swtpm {
    pub fn start(how: Manufacture) -> Swtpm {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let state = d.join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(
            d.join("localca.conf"),
            format!(
                "statedir = {0}/ca\nsigningkey = {0}/ca/signkey.pem\nissuercert = {0}/ca/issuercert.pem\ncertserial = {0}/ca/certserial\n",
                d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("setup.conf"),
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}/localca.conf\n\
                 create_certs_tool_options = /etc/swtpm-localca.options\nactive_pcr_banks = sha256\n",
                d.display()
            ),
        )
        .unwrap();
        let mut setup = Command::new("swtpm_setup");
        setup
            .args(["--tpm2", "--overwrite", "--tpmstate"])
            .arg(&state)
            .arg("--config")
            .arg(d.join("setup.conf"));
        match how {
            Manufacture::Blank => {}
            Manufacture::EkOnly => {
                setup.arg("--createek");
            }
            Manufacture::EkWithCertificate => {
                setup.arg("--create-ek-cert");
            }
        }
        let out = setup
            .output()
            .expect("swtpm_setup is installed (make test installs swtpm-tools)");
        assert!(
            out.status.success(),
            "swtpm_setup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port_pair();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--server"])
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm is installed (make test installs swtpm)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "swtpm did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The probe connection above was a whole session for swtpm; let it settle.
        std::thread::sleep(Duration::from_millis(50));
        Swtpm {
            child,
            port,
            tcti: format!("swtpm:host=127.0.0.1,port={port}"),
            dir,
        }
    }

    /// The local CA's root and issuer certificates: the "manufacturer" bundle.
    pub fn roots(&self) -> Vec<PathBuf> {
        let ca = self.dir.path().join("ca");
        vec![
            ca.join("swtpm-localca-rootca-cert.pem"),
            ca.join("issuercert.pem"),
        ]
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
