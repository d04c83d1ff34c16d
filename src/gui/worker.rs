//! A fixture worker: one thread per fixture that owns the fixture's device and its own
//! workflow (with its own database connection), runs the devices the UI asks for (or, with
//! `auto_start`, each new device that answers), and reports [`Event`]s back tagged with the
//! fixture's id. The UI thread never touches a port or blocks on it. Which device is next is
//! the station service's rule ([`NextDevice`]), the same as the command line's. The set of
//! workers lives in `workers`.

use crate::config::FixtureConfig;
use crate::device::Opener;
use crate::domain::{Event, FixtureId};
use crate::station::{NextDevice, Problem};
use crate::workflow::{Claims, DeviceInput, Permissions, Workflow};
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
    Shutdown,
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
}

/// A report and the fixture it comes from (every worker sends into one channel).
#[derive(Debug, Clone)]
pub struct Tagged {
    pub fixture: FixtureId,
    pub report: Report,
}

/// Handle of one worker thread.
pub struct Worker {
    pub tx: Sender<Command>,
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

/// What a worker needs besides its fixture.
pub struct Seams {
    /// Opens the fixture's device (`sim::opener()` or the one the window is given).
    pub opener: Opener,
    /// The devices in progress on every fixture of this window (one device, one fixture).
    pub claims: Claims,
    /// Where the tagged reports go.
    pub reports: Sender<Tagged>,
}

/// Start the worker for `fixture`, on `port` if given (else the fixture's port), opening the
/// device with `seams.opener`. `repaint` is called after every report so the UI wakes up.
pub fn spawn(
    fixture: FixtureConfig,
    port: Option<String>,
    seams: Seams,
    repaint: impl Fn() + Send + 'static,
) -> Worker {
    let (tx, commands) = channel();
    let thread = std::thread::Builder::new()
        .name(format!("fixture-{}", fixture.id))
        .spawn(move || {
            let Seams {
                opener,
                claims,
                reports,
            } = seams;
            let id = fixture.id.clone();
            let send = |report: Report| {
                let _ = reports.send(Tagged {
                    fixture: id.clone(),
                    report,
                });
                repaint();
            };
            run(&fixture, port.as_deref(), &opener, claims, &commands, &send)
        })
        .expect("spawn worker thread");
    Worker {
        tx,
        thread: Some(thread),
    }
}

fn run(
    fixture: &FixtureConfig,
    port: Option<&str>,
    opener: &Opener,
    claims: Claims,
    commands: &Receiver<Command>,
    send: &dyn Fn(Report),
) {
    let config = &fixture.config;
    let mut workflow = match Workflow::new(config) {
        Ok(w) => w,
        Err(e) => return send(Report::Unavailable((&e).into())),
    };
    workflow.set_fixture(fixture.id.clone(), claims);
    for w in workflow.warnings() {
        send(Report::Warning(w));
    }
    let mut opened = match opener(config, port) {
        Ok(f) => f,
        Err(e) => return send(Report::Unavailable((&e).into())),
    };
    let device = opened.device.as_mut();
    send(Report::Connected {
        port: device.port().to_string(),
    });
    let mut next = NextDevice::default();
    loop {
        let command = match commands.recv_timeout(Duration::from_millis(500)) {
            Ok(c) => c,
            Err(RecvTimeoutError::Disconnected) => return,
            // Automatic start: a device not attempted since answers on the fixture.
            Err(RecvTimeoutError::Timeout) if config.gui.auto_start && next.poll(device) => {
                Command::Provision {
                    scanned_serial: None,
                    operator: String::new(),
                    permissions: Permissions::default(),
                }
            }
            Err(RecvTimeoutError::Timeout) => continue,
        };
        let Command::Provision {
            scanned_serial,
            operator,
            permissions,
        } = command
        else {
            return;
        };
        let input = DeviceInput {
            scanned_serial,
            operator,
            permissions,
        };
        let _ = next.provision(&mut workflow, device, &input, &mut |e| {
            send(Report::Event(e))
        });
        send(Report::Finished);
    }
}
