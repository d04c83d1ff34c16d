//! The station service: everything a front end asks of the station, in one place.
//!
//! [`fixture`] runs one fixture: the next-device rule and the stop rules, the same for the
//! command line and the window. [`jobs`] does the station's other work (start-of-run checks,
//! export, upload, verification) and runs it on its own thread for the window, so the fixture
//! never waits for the network. [`doctor`] checks a station before a shift. Front ends
//! (`cli`, `gui`) parse, render [`Event`](crate::domain::Event)s and call these.

pub mod doctor;
pub mod fixture;
pub mod jobs;

pub use fixture::{NextDevice, Tally};
pub use jobs::{Job, JobOutcome, Jobs, Notice};

use crate::error::{Error, ErrorCode};

/// An error as a front end shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub code: ErrorCode,
    pub message: String,
    pub remedy: &'static str,
}

impl From<&Error> for Problem {
    fn from(e: &Error) -> Self {
        Problem {
            code: e.code(),
            message: e.to_string(),
            remedy: e.remedy(),
        }
    }
}
