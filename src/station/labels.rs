//! The label printer's queue: labels submitted after each PASS (or to reprint) are made and
//! sent, in order, by a thread of their own, so a slow or dead printer never holds up a
//! fixture. A label the printer does not take stays at the head of the queue and is sent again
//! every `retry_ms` until the printer answers; each is delivered once. The queue is bounded
//! (`queue_limit`): a label submitted to a full queue is refused and reported, never blocking.
//!
//! Every outcome is a [`LabelEvent`] given to the `notify` callback (the command line prints
//! it, the window redraws), and the per-fixture state ([`FixtureLabels`]), the printer's last
//! error and the last label's preview can be read at any time. The queue lives in memory: what
//! it still holds when the station stops is reported ([`Labels::finish`]) for reprinting.
//! Nothing here fails or changes a device's result.

use crate::config::{Config, LabelSection, PrinterAddress};
use crate::domain::FixtureId;
use crate::error::{Error, ErrorCode, Problem};
use crate::label::{self, Label, LabelData};
use crate::store::Store;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One label to print: a device that passed on `fixture`, or a reprint (`fixture` none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelJob {
    pub fixture: Option<FixtureId>,
    pub registration_id: String,
}

impl LabelJob {
    /// The label of a device that just passed on `fixture`.
    pub fn passed(fixture: &FixtureId, registration_id: &str) -> LabelJob {
        LabelJob {
            fixture: Some(fixture.clone()),
            registration_id: registration_id.into(),
        }
    }

    /// A reprint asked for by the technician (from the history).
    pub fn reprint(registration_id: &str) -> LabelJob {
        LabelJob {
            fixture: None,
            registration_id: registration_id.into(),
        }
    }
}

/// What happened to a label (JSON: `label_printed`, `label_failed`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LabelEvent {
    /// The printer took the label.
    LabelPrinted {
        fixture: Option<FixtureId>,
        registration_id: String,
        printer: String,
        /// Sends it took (more than one: the printer was down meanwhile).
        attempts: u32,
    },
    /// The label was not printed (yet): `retrying` while it waits in the queue for the
    /// printer; otherwise it was dropped (not provisioned, queue full, database).
    LabelFailed {
        fixture: Option<FixtureId>,
        registration_id: String,
        #[serde(flatten)]
        problem: Problem,
        retrying: bool,
        /// Labels waiting, this one included when retrying.
        queued: usize,
    },
}

/// How labels went on one fixture, for its tile.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FixtureLabels {
    pub printed: u32,
    /// This fixture's labels in the queue now (waiting for the printer).
    pub waiting: u32,
    /// This fixture's labels that will not print (queue full, no enrollment, database).
    pub dropped: u32,
    pub last_printed: Option<String>,
    /// The last error for a label of this fixture; cleared when one prints.
    pub last_error: Option<Problem>,
}

/// The last label made: what the preview shows.
#[derive(Debug, Clone, PartialEq)]
pub struct LastLabel {
    pub fixture: Option<FixtureId>,
    pub data: LabelData,
    pub zpl: String,
    /// The station's rendering ([`label::render_png`]).
    pub png: Vec<u8>,
}

/// The printer thread and its queue.
pub struct Labels {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

type Notify = Box<dyn Fn(&LabelEvent) + Send + Sync>;

struct Shared {
    config: Config,
    section: LabelSection,
    printer: PrinterAddress,
    notify: Notify,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<LabelJob>,
    /// No more submissions: end once the queue is empty.
    closing: bool,
    /// End now, whatever is queued.
    abandon: bool,
    done: bool,
    fixtures: BTreeMap<FixtureId, FixtureLabels>,
    printer_error: Option<Problem>,
    last: Option<Arc<LastLabel>>,
    printed: u32,
}

impl Labels {
    /// The queue for `config`'s `[label]` when labels are enabled (else none). `notify` gets
    /// every [`LabelEvent`], on the printer thread or the submitting one.
    pub fn start(
        config: &Config,
        notify: impl Fn(&LabelEvent) + Send + Sync + 'static,
    ) -> Option<Labels> {
        let section = config.label.clone().filter(|l| l.enabled)?;
        Labels::start_with(config, section, notify).ok()
    }

