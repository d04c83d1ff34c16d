//! The fixture worker: one thread that owns the fixture and the workflow, runs the devices the
//! UI asks for (or, with `auto_start`, each new device that answers), and reports [`Event`]s
//! back. The UI thread never touches the port or blocks on it. Which device is next is the
//! station service's rule ([`NextDevice`]), the same as the command line's.

use crate::config::Config;
use crate::device::Opener;
use crate::domain::Event;
use crate::station::{NextDevice, Problem};
use crate::workflow::{DeviceInput, Permissions, Workflow};
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

/// Start the worker for `config`, on `port` if given (else `serial.port`), opening the fixture
/// with `opener`. `repaint` is called after every report so the UI wakes up.
pub fn spawn(
    config: Config,
    port: Option<String>,
    opener: Opener,
    repaint: impl Fn() + Send + 'static,
) -> Worker {
    let (tx, commands) = channel();
    let (reports, rx) = channel();
    let thread = std::thread::Builder::new()
        .name("fixture-worker".into())
        .spawn(move || {
            let send = |r: Report| {
                let _ = reports.send(r);
                repaint();
            };
            run(&config, port.as_deref(), &opener, &commands, &send)
        })
        .expect("spawn worker thread");
    Worker {
        tx,
        rx,
        thread: Some(thread),
    }
}

fn run(
    config: &Config,
    port: Option<&str>,
    opener: &Opener,
    commands: &Receiver<Command>,
    send: &dyn Fn(Report),
) {
    let mut workflow = match Workflow::new(config) {
        Ok(w) => w,
        Err(e) => return send(Report::Unavailable((&e).into())),
    };
    for w in workflow.warnings() {
        send(Report::Warning(w));
    }
    let mut fixture = match opener(config, port) {
        Ok(f) => f,
        Err(e) => return send(Report::Unavailable((&e).into())),
    };
    let device = fixture.device.as_mut();
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
