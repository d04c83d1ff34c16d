//! The window's state and the commands that change it. Each fixture's own state is a
//! [`FixtureView`] (in `fixture`); the commands are applied in `commands`; drawing lives in
//! `panels` and the files it calls; the frame loop (`impl eframe::App`) lives in `window`.

use super::fixture::{FixtureView, PortStatus};
use super::jobs_view::JobsView;
use super::labels_view::LabelsView;
use super::reader::{self, Answer, Query, Reader};
use super::worker::{Command, Report};
use super::workers::Workers;
use crate::config::Config;
use crate::device::Opener;
use crate::domain::Event;
use crate::station::doctor::Check;
use crate::station::{Job, JobOutcome, Jobs};
use crate::store::{AttemptRow, Counts, Enrollment, ShiftStats};
use eframe::egui;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often the shift counters are refreshed while idle.
const SUMMARY_EVERY: Duration = Duration::from_secs(2);

/// History table state: pages cached by offset, fetched as rows scroll into view.
#[derive(Default)]
pub struct History {
    pub search: String,
    pub generation: u64,
    pub total: Option<usize>,
    pub pages: HashMap<usize, Vec<Enrollment>>,
    pub requested: HashSet<usize>,
    pub details: Option<(String, Option<Box<Enrollment>>, Vec<AttemptRow>)>,
    /// Bench mode: scroll position to force.
    pub scroll_to: Option<f32>,
}

/// Operator preferences for this session (mute); they start from `[gui] sounds`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Prefs {
    pub muted: bool,
}

/// What panels ask for; applied after drawing (`commands`). Fixtures are named by their index
/// in [`StationApp::fixtures`].
#[derive(Debug, Clone, PartialEq)]
pub enum UiCommand {
    Login(String),
    Logout,
    /// Start fixture `i` with the serial typed or scanned into it; with several fixtures a
    /// fixture prefix (`f3:SERIAL`, `f3/SERIAL`) sends the scan to that fixture instead.
    Start(usize),
    /// Start every fixture whose port is open and that is not running a device.
    StartAll,
    /// Send fixture `i`'s last device again.
    Retry(usize),
    /// The operator works in fixture `i`'s tile (its serial field has the focus).
    Select(usize),
    Rerun(String),
    Export,
    Upload,
    /// Verify what DPS holds and read every device's registration state.
    Verify,
    /// Read one device's registration state from DPS (the details window).
    CheckRegistration(String),
    SearchChanged,
    ShowDetails(String),
    CloseDetails,
    ToggleSettings,
    RunDoctor,
    /// Open the port for the fixture Settings shows (`settings_fixture`).
    UsePort(String),
    /// List the serial ports (Settings opened, or Refresh).
    ListPorts,
    /// Print this device's label again (the details window).
    Reprint(String),
}

pub struct StationApp {
    pub config: Config,
    pub prefs: Prefs,
    pub operator: Option<String>,
    pub operator_input: String,
    pub logged_in_at: String,
    /// Every fixture, in the order of `Config::fixtures()` (one without `[[fixture]]`).
    pub fixtures: Vec<FixtureView>,
    /// The fixture scans go to when they name none: its serial field gets the focus.
    pub selected: usize,
    /// The fixture whose port Settings changes.
    pub settings_fixture: usize,
    pub port_input: String,
    pub history: History,
    pub counts: Option<Counts>,
    pub shift: ShiftStats,
    pub day: ShiftStats,
    pub pending: Vec<Enrollment>,
    /// Export, upload, verification and registration checks: notes and progress.
    pub jobs_view: JobsView,
    /// The label printer's queue (`[label]`) and what the window shows of it.
    pub labels: LabelsView,
    pub warnings: Vec<String>,
    pub db_error: Option<String>,
    /// The fleet sync thread (`[fleet]`); the header shows its state.
    pub fleet: Option<crate::fleet::SyncHandle>,
    pub show_settings: bool,
    pub doctor: Option<Vec<Check>>,
    pub effective_config: String,
    /// Serial ports seen when last listed: (path, description).
    pub ports: Vec<(String, String)>,
    pub(super) workers: Workers,
    pub(super) jobs: Jobs,
    pub(super) reader: Reader,
    pub(super) summary_due: Instant,
    summary_in_flight: bool,
    ctx: egui::Context,
}

fn repaint_fn(ctx: &egui::Context) -> impl Fn() + Send + 'static {
    let ctx = ctx.clone();
    move || ctx.request_repaint()
}

