//! A real PostgreSQL server for tests: a throwaway cluster (initdb in a temp dir, a free
//! loopback port and a unix socket in that dir, `fsync=off`), run as a non-root user since
//! PostgreSQL refuses root (the `postgres` account the Debian package creates, through
//! `runuser`), stopped when dropped or when the test process ends. One cluster per test binary; each test takes a database
//! of its own.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    as_root: bool,
    server: Mutex<Option<Child>>,
    /// More server options (`-c name=value ...`).
    opts: String,
}

/// The server binaries of the installed PostgreSQL (Debian: /usr/lib/postgresql/N/bin).
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (make test installs the `postgresql` package)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postgres {
    /// The cluster shared by the tests of this binary.
    pub fn shared() -> &'static Postgres {
        static PG: OnceLock<Postgres> = OnceLock::new();
        PG.get_or_init(Postgres::start)
    }

    /// A new cluster of its own (a test that stops and restarts the server).
    pub fn start() -> Postgres {
        let pg = Postgres::init();
        pg.resume();
        pg
    }

    /// A cluster that takes TCP connections over TLS only (`hostssl` in pg_hba.conf), with
    /// the server certificate and key given (PEM): `postgres` without a password, every other
    /// role with its password (scram-sha-256); the unix socket stays open for the test.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Postgres {
        let mut pg = Postgres::init();
        let data = pg.data();
        std::fs::write(data.join("server.crt"), cert_pem).unwrap();
        std::fs::write(data.join("server.key"), key_pem).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all postgres 127.0.0.1/32 trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        if pg.as_root {
            pg.chown();
        }
        pg.opts = "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".into();
        pg.resume();
        pg
    }

    fn chown(&self) {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(self.dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown the cluster directory to the postgres account");
    }

    fn init() -> Postgres {
        let dir = tempfile::Builder::new().prefix("pg").tempdir().unwrap();
        let pg = Postgres {
            dir,
            port: free_port(),
            bin: bin_dir(),
            as_root: is_root(),
            server: Mutex::new(None),
            opts: String::new(),
        };
        if pg.as_root {
            pg.chown();
        }
        let data = pg.data();
        let out = pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Run one of the server's binaries as the cluster's owner.
    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args).current_dir(self.dir.path());
        cmd.output().unwrap()
    }

    /// Start (or start again) the server on its port, and wait until it answers.
    ///
    /// The server runs under a small shell that holds a pipe from this process: when the
    /// test process ends (however it ends) the pipe closes, and the shell stops the server
    /// at once and removes the cluster's directory. [`Postgres::halt`] asks it to stop the
    /// server but keep the directory.
    pub fn resume(&self) {
        let script = format!(
            "\"$0\" -D \"$1\" -c port={} -c listen_addresses=127.0.0.1 \
             -c unix_socket_directories=\"$2\" -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200 {} >>\"$2/server.log\" 2>&1 &
             pid=$!; read cmd; kill -QUIT $pid; wait $pid; [ \"$cmd\" = keep ] || rm -rf \"$2\"",
            self.port, self.opts
        );
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c"]);
            c
        } else {
            let mut c = Command::new("sh");
            c.arg("-c");
            c
        };
        let child = cmd
            .arg(script)
            .arg(self.bin.join("postgres"))
            .arg(self.data())
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        *self.server.lock().unwrap() = Some(child);
        let until = Instant::now() + Duration::from_secs(30);
        while postgres::Client::connect(&self.socket("postgres"), postgres::NoTls).is_err() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            assert!(
                Instant::now() < until,
                "the test PostgreSQL never answered:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the server at once (as a crash or a pulled cable looks to the stations).
    pub fn halt(&self) {
        if let Some(mut child) = self.server.lock().unwrap().take() {
            let mut stdin = child.stdin.take().unwrap();
            let _ = stdin.write_all(b"keep\n");
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// `postgresql://postgres@127.0.0.1:PORT/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A fresh database named `name` (dropped first if a previous run left it).
    pub fn database(&self, name: &str) -> String {
        let mut c = self.client("postgres");
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        self.url(name)
    }

    /// The test's own connections go through the unix socket (open whatever TCP allows).
    fn socket(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.dir.path().display(),
            self.port
        )
    }

    pub fn client(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.socket(db), postgres::NoTls).unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.lock().unwrap().take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

/// A factory CA (PEM) and a server certificate for 127.0.0.1 and localhost it signed, with its
/// key: (CA, certificate, key).
pub fn server_certificate() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
        .unwrap();
    (ca_cert.pem(), server.pem(), key.serialize_pem())
}
