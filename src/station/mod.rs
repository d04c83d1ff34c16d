//! The station service: everything a front end asks of the station, in one place.
//!
//! [`fixture`] runs one fixture: the next-device rule and the stop rules, the same for the
//! command line and the window; [`gang`] runs several at once, one thread each. [`jobs`] does the station's other work (start-of-run checks,
//! export, upload, verification) and runs it on its own thread for the window, so the fixture
//! never waits for the network. [`labels`] prints a device label after each PASS on a printer
//! thread with its own bounded queue, so a printer never holds up a fixture. [`doctor`] checks
//! a station before a shift. Front ends
//! (`cli`, `gui`) parse, render [`Event`](crate::domain::Event)s and call these.

pub mod doctor;
pub mod fixture;
pub mod gang;
pub mod jobs;
pub mod labels;

pub use fixture::{NextDevice, Slots, Tally};
pub use gang::{FixtureTally, GangTally, run_all};
pub use jobs::{Job, JobOutcome, Jobs, Notice};
pub use labels::{FixtureLabels, LabelEvent, LabelJob, Labels, LastLabel};

/// An error as a front end shows it.
pub use crate::error::Problem;
