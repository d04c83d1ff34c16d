//! One fixture as the window shows it: its port, the device on it with its six steps and the
//! result banner, the serial typed or scanned for it, and its own pass/fail counters. Plain
//! state: it takes the fixture worker's events and draws nothing (the single-fixture panel
//! and the tiles draw it). Also the barcode prefix rule that routes a scan to a fixture.

use super::worker::Command;
use crate::config::FixtureConfig;
use crate::domain::{Event, FixtureId, Step};
use crate::station::Problem;
use std::time::{Duration, Instant};

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

impl DeviceView {
    /// A device cycle just started.
    pub fn started() -> Self {
        Self {
            busy: true,
            ..Default::default()
        }
    }

    fn finish_running(&mut self, failed: bool) {
        for s in &mut self.steps {
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
        if !matches!(self.steps[i], StepState::Done(_)) {
            self.steps[i] = StepState::Running(Instant::now());
        }
    }

    /// Apply one workflow event. Answers whether the device passed once its cycle ends.
    pub fn on_event(&mut self, e: &Event) -> Option<bool> {
        let mut ended = None;
        match e {
            Event::Connecting { .. } => *self = Self::started(),
            Event::Identified { serial, .. } => self.serial = serial.clone(),
            Event::RegistrationId { registration_id } => {
                self.registration_id = registration_id.clone()
            }
            Event::Warning { message } => self.warnings.push(message.clone()),
            Event::Writing { written, total } => self.progress = Some((*written, *total)),
            Event::Passed {
                registration_id,
                serial,
                duration_ms,
                ..
            } => {
                self.finish_running(false);
                self.banner = Some(Banner::Pass {
                    registration_id: registration_id.clone(),
                    serial: serial.clone(),
                    ms: *duration_ms,
                });
                self.steps = self.steps.map(|s| match s {
                    StepState::Waiting => StepState::Done(Duration::ZERO),
                    other => other,
                });
                ended = Some(true);
            }
            Event::Failed {
                problem,
                serial,
                registration_id,
            } => {
                self.finish_running(true);
                if let Some(s) = serial {
                    self.serial = s.clone();
                }
                if let Some(r) = registration_id {
                    self.registration_id = r.clone();
                }
                self.banner = Some(Banner::Fail(problem.clone()));
                ended = Some(false);
            }
            _ => {}
        }
        if let Some(step) = e.step()
            && !e.is_final()
        {
            self.begin(step);
        }
        ended
    }

    /// The step running now (or the one that failed), for a compact progress line.
    pub fn current_step(&self) -> Option<(usize, Step, StepState)> {
        let found = self
            .steps
            .iter()
            .rposition(|s| matches!(s, StepState::Running(_) | StepState::Failed(_)))?;
        Some((found, Step::ALL[found], self.steps[found]))
    }
}

/// The fixture's port, as its header or tile shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum PortStatus {
    Opening,
    Connected(String),
    Error(Problem),
}

/// One fixture in the window.
#[derive(Debug, Clone)]
pub struct FixtureView {
    pub id: FixtureId,
    /// What the technician reads on the tile.
    pub label: String,
    /// The port station.toml gives it (Settings starts from it).
    pub configured_port: String,
    pub port: PortStatus,
    pub device: DeviceView,
    /// The serial typed or scanned for the next device on this fixture.
    pub serial_input: String,
    /// Devices passed and failed on this fixture since the operator logged in.
    pub passed: u32,
    pub failed: u32,
    /// What the last Start sent (Retry sends it again).
    pub last_start: Option<Command>,
}

impl FixtureView {
    pub fn new(fixture: &FixtureConfig) -> Self {
        Self {
            id: fixture.id.clone(),
            label: fixture.label.clone(),
            configured_port: fixture.config.serial.port.clone(),
            port: PortStatus::Opening,
            device: DeviceView::default(),
            serial_input: String::new(),
            passed: 0,
            failed: 0,
            last_start: None,
        }
    }

    /// The port is open and no device is running: Start may send a device.
    pub fn ready(&self) -> bool {
        !self.device.busy && matches!(self.port, PortStatus::Connected(_))
    }

    /// Apply one workflow event; count the device once its cycle ends.
    pub fn on_event(&mut self, e: &Event) -> Option<bool> {
        let ended = self.device.on_event(e);
        match ended {
            Some(true) => self.passed += 1,
            Some(false) => self.failed += 1,
            None => {}
        }
        ended
    }
}

/// Where a scan goes: `ID:SERIAL` or `ID/SERIAL`, where `ID` is one of `ids` (exactly, else
/// ignoring case), goes to that fixture with `SERIAL` (maybe empty); anything else is `None`
/// (it stays with the fixture it was scanned into).
pub fn route_scan<'a>(ids: &[FixtureId], scan: &'a str) -> Option<(usize, &'a str)> {
    let at = scan.find([':', '/'])?;
    let (prefix, serial) = (&scan[..at], scan[at + 1..].trim());
    let i = ids
        .iter()
        .position(|id| id.0 == prefix)
        .or_else(|| ids.iter().position(|id| id.0.eq_ignore_ascii_case(prefix)))?;
    Some((i, serial))
}