    /// The queue for `section` whether or not it is enabled (e.g. for reprints); refused
    /// without a printer.
    pub fn start_with(
        config: &Config,
        section: LabelSection,
        notify: impl Fn(&LabelEvent) + Send + Sync + 'static,
    ) -> crate::Result<Labels> {
        let printer = section.printer.clone().ok_or(Error::MissingSection {
            section: "[label] printer",
        })?;
        let shared = Arc::new(Shared {
            config: config.clone(),
            section,
            printer,
            notify: Box::new(notify),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("labels".into())
            .spawn(move || run(&worker))
            .map_err(|e| Error::Internal {
                message: format!("cannot start the label printer thread: {e}"),
            })?;
        Ok(Labels {
            shared,
            thread: Some(thread),
        })
    }

    /// Queue a label; returns at once. A full queue refuses it (`label.queue_full`, also
    /// reported as a `label_failed` event).
    pub fn submit(&self, job: LabelJob) -> Result<(), Problem> {
        let mut st = self.shared.lock();
        if st.queue.len() >= self.shared.section.queue_limit {
            let problem = Problem::from(&Error::Label {
                code: ErrorCode::LabelQueueFull,
                message: format!(
                    "the label of {} was not queued: {} labels are waiting for printer {}",
                    job.registration_id,
                    st.queue.len(),
                    self.shared.printer
                ),
            });
            let event = failed(&mut st, &job, problem.clone(), false);
            drop(st);
            (self.shared.notify)(&event);
            return Err(problem);
        }
        st.queue.push_back(job);
        self.shared.wake.notify_all();
        Ok(())
    }

    /// Labels waiting (the one being sent included).
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// The labels waiting, in print order.
    pub fn waiting(&self) -> Vec<LabelJob> {
        self.shared.lock().queue.iter().cloned().collect()
    }

    /// How labels went on `fixture`.
    pub fn fixture(&self, fixture: &FixtureId) -> FixtureLabels {
        let st = self.shared.lock();
        let mut t = st.fixtures.get(fixture).cloned().unwrap_or_default();
        t.waiting = st
            .queue
            .iter()
            .filter(|j| j.fixture.as_ref() == Some(fixture))
            .count() as u32;
        t
    }

    /// Labels printed since the queue started (reprints included).
    pub fn printed(&self) -> u32 {
        self.shared.lock().printed
    }

    /// The printer's last error, until it takes a label again.
    pub fn printer_error(&self) -> Option<Problem> {
        self.shared.lock().printer_error.clone()
    }

    /// The printer, as configured.
    pub fn printer(&self) -> &PrinterAddress {
        &self.shared.printer
    }

    /// The last label made (printed or waiting).
    pub fn last(&self) -> Option<Arc<LastLabel>> {
        self.shared.lock().last.clone()
    }

    /// The last label's preview, PNG bytes.
    pub fn last_preview(&self) -> Option<Vec<u8>> {
        self.last().map(|l| l.png.clone())
    }

    /// Stop taking labels, wait up to `wait` for the queue to print, then stop the printer
    /// thread; the labels it did not print, in order. The queue takes no labels after this.
    pub fn finish(&mut self, wait: Duration) -> Vec<LabelJob> {
        let deadline = Instant::now() + wait;
        let mut st = self.shared.lock();
        st.closing = true;
        self.shared.wake.notify_all();
        while !st.done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self
                .shared
                .wake
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(st);
        self.stop();
        self.shared.lock().queue.drain(..).collect()
    }

    /// End the printer thread now (it finishes a send in progress, bounded by `timeout_ms`).
    fn stop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.abandon = true;
            st.closing = true;
        }
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Labels {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Record a label that was not printed and give the event to report.
fn failed(st: &mut State, job: &LabelJob, problem: Problem, retrying: bool) -> LabelEvent {
    if let Some(f) = &job.fixture {
        let t = st.fixtures.entry(f.clone()).or_default();
        t.dropped += u32::from(!retrying);
        t.last_error = Some(problem.clone());
    }
    LabelEvent::LabelFailed {
        fixture: job.fixture.clone(),
        registration_id: job.registration_id.clone(),
        problem,
        retrying,
        queued: st.queue.len(),
    }
}

/// The printer thread: take the head of the queue, make its label, send it until the printer
/// takes it (or the station stops), pop it, next.
fn run(shared: &Shared) {
    let mut store: Option<Store> = None;
    while let Some(job) = next(shared) {
        let made = make(shared, &mut store, &job);
        let event = match made {
            Ok(label) => match deliver(shared, &job, &label, store.as_ref()) {
                Some(event) => event,
                None => break,
            },
            Err(e) => {
                // No label can be made for it (not provisioned, database): drop it.
                let mut st = shared.lock();
                st.queue.pop_front();
                failed(&mut st, &job, Problem::from(&e), false)
            }
        };
        record(store.as_ref(), &event);
        (shared.notify)(&event);
    }
    shared.lock().done = true;
    shared.wake.notify_all();
}

/// The next job (left at the head of the queue until it is done); none once closing and
/// empty, or abandoned.
fn next(shared: &Shared) -> Option<LabelJob> {
    let mut st = shared.lock();
    loop {
        if st.abandon || (st.closing && st.queue.is_empty()) {
            return None;
        }
        if let Some(job) = st.queue.front() {
            return Some(job.clone());
        }
        st = shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
    }
}

/// The job's label from the database, and its preview kept as the last label.
fn make(shared: &Shared, store: &mut Option<Store>, job: &LabelJob) -> crate::Result<Label> {
    if store.is_none() {
        *store = Some(Store::open(&shared.config.database_path())?);
    }
    let store = store.as_ref().expect("opened above");
    let data = LabelData::lookup(store, &shared.config, &job.registration_id)?;
    let label = Label::new(&data, &shared.section);
    let last = LastLabel {
        fixture: job.fixture.clone(),
        png: label::render_png(&data, &shared.section),
        zpl: label.zpl.clone(),
        data,
    };
    shared.lock().last = Some(Arc::new(last));
    Ok(label)
}

/// Keep what became of a label in the audit trail (printed, refused by the printer, dropped).
fn record(store: Option<&Store>, event: &LabelEvent) {
    let Some(store) = store else { return };
    let (kind, id) = match event {
        LabelEvent::LabelPrinted {
            registration_id, ..
        } => ("label.printed", registration_id),
        LabelEvent::LabelFailed {
            registration_id, ..
        } => ("label.failed", registration_id),
    };
    let detail = serde_json::to_value(event).unwrap_or_default();
    // A trail that cannot be written is the database's problem, reported where it is used.
    let _ = store.audit(kind, id, &detail);
}

/// Send `label` until the printer takes it; the event to report (`None`: abandoned).
fn deliver(
    shared: &Shared,
    job: &LabelJob,
    label: &Label,
    store: Option<&Store>,
) -> Option<LabelEvent> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let sent = label::printer::send(
            &shared.printer,
            &shared.config.base_dir,
            label,
            shared.section.timeout(),
        );
        let mut st = shared.lock();
        match sent {
            Ok(()) => {
                st.queue.pop_front();
                st.printer_error = None;
                st.printed += 1;
                if let Some(f) = &job.fixture {
                    let t = st.fixtures.entry(f.clone()).or_default();
                    t.printed += 1;
                    t.last_printed = Some(job.registration_id.clone());
                    t.last_error = None;
                }
                return Some(LabelEvent::LabelPrinted {
                    fixture: job.fixture.clone(),
                    registration_id: job.registration_id.clone(),
                    printer: shared.printer.to_string(),
                    attempts,
                });
            }
            Err(e) => {
                let problem = Problem::from(&e);
                // Report a label's first refusal, and the printer's error when it changes.
                let new_error = st.printer_error.as_ref() != Some(&problem);
                st.printer_error = Some(problem.clone());
                if attempts == 1 || new_error {
                    let event = failed(&mut st, job, problem, true);
                    drop(st);
                    record(store, &event);
                    (shared.notify)(&event);
                    st = shared.lock();
                }
                if st.abandon {
                    return None;
                }
                st = shared
                    .wake
                    .wait_timeout(st, shared.section.retry())
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                if st.abandon {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Credential, Secret};
    use crate::store::{Attempt, NewEnrollment};
    use std::path::Path;

    const KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/group-key.txt");

    /// A station printing into `labels/` with one provisioned device, `dev-1`.
    fn station(dir: &Path) -> Config {
        let text = format!(
            "[station]\nid = \"unit\"\ndatabase = \"station.db\"\nexport_dir = \"exports\"\n\
             [dps]\nid_scope = \"0ne00000001\"\n\
             [attestation]\nmode = \"symmetric\"\n[attestation.symmetric]\ngroup_key_file = \"{KEY}\"\n\
             [label]\nenabled = true\nprinter = \"file:labels\"\nretry_ms = 50\n"
        );
        std::fs::write(dir.join("station.toml"), text).unwrap();
        let config = crate::config::load(Some(&dir.join("station.toml"))).unwrap();
        let mut store = Store::open(&config.database_path()).unwrap();
        let credential = Credential::SymmetricKey {
            primary: Secret("a2V5".into()),
            secondary: None,
            group_key_id: None,
            secondary_derived: false,
        };
        let new = NewEnrollment {
            registration_id: "dev-1",
            device_serial: "DEV1",
            firmware: "2.0",
            model: "m",
            credential: &credential,
            station: "unit",
            line: "",
            operator: "op",
            expected_digest: "d1",
            supersede: false,
        };
        store.record_pending(&new).unwrap();
        let attempt = Attempt {
            registration_id: Some("dev-1"),
            device_serial: Some("DEV1"),
            passed: true,
            error_code: None,
            message: None,
            station: "unit",
            operator: "op",
            port: "sim",
            started_at: "2026-01-01T00:00:00Z",
            duration_ms: 1,
        };
        store.mark_provisioned("dev-1", "d1", &attempt).unwrap();
        config
    }

    #[test]
    fn labels_print_in_order_keep_the_fixture_state_and_the_last_preview() {
        let dir = tempfile::tempdir().unwrap();
        let config = station(dir.path());
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let mut labels =
            Labels::start(&config, move |e| sink.lock().unwrap().push(e.clone())).expect("enabled");
        let f1 = FixtureId("f1".into());
        labels.submit(LabelJob::passed(&f1, "dev-1")).unwrap();
        labels.submit(LabelJob::passed(&f1, "nobody")).unwrap();
        labels.submit(LabelJob::reprint("dev-1")).unwrap();
        assert!(labels.finish(Duration::from_secs(60)).is_empty());
        let events = events.lock().unwrap().clone();
        assert!(
            matches!(&events[0], LabelEvent::LabelPrinted { registration_id, .. } if registration_id == "dev-1")
        );
        assert!(
            matches!(&events[1], LabelEvent::LabelFailed { problem, retrying: false, .. }
            if problem.code == ErrorCode::LabelNotProvisioned)
        );
        assert!(matches!(
            &events[2],
            LabelEvent::LabelPrinted { fixture: None, .. }
        ));
        let state = labels.fixture(&f1);
        assert_eq!((state.printed, state.dropped, state.waiting), (1, 1, 0));
        assert_eq!(state.last_printed.as_deref(), Some("dev-1"));
        assert_eq!(labels.printed(), 2);
        let last = labels.last().unwrap();
        assert_eq!(last.data.serial, "DEV1");
        assert!(labels.last_preview().unwrap().starts_with(b"\x89PNG"));
        let files = std::fs::read_dir(dir.path().join("labels"))
            .unwrap()
            .count();
        assert_eq!(files, 2);
    }

    #[test]
    fn labels_refuse_a_full_queue_at_once_and_report_what_did_not_print() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = station(dir.path());
        // A directory that cannot be created: the printer is "down".
        std::fs::write(dir.path().join("blocked"), "").unwrap();
        let label = config.label.as_mut().unwrap();
        label.printer = Some(PrinterAddress::File {
            dir: "blocked/labels".into(),
        });
        label.queue_limit = 2;
        let mut labels = Labels::start(&config, |_| {}).unwrap();
        let f1 = FixtureId("f1".into());
        for _ in 0..2 {
            labels.submit(LabelJob::passed(&f1, "dev-1")).unwrap();
        }
        let refused = labels.submit(LabelJob::passed(&f1, "dev-1")).unwrap_err();
        assert_eq!(refused.code, ErrorCode::LabelQueueFull);
        // The label thread has tried the printer (and keeps both labels for a retry).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while labels.printer_error().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the printer was never tried"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let left = labels.finish(Duration::from_millis(200));
        assert_eq!(left.len(), 2, "both queued labels are reported unprinted");
        let state = labels.fixture(&f1);
        assert_eq!(state.dropped, 1);
        assert!(labels.printer_error().is_some());
        assert_eq!(
            labels.printer_error().unwrap().code,
            ErrorCode::LabelPrinterUnavailable
        );
    }
}
