//! The window's state and the commands that change it. Drawing lives in `panels` and the
//! files it calls; the frame loop (`impl eframe::App`) lives in `window`.

use super::jobs_view::JobsView;
use super::reader::{self, Answer, Query, Reader};
use super::worker::{self, Command, Report, Worker};
use crate::config::Config;
use crate::device::Opener;
use crate::domain::{Event, Step};
use crate::station::doctor::Check;
use crate::station::{Job, JobOutcome, Jobs, Problem};
use crate::store::{AttemptRow, Counts, Enrollment, ShiftStats};
use crate::workflow::Permissions;
use eframe::egui;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often the shift counters are refreshed while idle.
const SUMMARY_EVERY: Duration = Duration::from_secs(2);

/// State of one step of the current device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepState {
    Waiting,
    Running(Instant),
    Done(Duration),
    Failed(Duration),
}

/// The big result banner.
#[derive(Debug, Clone, PartialEq)]
pub enum Banner {
    Pass {
        registration_id: String,
        serial: String,
        ms: f64,
    },
    Fail(Problem),
}

/// The device on the fixture, as the operator sees it.
#[derive(Debug, Clone)]
pub struct DeviceView {
    pub serial: String,
    pub registration_id: String,
    pub steps: [StepState; 6],
    pub progress: Option<(usize, usize)>,
    pub warnings: Vec<String>,
    pub banner: Option<Banner>,
    pub busy: bool,
}

impl Default for DeviceView {
    fn default() -> Self {
        Self {
            serial: String::new(),
            registration_id: String::new(),
            steps: [StepState::Waiting; 6],
            progress: None,
            warnings: Vec::new(),
            banner: None,
            busy: false,
        }
    }
}

/// The fixture's state for the header.
#[derive(Debug, Clone, PartialEq)]
pub enum PortStatus {
    Opening,
    Connected(String),
    Error(Problem),
}

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

/// What panels ask for; applied after drawing.
#[derive(Debug, Clone, PartialEq)]
pub enum UiCommand {
    Login(String),
    Logout,
    Start,
    Retry,
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
    UsePort(String),
    /// List the serial ports (Settings opened, or Refresh).
    ListPorts,
}

pub struct StationApp {
    pub config: Config,
    pub prefs: Prefs,
    pub operator: Option<String>,
    pub operator_input: String,
    pub logged_in_at: String,
    pub serial_input: String,
    pub port_input: String,
    pub port: PortStatus,
    pub device: DeviceView,
    pub history: History,
    pub counts: Option<Counts>,
    pub shift: ShiftStats,
    pub day: ShiftStats,
    pub pending: Vec<Enrollment>,
    /// Export, upload, verification and registration checks: notes and progress.
    pub jobs_view: JobsView,
    pub warnings: Vec<String>,
    pub db_error: Option<String>,
    pub show_settings: bool,
    pub doctor: Option<Vec<Check>>,
    pub effective_config: String,
    /// Serial ports seen when last listed: (path, description).
    pub ports: Vec<(String, String)>,
    last_start: Option<Command>,
    worker: Option<Worker>,
    opener: Opener,
    jobs: Jobs,
    reader: Reader,
    summary_due: Instant,
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

