//! The window's fixture workers: one [`worker`](super::worker) thread per fixture of
//! `Config::fixtures()`, all reporting into one channel, all sharing one [`Claims`] so that a
//! device is never provisioned on two fixtures at once. Owns the threads; knows nothing of
//! the window's state (`app` turns the reports into state).

use super::worker::{self, Command, Report, Seams, Tagged, Worker};
use crate::config::FixtureConfig;
use crate::device::Opener;
use crate::workflow::Claims;
use eframe::egui;
use std::sync::mpsc::{Receiver, Sender, channel};

/// Every fixture's worker, by fixture index (the order of `Config::fixtures()`).
pub struct Workers {
    fixtures: Vec<FixtureConfig>,
    workers: Vec<Option<Worker>>,
    opener: Opener,
    claims: Claims,
    reports: Sender<Tagged>,
    rx: Receiver<Tagged>,
    ctx: egui::Context,
}

impl Workers {
    /// Start a worker on every fixture, each opening its device with `opener`.
    pub fn spawn_all(fixtures: Vec<FixtureConfig>, opener: Opener, ctx: &egui::Context) -> Self {
        let (reports, rx) = channel();
        let mut all = Self {
            workers: fixtures.iter().map(|_| None).collect(),
            fixtures,
            opener,
            claims: Claims::default(),
            reports,
            rx,
            ctx: ctx.clone(),
        };
        for i in 0..all.fixtures.len() {
            all.start(i, None);
        }
        all
    }

    /// (Re)start fixture `i`'s worker, on `port` if given.
    fn start(&mut self, i: usize, port: Option<String>) {
        let Some(fixture) = self.fixtures.get(i).cloned() else {
            return;
        };
        let seams = Seams {
            opener: self.opener.clone(),
            claims: self.claims.clone(),
            reports: self.reports.clone(),
        };
        let ctx = self.ctx.clone();
        self.workers[i] = Some(worker::spawn(fixture, port, seams, move || {
            ctx.request_repaint()
        }));
    }

    /// Send `command` to fixture `i`'s worker.
    pub fn send(&self, i: usize, command: Command) {
        if let Some(Some(w)) = self.workers.get(i) {
            let _ = w.tx.send(command);
        }
    }

    /// Close fixture `i`'s port and open `port` instead: the old worker (and its port) is gone
    /// before the new one opens the port.
    pub fn reopen(&mut self, i: usize, port: String) {
        if let Some(slot) = self.workers.get_mut(i) {
            drop(slot.take());
            self.start(i, Some(port));
        }
    }

    /// The reports waiting, each with the index of the fixture it comes from.
    pub fn drain(&self) -> Vec<(usize, Report)> {
        self.rx
            .try_iter()
            .filter_map(|t| {
                let i = self.fixtures.iter().position(|f| f.id == t.fixture)?;
                Some((i, t.report))
            })
            .collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Ask every worker first, then wait for each: the fixtures wind down together.
        for w in self.workers.iter().flatten() {
            let _ = w.tx.send(Command::Shutdown);
        }
        self.workers.clear();
    }
}