/// The window icon from assets (optional).
pub fn window_icon() -> Option<egui::IconData> {
    let bytes = include_bytes!("../../assets/icons/provisioning-station-64.png");
    let decoder = png::Decoder::new(std::io::Cursor::new(&bytes[..]));
    let mut reader = decoder.read_info().ok()?;
    let mut buf = vec![0; reader.output_buffer_size()?];
    let info = reader.next_frame(&mut buf).ok()?;
    buf.truncate(info.buffer_size());
    Some(egui::IconData {
        rgba: buf,
        width: info.width,
        height: info.height,
    })
}

impl StationApp {
    /// The window on `config`, with fixtures opened as the command line opens them
    /// (serial ports and the built-in simulator).
    pub fn new(ctx: &egui::Context, config: Config) -> Self {
        Self::with_opener(ctx, config, crate::sim::opener())
    }

    /// The window on `config`: a worker per fixture of `config.fixtures()`, each opening its
    /// device with `opener`.
    pub fn with_opener(ctx: &egui::Context, config: Config, opener: Opener) -> Self {
        ctx.set_zoom_factor(config.gui.scale);
        let fixture_configs = config.fixtures();
        let fixtures = fixture_configs.iter().map(FixtureView::new).collect();
        let ids = fixture_configs.iter().map(|f| f.id.clone()).collect();
        let labels = LabelsView::start(&config, ids, ctx);
        let workers = Workers::spawn_all(fixture_configs, opener, ctx);
        let jobs = Jobs::spawn(config.clone(), repaint_fn(ctx));
        jobs.send(Job::StartChecks);
        let reader = reader::spawn(config.database_path(), repaint_fn(ctx));
        let effective_config = toml::to_string_pretty(&config).unwrap_or_default();
        let mut warnings = Vec::new();
        let fleet = config.fleet.as_ref().and_then(|_| {
            crate::fleet::SyncHandle::start(&config)
                .map_err(|e| warnings.push(format!("fleet sync not started: {e}")))
                .ok()
        });
        let prefs = Prefs {
            muted: !config.gui.sounds,
        };
        let mut app = Self {
            port_input: config.serial.port.clone(),
            config,
            prefs,
            operator: None,
            operator_input: String::new(),
            logged_in_at: crate::store::now(),
            fixtures,
            selected: 0,
            settings_fixture: 0,
            history: History::default(),
            counts: None,
            shift: ShiftStats::default(),
            day: ShiftStats::default(),
            pending: Vec::new(),
            jobs_view: JobsView::default(),
            labels,
            warnings,
            db_error: None,
            fleet,
            show_settings: false,
            doctor: None,
            effective_config,
            ports: Vec::new(),
            workers,
            jobs,
            reader,
            summary_due: Instant::now(),
            summary_in_flight: false,
            ctx: ctx.clone(),
        };
        if let Some(f) = app.fixtures.first() {
            app.port_input = f.configured_port.clone();
        }
        if let Ok(op) = std::env::var("STATION_OPERATOR")
            && !op.trim().is_empty()
        {
            app.apply(UiCommand::Login(op));
        }
        app.refresh_history();
        let _ = app.reader.tx.send(Query::Pending);
        app
    }

    /// Several fixtures: the window shows tiles instead of the one device panel.
    pub fn is_gang(&self) -> bool {
        self.fixtures.len() > 1
    }

    /// Drain the workers', the jobs thread's and the reader's reports into state.
    pub fn poll(&mut self) {
        self.drain_reports();
        self.drain_outcomes();
        self.drain_answers();
        self.labels.poll(&self.ctx);
        if !self.summary_in_flight && Instant::now() >= self.summary_due {
            let day_since = format!("{}T00:00:00Z", &crate::store::now()[..10]);
            let _ = self.reader.tx.send(Query::Summary {
                shift_since: self.logged_in_at.clone(),
                day_since,
            });
            self.summary_in_flight = true;
            self.summary_due = Instant::now() + SUMMARY_EVERY;
        }
        self.ctx.request_repaint_after(SUMMARY_EVERY);
    }