    /// The window on `config`, opening fixtures with `opener`.
    pub fn with_opener(ctx: &egui::Context, config: Config, opener: Opener) -> Self {
        ctx.set_zoom_factor(config.gui.scale);
        let worker = Some(worker::spawn(
            config.clone(),
            None,
            opener.clone(),
            repaint_fn(ctx),
        ));
        let jobs = Jobs::spawn(config.clone(), repaint_fn(ctx));
        jobs.send(Job::StartChecks);
        let reader = reader::spawn(config.database_path(), repaint_fn(ctx));
        let effective_config = toml::to_string_pretty(&config).unwrap_or_default();
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
            serial_input: String::new(),
            port: PortStatus::Opening,
            device: DeviceView::default(),
            history: History::default(),
            counts: None,
            shift: ShiftStats::default(),
            day: ShiftStats::default(),
            pending: Vec::new(),
            jobs_view: JobsView::default(),
            warnings: Vec::new(),
            db_error: None,
            show_settings: false,
            doctor: None,
            effective_config,
            ports: Vec::new(),
            last_start: None,
            worker,
            opener,
            jobs,
            reader,
            summary_due: Instant::now(),
            summary_in_flight: false,
            ctx: ctx.clone(),
        };
        if let Ok(op) = std::env::var("STATION_OPERATOR")
            && !op.trim().is_empty()
        {
            app.apply(UiCommand::Login(op));
        }
        app.refresh_history();
        let _ = app.reader.tx.send(Query::Pending);
        app
    }

    /// Drain the worker's and the reader's reports into state.
    pub fn poll(&mut self) {
        self.drain_reports();
        self.drain_outcomes();
        self.drain_answers();
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

    /// The fixture worker's reports.
    /// Show a warning once (a re-opened fixture reports its warnings again).
    fn warn(&mut self, w: String) {
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    fn drain_reports(&mut self) {
        let reports: Vec<Report> = self
            .worker
            .as_ref()
            .map(|w| w.rx.try_iter().collect())
            .unwrap_or_default();
        for r in reports {
            match r {
                Report::Connected { port } => self.port = PortStatus::Connected(port),
                Report::Unavailable(p) => self.port = PortStatus::Error(p),
                Report::Warning(w) => self.warn(w),
                Report::Event(e) => self.on_event(e),
                Report::Finished => {
                    self.device.busy = false;
                    self.refresh_history();
                    self.summary_due = Instant::now();
                    let _ = self.reader.tx.send(Query::Pending);
                }
            }
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

    fn finish_running(&mut self, failed: bool) {
        for s in &mut self.device.steps {
            if let StepState::Running(t) = *s {
                *s = if failed {
                    StepState::Failed(t.elapsed())
                } else {
                    StepState::Done(t.elapsed())
                };
            }
        }
    }

    fn begin(&mut self, step: Step) {
        self.finish_running(false);
        let i = Step::ALL.iter().position(|s| *s == step).unwrap_or(0);
        if !matches!(self.device.steps[i], StepState::Done(_)) {
            self.device.steps[i] = StepState::Running(Instant::now());
        }
    }

    /// Apply one workflow event to the device view.
    pub fn on_event(&mut self, e: Event) {
        match &e {
            Event::Connecting { .. } => {
                self.device = DeviceView {
                    busy: true,
                    ..Default::default()
                };
            }
            Event::Identified { serial, .. } => self.device.serial = serial.clone(),
            Event::RegistrationId { registration_id } => {
                self.device.registration_id = registration_id.clone()
            }
            Event::Warning { message } => self.device.warnings.push(message.clone()),
            Event::Writing { written, total } => self.device.progress = Some((*written, *total)),
            Event::Passed {
                registration_id,
                serial,
                duration_ms,
                ..
            } => {
                self.finish_running(false);
                self.device.banner = Some(Banner::Pass {
                    registration_id: registration_id.clone(),
                    serial: serial.clone(),
                    ms: *duration_ms,
                });
                self.device.steps = self.device.steps.map(|s| match s {
                    StepState::Waiting => StepState::Done(Duration::ZERO),
                    other => other,
                });
                self.play("pass.wav");
            }
            Event::Failed {
                problem,
                serial,
                registration_id,
            } => {
                self.finish_running(true);
                if let Some(s) = serial {
                    self.device.serial = s.clone();
                }
                if let Some(r) = registration_id {
                    self.device.registration_id = r.clone();
                }
                self.device.banner = Some(Banner::Fail(problem.clone()));
                self.play("fail.wav");
            }
            _ => {}
        }
        if let Some(step) = e.step()
            && !e.is_final()
        {
            self.begin(step);
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

    fn refresh_history(&mut self) {
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

    fn start(&mut self, command: Command) {
        if self.device.busy
            || self.operator.is_none()
            || !matches!(self.port, PortStatus::Connected(_))
        {
            return;
        }
        self.device = DeviceView {
            busy: true,
            ..Default::default()
        };
        self.last_start = Some(command.clone());
        self.send(command);
    }

    fn send(&self, c: Command) {
        if let Some(w) = &self.worker {
            let _ = w.tx.send(c);
        }
    }

    /// Send `job` to the jobs thread (`None`: the same work is already under way).
    fn queue(&self, job: Option<Job>) {
        if let Some(job) = job {
            self.jobs.send(job);
        }
    }

    /// Apply a command from a panel.
    pub fn apply(&mut self, c: UiCommand) {
        match c {
            UiCommand::Login(op) => {
                let op = op.trim().to_string();
                if !op.is_empty() {
                    self.operator = Some(op);
                    self.logged_in_at = crate::store::now();
                    self.operator_input.clear();
                    self.summary_due = Instant::now();
                }
            }
            UiCommand::Logout => self.operator = None,
            UiCommand::Start => {
                let scanned = self.serial_input.trim().to_string();
                self.serial_input.clear();
                self.start(Command::Provision {
                    scanned_serial: (!scanned.is_empty()).then_some(scanned),
                    operator: self.operator.clone().unwrap_or_default(),
                    permissions: Permissions::default(),
                });
            }
            UiCommand::Retry => {
                if let Some(c) = self.last_start.clone() {
                    self.start(c);
                }
            }
            UiCommand::Rerun(serial) => {
                self.serial_input = serial;
                self.apply(UiCommand::Start);
            }
            UiCommand::Export => {
                self.jobs.send(self.jobs_view.export());
            }
            UiCommand::Upload => {
                let job = self.jobs_view.upload();
                self.queue(job);
            }
            UiCommand::Verify => {
                let job = self.jobs_view.verify();
                self.queue(job);
            }
            UiCommand::CheckRegistration(id) => {
                let job = self.jobs_view.check_registration(id);
                self.queue(job);
            }
            UiCommand::SearchChanged => self.refresh_history(),
            UiCommand::ShowDetails(id) => {
                let _ = self.reader.tx.send(Query::Details {
                    registration_id: id,
                });
            }
            UiCommand::CloseDetails => self.history.details = None,
            UiCommand::ToggleSettings => {
                self.show_settings = !self.show_settings;
                if self.show_settings {
                    self.apply(UiCommand::ListPorts);
                }
            }
            UiCommand::RunDoctor => {
                self.jobs.send(Job::Doctor);
            }
            UiCommand::ListPorts => self.ports = super::ports::list(),
            UiCommand::UsePort(port) => {
                let port = port.trim().to_string();
                if port.is_empty() || self.device.busy {
                    return;
                }
                self.port = PortStatus::Opening;
                // The old worker (and its port) is gone before the new one opens the port.
                drop(self.worker.take());
                self.worker = Some(worker::spawn(
                    self.config.clone(),
                    Some(port),
                    self.opener.clone(),
                    repaint_fn(&self.ctx),
                ));
            }
        }
    }
}
