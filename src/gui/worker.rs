//! The fixture worker: one thread that owns the serial port and the workflow, runs what the UI
//! asks for, and reports [`Event`]s back. The UI thread never touches the port or blocks on it.

use crate::attestation::symmetric::SymmetricKeySource;
use crate::config::Config;
use crate::device;
use crate::dps::{enrollment::DpsOptions, export};
use crate::error::Error;
use crate::store::Store;
use crate::workflow::{DeviceInput, Event, Permissions, Workflow};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

/// What the UI asks the worker to do.
#[derive(Debug, Clone)]
pub enum Command {
    Provision {
        scanned_serial: Option<String>,
        operator: String,
        permissions: Permissions,
    },
    Export,
    /// Upload exported enrollments to DPS (`[upload]`).
    Upload,
    Shutdown,
}

/// An error as the UI shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub code: &'static str,
    pub message: String,
    pub remedy: &'static str,
}

impl From<&Error> for Problem {
    fn from(e: &Error) -> Self {
        Problem {
            code: e.code(),
            message: e.to_string(),
            remedy: e.remedy(),
        }
    }
}

/// What the worker reports.
#[derive(Debug, Clone)]
pub enum Report {
    /// The fixture is open on this port.
    Connected {
        port: String,
    },
    /// The fixture or the database could not be opened.
    Unavailable(Problem),
    Warning(String),
    Event(Event),
    /// A device cycle ended (the last event said how).
    Finished,
    Exported(Result<Option<export::ExportSummary>, Problem>),
    Uploaded(Result<crate::dps::upload::UploadSummary, Problem>),
}

/// Handle of the worker thread.
pub struct Worker {
    pub tx: Sender<Command>,
    pub rx: Receiver<Report>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start the worker for `config`, on `port` if given (else `serial.port`). `repaint` is called
/// after every report so the UI wakes up.
pub fn spawn(config: Config, port: Option<String>, repaint: impl Fn() + Send + 'static) -> Worker {
    let (tx, commands) = channel();
    let (reports, rx) = channel();
    let thread = std::thread::Builder::new()
        .name("fixture-worker".into())
        .spawn(move || run(config, port, commands, reports, repaint))
        .expect("spawn worker thread");
    Worker {
        tx,
        rx,
        thread: Some(thread),
    }
}

fn run(
    config: Config,
    port: Option<String>,
    commands: Receiver<Command>,
    reports: Sender<Report>,
    repaint: impl Fn(),
) {
    let send = |r: Report| {
        let _ = reports.send(r);
        repaint();
    };
    let mut workflow = match Workflow::new(&config) {
        Ok(w) => w,
        Err(e) => return send(Report::Unavailable((&e).into())),
    };
    for w in workflow.warnings() {
        send(Report::Warning(w));
    }
    for w in start_checks(&config, workflow.store()) {
        send(Report::Warning(w));
    }
    let mut fixture = match device::connect(&config, port.as_deref()) {
        Ok(f) => f,
        Err(e) => return send(Report::Unavailable((&e).into())),
    };
    send(Report::Connected {
        port: fixture.link.port().to_string(),
    });
    let mut last_serial: Option<String> = None;
    loop {
        let command = match commands.recv_timeout(Duration::from_millis(500)) {
            Ok(c) => c,
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                // Auto-start: a device the station has not just handled answers on the fixture.
                if config.gui.auto_start
                    && let Ok(info) = fixture.link.hello()
                    && Some(&info.serial) != last_serial.as_ref()
                {
                    Command::Provision {
                        scanned_serial: None,
                        operator: String::new(),
                        permissions: Permissions::default(),
                    }
                } else {
                    continue;
                }
            }
        };
        match command {
            Command::Shutdown => return,
            Command::Provision {
                scanned_serial,
                operator,
                permissions,
            } => {
                let input = DeviceInput {
                    scanned_serial,
                    operator,
                    permissions,
                };
                let result =
                    workflow.provision(&mut fixture.link, &input, &mut |e| send(Report::Event(e)));
                if let Ok(o) = &result {
                    last_serial = Some(o.serial.clone());
                }
                send(Report::Finished);
            }
            Command::Export => send(Report::Exported(
                export_batch(&config).map_err(|e| (&e).into()),
            )),
            Command::Upload => send(Report::Uploaded(upload(&config).map_err(|e| (&e).into()))),
        }
    }
}

/// What the technician must know at start: devices a crash left unfinished, and batches
/// whose files had to be (or could not be) re-created.
fn start_checks(config: &Config, store: &Store) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Ok(c) = store.counts()
        && c.pending > 0
    {
        warnings.push(format!(
            "{} device(s) were left unfinished by an earlier run: put each on the fixture again (see Unfinished devices)",
            c.pending
        ));
    }
    let repaired = keys(config)
        .and_then(|k| crate::dps::publish::repair(store, k.as_ref(), &config.export_dir()));
    match repaired {
        Ok(done) => {
            for b in done.recreated {
                warnings.push(format!(
                    "batch {b} was recorded but its files were missing: re-created them"
                ));
            }
            for (p, why) in done.failed {
                warnings.push(format!(
                    "batch {}: {} is {}; re-creating it failed ({why}); then run `{}`",
                    p.batch,
                    p.file.display(),
                    p.problem,
                    p.fix()
                ));
            }
        }
        Err(e) => warnings.push(format!("checking exported batches failed: {e}")),
    }
    warnings
}

fn keys(config: &Config) -> Result<Option<SymmetricKeySource>, Error> {
    SymmetricKeySource::from_config(config)
}

fn upload(config: &Config) -> Result<crate::dps::upload::UploadSummary, Error> {
    use crate::dps::upload::{self, Dps, UploadOptions};
    let section = config.upload.as_ref().ok_or(Error::Upload {
        code: "upload.not_configured",
        message: "station.toml has no [upload] section".into(),
    })?;
    let mut store = Store::open(&config.database_path())?;
    let mut dps = Dps::new(config, section, None)?;
    upload::upload(
        &mut store,
        &mut dps,
        keys(config)?.as_ref(),
        &UploadOptions::default(),
        &mut |_| {},
    )
}

fn export_batch(config: &Config) -> Result<Option<export::ExportSummary>, Error> {
    let mut store = Store::open(&config.database_path())?;
    let keys = keys(config)?;
    export::export_new(
        &mut store,
        &config.station.id,
        &DpsOptions::from_config(&config.dps),
        keys.as_ref(),
        &config.export_dir(),
    )
}
