//! Running one fixture: which device is next, and when the station must stop.
//!
//! The rules, for every front end:
//! - after a PASS the station waits for another device (the technician swaps it); after a
//!   FAIL the device in the fixture may be attempted again at once (re-seated, or retried);
//! - automatic start (the window's `auto_start`) starts only a device not attempted since;
//! - the run stops on a failure that would fail every next device too (no database, the
//!   adapter unplugged), and on SIGINT/SIGTERM (the device in progress is abandoned before its
//!   COMMIT or finished after it).

use crate::device::Device;
use crate::domain::Event;
use crate::error::{Error, Result};
use crate::workflow::{DeviceInput, Interrupt, Outcome, Workflow};
use std::time::{Duration, Instant};

/// What a fixture has seen last.
#[derive(Debug, Clone, Default)]
pub struct NextDevice {
    passed: Option<String>,
    failed: Option<String>,
}

impl NextDevice {
    /// Remember how a device ended (`serial` when it was known).
    pub fn record(&mut self, result: &Result<Outcome>, serial: Option<&str>) {
        match result {
            Ok(o) => {
                self.passed = Some(o.serial.clone());
                self.failed = None;
            }
            Err(_) => self.failed = serial.map(str::to_string),
        }
    }

    /// Whether the device answering with `serial` has not been attempted since.
    pub fn is_new(&self, serial: &str) -> bool {
        self.passed.as_deref() != Some(serial) && self.failed.as_deref() != Some(serial)
    }

    /// Whether the next attempt must wait for another device (the last one passed).
    pub fn must_swap(&self) -> bool {
        self.passed.is_some() && self.failed.is_none()
    }

    /// Provision the device in the fixture and remember how it ended.
    pub fn provision(
        &mut self,
        workflow: &mut Workflow,
        device: &mut dyn Device,
        input: &DeviceInput,
        emit: &mut dyn FnMut(Event),
    ) -> Result<Outcome> {
        let mut serial = None;
        let result = workflow.provision(device, input, &mut |e| {
            if let Event::Identified { serial: s, .. } = &e {
                serial = Some(s.clone());
            }
            emit(e)
        });
        self.record(&result, serial.as_deref());
        result
    }

    /// Whether a device not attempted since answers now (one identify; errors count as no).
    pub fn poll(&self, device: &mut dyn Device) -> bool {
        device
            .identify()
            .is_ok_and(|info| self.is_new(&info.serial))
    }

    /// Wait until a device other than the last one passed answers (true), or until `done`
    /// says nothing more is wanted (false).
    pub fn wait(
        &self,
        device: &mut dyn Device,
        timeout: Duration,
        interrupt: &Interrupt,
        done: &dyn Fn() -> bool,
    ) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let previous = self.passed.clone().unwrap_or_default();
        loop {
            if let Some(signal) = interrupt.requested() {
                return Err(Error::Interrupted { signal });
            }
            if done() {
                return Ok(false);
            }
            match device.identify() {
                Ok(info) if info.serial != previous => return Ok(true),
                Ok(_) => std::thread::sleep(Duration::from_millis(200)),
                Err(e @ (Error::Disconnected { .. } | Error::Io { .. })) => return Err(e),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                return Err(Error::NoNextDevice {
                    port: device.port().to_string(),
                    previous,
                    waited_s: timeout.as_secs(),
                });
            }
        }
    }
}

/// Whether a failure stops the fixture: it would fail every next device too.
pub fn stops_fixture(e: &Error) -> bool {
    matches!(
        e,
        Error::Database { .. }
            | Error::Disconnected { .. }
            | Error::Io { .. }
            | Error::Interrupted { .. }
    )
}

/// How a run of several devices went.
#[derive(Debug, Default)]
pub struct Tally {
    pub passed: u32,
    pub failed: u32,
    pub not_run: u32,
    /// The failure that stopped the run early, if any.
    pub stopped: Option<Error>,
    /// Waiting for the next device ended the run (the message was already emitted).
    pub waiting: Option<Error>,
}

/// Devices still to provision, shared by the fixtures of one run (`--count N` is the total).
#[derive(Debug)]
pub struct Slots(std::sync::atomic::AtomicU32);

impl Slots {
    pub fn new(count: u32) -> Self {
        Self(std::sync::atomic::AtomicU32::new(count))
    }

    /// Take one device's slot; false when none is left.
    pub fn take(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.0
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Slots not taken.
    pub fn left(&self) -> u32 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Provision up to `count` devices on one fixture, by the rules above.
pub fn run(
    workflow: &mut Workflow,
    device: &mut dyn Device,
    input: &DeviceInput,
    count: u32,
    next_device_timeout: Duration,
    interrupt: &Interrupt,
    emit: &mut dyn FnMut(Event),
) -> Tally {
    let slots = Slots::new(count);
    let mut tally = run_slots(
        workflow,
        device,
        input,
        &slots,
        next_device_timeout,
        interrupt,
        emit,
    );
    tally.not_run = slots.left();
    tally
}

/// Provision devices on one fixture while `slots` has some, by the rules above (the fixture's
/// share of a run over several fixtures). `not_run` is left to the caller.
pub fn run_slots(
    workflow: &mut Workflow,
    device: &mut dyn Device,
    input: &DeviceInput,
    slots: &Slots,
    next_device_timeout: Duration,
    interrupt: &Interrupt,
    emit: &mut dyn FnMut(Event),
) -> Tally {
    let mut tally = Tally::default();
    let mut next = NextDevice::default();
    // A slot is taken once a device is there: a fixture waiting for its next device does not
    // hold one another fixture's device could use.
    while interrupt.requested().is_none() && slots.left() > 0 {
        if next.must_swap() {
            match next.wait(device, next_device_timeout, interrupt, &|| {
                slots.left() == 0
            }) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tally.waiting = Some(e);
                    break;
                }
            }
        }
        if !slots.take() {
            break;
        }
        match next.provision(workflow, device, input, emit) {
            Ok(_) => tally.passed += 1,
            Err(e) => {
                tally.failed += 1;
                if stops_fixture(&e) {
                    tally.stopped = Some(e);
                    break;
                }
            }
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(serial: &str) -> Result<Outcome> {
        Ok(Outcome {
            registration_id: serial.to_lowercase(),
            serial: serial.into(),
            duration: Duration::ZERO,
            io_wait: Duration::ZERO,
        })
    }

    #[test]
    fn a_passed_device_is_not_new_and_must_be_swapped() {
        let mut n = NextDevice::default();
        assert!(n.is_new("A") && !n.must_swap());
        n.record(&passed("A"), Some("A"));
        assert!(!n.is_new("A") && n.is_new("B") && n.must_swap());
    }

    #[test]
    fn a_failed_device_may_be_retried_but_is_not_auto_started_again() {
        let mut n = NextDevice::default();
        n.record(&passed("A"), Some("A"));
        n.record(&Err(Error::NoSerial), Some("B"));
        assert!(!n.must_swap(), "a failed device is attempted again at once");
        assert!(
            !n.is_new("B"),
            "auto-start does not loop on a failed device"
        );
        assert!(n.is_new("C"));
    }

    #[test]
    fn only_station_wide_failures_stop_the_fixture() {
        assert!(stops_fixture(&Error::Interrupted { signal: "SIGINT" }));
        assert!(!stops_fixture(&Error::NoSerial));
    }
}
