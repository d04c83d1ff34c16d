//! Applying what the operator asked for ([`UiCommand`]), after the frame is drawn: starting
//! fixtures (one, all, a retry, a scan routed by its fixture prefix), the jobs, the history,
//! the dialogs, the ports and label reprints.

use super::app::{StationApp, UiCommand};
use super::fixture::{PortStatus, route_scan};
use super::worker::Command;
use crate::station::Job;
use crate::workflow::Permissions;
use std::time::Instant;

impl StationApp {
    /// Apply a command from a panel.
    pub fn apply(&mut self, c: UiCommand) {
        match c {
            UiCommand::Login(op) => self.login(op),
            UiCommand::Logout => {
                if let Some(op) = self.operator.take() {
                    self.jobs.send(Job::Audit("operator.logout".into(), op));
                }
            }
            UiCommand::Start(i) => self.start_scanned(i),
            UiCommand::StartAll => self.start_all(),
            UiCommand::Retry(i) => {
                if let Some(c) = self.fixtures.get(i).and_then(|f| f.last_start.clone()) {
                    self.start(i, c);
                }
            }
            UiCommand::Select(i) if i < self.fixtures.len() => self.selected = i,
            UiCommand::Select(_) => {}
            UiCommand::Rerun(serial) => {
                let i = self.selected.min(self.fixtures.len().saturating_sub(1));
                if let Some(f) = self.fixtures.get_mut(i) {
                    f.serial_input = serial;
                    self.apply(UiCommand::Start(i));
                }
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
            c => self.apply_view(c),
        }
    }

    /// The history, the dialogs and the ports.
    fn apply_view(&mut self, c: UiCommand) {
        match c {
            UiCommand::SearchChanged => self.refresh_history(),
            UiCommand::ShowDetails(id) => {
                let _ = self.reader.tx.send(super::reader::Query::Details {
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
            UiCommand::UsePort(port) => self.use_port(port),
            UiCommand::Reprint(id) => self.labels.reprint(id),
            _ => {}
        }
    }

    fn login(&mut self, op: String) {
        let op = op.trim().to_string();
        if op.is_empty() {
            return;
        }
        self.jobs
            .send(Job::Audit("operator.login".into(), op.clone()));
        self.operator = Some(op);
        self.logged_in_at = crate::store::now();
        self.operator_input.clear();
        self.summary_due = Instant::now();
        // The tiles count the shift, like the shift panel.
        for f in &mut self.fixtures {
            f.passed = 0;
            f.failed = 0;
        }
    }

    /// A provisioning command for the logged-in operator.
    fn provision(&self, scanned: String) -> Command {
        Command::Provision {
            scanned_serial: (!scanned.is_empty()).then_some(scanned),
            operator: self.operator.clone().unwrap_or_default(),
            permissions: Permissions::default(),
        }
    }

    /// Start (Start clicked, or Enter after a scan) with what fixture `i`'s field holds. With
    /// several fixtures, a fixture prefix sends it to that fixture; a scan for a fixture that
    /// cannot start now stays in that fixture's field for its next Start.
    fn start_scanned(&mut self, i: usize) {
        let Some(f) = self.fixtures.get_mut(i) else {
            return;
        };
        let typed = std::mem::take(&mut f.serial_input).trim().to_string();
        let ids: Vec<_> = self.fixtures.iter().map(|f| f.id.clone()).collect();
        let (target, scanned) = match route_scan(&ids, &typed).filter(|_| self.is_gang()) {
            Some((t, serial)) => (t, serial.to_string()),
            None => (i, typed),
        };
        let command = self.provision(scanned.clone());
        if self.start(target, command) {
            self.select_next_idle(target);
        } else if !scanned.is_empty() {
            self.fixtures[target].serial_input = scanned;
        }
    }

    /// Start every fixture that can take a device now, each with what its field holds.
    fn start_all(&mut self) {
        for i in 0..self.fixtures.len() {
            if self.fixtures[i].ready() {
                let typed = std::mem::take(&mut self.fixtures[i].serial_input);
                let command = self.provision(typed.trim().to_string());
                self.start(i, command);
            }
        }
    }

    /// After a start on fixture `from`, the next scan goes to the next fixture that waits for
    /// a device (so scanning the devices of a gang in order fills it in order).
    fn select_next_idle(&mut self, from: usize) {
        let n = self.fixtures.len();
        if let Some(next) = (1..n).map(|k| (from + k) % n).find(|&j| {
            let f = &self.fixtures[j];
            f.ready() && f.serial_input.is_empty()
        }) {
            self.selected = next;
        }
    }

    /// Settings: open `port` for the fixture Settings shows.
    fn use_port(&mut self, port: String) {
        let port = port.trim().to_string();
        let i = self.settings_fixture;
        match self.fixtures.get_mut(i) {
            Some(f) if !port.is_empty() && !f.device.busy => {
                f.port = PortStatus::Opening;
                self.workers.reopen(i, port);
            }
            _ => {}
        }
    }
}