    /// Show a warning once (every fixture, and a re-opened one, report their warnings again).
    pub(super) fn warn(&mut self, w: String) {
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    /// The fixture workers' reports. One sound and one history refresh however many
    /// fixtures finished since the last frame.
    fn drain_reports(&mut self) {
        let mut finished = false;
        let mut all_passed = None;
        for (i, r) in self.workers.drain() {
            let Some(f) = self.fixtures.get_mut(i) else {
                continue;
            };
            match r {
                Report::Connected { port } => f.port = PortStatus::Connected(port),
                Report::Unavailable(p) => f.port = PortStatus::Error(p),
                Report::Warning(w) => self.warn(w),
                Report::Event(e) => {
                    // Only a PASS prints a label; the printer never holds up the device.
                    if let Event::Passed {
                        registration_id, ..
                    } = &e
                    {
                        self.labels.passed(&f.id, registration_id);
                    }
                    if let Some(passed) = f.on_event(&e) {
                        all_passed = Some(all_passed.unwrap_or(true) && passed);
                    }
                }
                Report::Finished => {
                    f.device.busy = false;
                    finished = true;
                }
            }
        }
        match all_passed {
            Some(true) => self.play("pass.wav"),
            Some(false) => self.play("fail.wav"),
            None => {}
        }
        if finished {
            self.refresh_history();
            self.summary_due = Instant::now();
            let _ = self.reader.tx.send(Query::Pending);
        }
    }

    /// The jobs thread's outcomes (export, upload, verification, checks).
    fn drain_outcomes(&mut self) {
        let outcomes: Vec<JobOutcome> = self.jobs.rx.try_iter().collect();
        for o in outcomes {
            self.inject_outcome(o);
        }
    }

    /// Take in one outcome as if the jobs thread had sent it (tests drive the window with
    /// this instead of a real DPS).
    #[doc(hidden)]
    pub fn inject_outcome(&mut self, o: JobOutcome) {
        match o {
            JobOutcome::Checked(checks) => self.doctor = Some(checks),
            JobOutcome::Notices(notices) => notices.into_iter().for_each(|n| self.warn(n)),
            o => {
                if matches!(o, JobOutcome::Exported(_)) {
                    self.summary_due = Instant::now();
                    self.refresh_history();
                }
                self.jobs_view.take(o);
            }
        }
    }

    /// The database reader's answers.
    fn drain_answers(&mut self) {
        while let Ok(a) = self.reader.rx.try_recv() {
            match a {
                Answer::Page {
                    generation,
                    offset,
                    rows,
                } if generation == self.history.generation => {
                    self.history.pages.insert(offset, rows);
                }
                Answer::Count { generation, total } if generation == self.history.generation => {
                    self.history.total = Some(total);
                }
                Answer::Page { .. } | Answer::Count { .. } => {}
                Answer::Details {
                    registration_id,
                    enrollment,
                    attempts,
                } => {
                    self.history.details = Some((registration_id, enrollment, attempts));
                }
                Answer::Summary { counts, shift, day } => {
                    self.counts = Some(counts);
                    self.shift = shift;
                    self.day = day;
                    self.summary_in_flight = false;
                    self.db_error = None;
                }
                Answer::Pending(rows) => self.pending = rows,
                Answer::Error(e) => {
                    self.db_error = Some(e);
                    self.summary_in_flight = false;
                }
            }
        }
    }

    fn play(&self, file: &str) {
        if self.prefs.muted {
            return;
        }
        let candidates = [
            self.config.base_dir.join("assets/sounds").join(file),
            PathBuf::from("/usr/share/provisioning-station/sounds").join(file),
        ];
        if let Some(path) = candidates.into_iter().find(|p| p.exists()) {
            // Fire and forget: no sound player is not a failure.
            let _ = std::process::Command::new("aplay")
                .arg("-q")
                .arg(path)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
        }
    }

    pub(super) fn refresh_history(&mut self) {
        self.history.generation += 1;
        self.history.pages.clear();
        self.history.requested.clear();
        let _ = self.reader.tx.send(Query::Count {
            search: self.history.search.clone(),
            generation: self.history.generation,
        });
        self.request_page(0);
    }

    /// Ask for the page holding row `row`, once.
    pub fn request_page(&mut self, row: usize) {
        let offset = row / reader::PAGE * reader::PAGE;
        if self.history.requested.insert(offset) {
            let _ = self.reader.tx.send(Query::Page {
                search: self.history.search.clone(),
                offset,
                generation: self.history.generation,
            });
        }
    }

    /// The history row at `row`, if its page has arrived.
    pub fn history_row(&self, row: usize) -> Option<&Enrollment> {
        let offset = row / reader::PAGE * reader::PAGE;
        self.history
            .pages
            .get(&offset)
            .and_then(|p| p.get(row - offset))
    }

    /// Send `command` to fixture `i` if it can take a device now (port open, idle, operator
    /// logged in); say whether it was sent.
    pub(super) fn start(&mut self, i: usize, command: Command) -> bool {
        let logged_in = self.operator.is_some();
        let Some(f) = self.fixtures.get_mut(i) else {
            return false;
        };
        if !logged_in || !f.ready() {
            return false;
        }
        f.device = super::fixture::DeviceView::started();
        f.last_start = Some(command.clone());
        self.workers.send(i, command);
        true
    }

    /// Send `job` to the jobs thread (`None`: the same work is already under way).
    pub(super) fn queue(&self, job: Option<Job>) {
        if let Some(job) = job {
            self.jobs.send(job);
        }
    }
}
