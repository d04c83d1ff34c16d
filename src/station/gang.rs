//! Several fixtures at once (a gang fixture): one thread per fixture, each with its own device
//! and workflow (its own database connection; SQLite in WAL mode, short write transactions),
//! sharing the station's device claims (one device is never provisioned on two fixtures) and
//! the count of devices still to do.

use super::fixture::{Slots, Tally, run_slots};
use crate::config::FixtureConfig;
use crate::device::Opener;
use crate::domain::{Event, FixtureId};
use crate::workflow::{Claims, DeviceInput, Interrupt, Workflow};
use std::time::Duration;

/// How one fixture's share of a run went.
#[derive(Debug)]
pub struct FixtureTally {
    pub fixture: FixtureId,
    pub label: String,
    pub tally: Tally,
}

/// How a run over several fixtures went.
#[derive(Debug)]
pub struct GangTally {
    pub fixtures: Vec<FixtureTally>,
    /// Devices of `--count` no fixture got to.
    pub not_run: u32,
}

impl GangTally {
    pub fn passed(&self) -> u32 {
        self.fixtures.iter().map(|f| f.tally.passed).sum()
    }

    pub fn failed(&self) -> u32 {
        self.fixtures.iter().map(|f| f.tally.failed).sum()
    }
}

/// Provision up to `count` devices in all on `fixtures`, each fixture by the one-fixture rules
/// ([`super::fixture`]). `emit` receives every fixture's events, with the fixture's id.
pub fn run_all(
    fixtures: &[FixtureConfig],
    opener: &Opener,
    input: &DeviceInput,
    count: u32,
    interrupt: &Interrupt,
    emit: &(dyn Fn(&FixtureId, Event) + Sync),
) -> GangTally {
    let slots = Slots::new(count);
    let claims = Claims::default();
    let tallies = std::thread::scope(|s| {
        let threads: Vec<_> = fixtures
            .iter()
            .map(|f| {
                let (slots, claims) = (&slots, claims.clone());
                std::thread::Builder::new()
                    .name(format!("fixture-{}", f.id))
                    .spawn_scoped(s, move || {
                        one_fixture(f, opener, input, slots, claims, interrupt, emit)
                    })
                    .expect("spawn a fixture thread")
            })
            .collect();
        threads
            .into_iter()
            .zip(fixtures)
            .map(|(t, f)| FixtureTally {
                fixture: f.id.clone(),
                label: f.label.clone(),
                tally: t.join().unwrap_or_else(|_| Tally {
                    stopped: Some(crate::Error::Internal {
                        message: format!("the thread of fixture {} panicked", f.id),
                    }),
                    ..Tally::default()
                }),
            })
            .collect()
    });
    GangTally {
        fixtures: tallies,
        not_run: slots.left(),
    }
}

/// One fixture's loop: its workflow, its device, its share of the slots.
fn one_fixture(
    f: &FixtureConfig,
    opener: &Opener,
    input: &DeviceInput,
    slots: &Slots,
    claims: Claims,
    interrupt: &Interrupt,
    emit: &(dyn Fn(&FixtureId, Event) + Sync),
) -> Tally {
    let stopped = |e| Tally {
        stopped: Some(e),
        ..Tally::default()
    };
    let mut workflow = match Workflow::new(&f.config) {
        Ok(w) => w,
        Err(e) => return stopped(e),
    };
    workflow.set_fixture(f.id.clone(), claims);
    workflow.set_interrupt(interrupt.clone());
    let mut fixture = match opener(&f.config, None) {
        Ok(x) => x,
        Err(e) => return stopped(e),
    };
    run_slots(
        &mut workflow,
        fixture.device.as_mut(),
        input,
        slots,
        Duration::from_secs(f.config.serial.next_device_timeout_s),
        interrupt,
        &mut |e| emit(&f.id, e),
    )
}
