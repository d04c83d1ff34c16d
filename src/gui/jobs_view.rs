//! What the window knows of the jobs thread's work: export, upload, verification with DPS and
//! registration checks, with the progress of the one running. Plain state: it turns the jobs
//! thread's outcomes into notes and clicks into [`Job`]s; it sends nothing and draws nothing
//! (`app` sends, `shift_panel`, `dps_panel` and `dialogs` draw). Imports no sibling.

use crate::domain::Event;
use crate::domain::event::{Progress, RegistrationState};
use crate::dps::export::ExportSummary;
use crate::dps::upload::{RegistrationSummary, UploadSummary, VerifySummary};
use crate::station::{Job, JobOutcome, Problem};
use std::collections::HashMap;

/// What verification found: what DPS holds, then whether the devices came up.
pub type VerifyNote = Result<(VerifySummary, RegistrationSummary), Problem>;

/// One device's registration check, asked from the details window.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistrationCheck {
    /// Sent to the jobs thread (which may be busy with an upload first).
    Asked,
    /// DPS's answer (`None`: the station has not uploaded this enrollment).
    Answered(Result<Option<RegistrationState>, Problem>),
}

/// The jobs thread's work as the window shows it.
#[derive(Debug, Default)]
pub struct JobsView {
    pub export_note: Option<Result<Option<ExportSummary>, Problem>>,
    pub upload_note: Option<Result<UploadSummary, Problem>>,
    pub uploading: bool,
    pub verify_note: Option<VerifyNote>,
    pub verifying: bool,
    /// The latest progress of the export, upload or verification running now; cleared by the
    /// job's final outcome.
    pub progress: Option<Progress>,
    /// Registration checks by registration ID.
    pub registrations: HashMap<String, RegistrationCheck>,
}

impl JobsView {
    /// An upload or verification is queued or running (each talks to DPS; one at a time).
    pub fn dps_busy(&self) -> bool {
        self.uploading || self.verifying
    }

    /// Export clicked: the job to send.
    pub fn export(&mut self) -> Job {
        self.export_note = None;
        Job::Export
    }

    /// Upload clicked: the job to send, unless DPS work is already under way.
    pub fn upload(&mut self) -> Option<Job> {
        if self.dps_busy() {
            return None;
        }
        self.upload_note = None;
        self.uploading = true;
        Some(Job::Upload)
    }

    /// Verify clicked: the job to send, unless DPS work is already under way.
    pub fn verify(&mut self) -> Option<Job> {
        if self.dps_busy() {
            return None;
        }
        self.verify_note = None;
        self.verifying = true;
        Some(Job::Verify)
    }

    /// Check registration clicked for `registration_id`: the job to send, unless that
    /// question is already asked.
    pub fn check_registration(&mut self, registration_id: String) -> Option<Job> {
        if self.registrations.get(&registration_id) == Some(&RegistrationCheck::Asked) {
            return None;
        }
        self.registrations
            .insert(registration_id.clone(), RegistrationCheck::Asked);
        Some(Job::Registration(registration_id))
    }

    /// Take in one outcome. Doctor checks and start notices are the window's own business
    /// and are ignored here.
    pub fn take(&mut self, outcome: JobOutcome) {
        match outcome {
            JobOutcome::Event(Event::Progress(p)) => self.progress = Some(p),
            JobOutcome::Event(_) => {}
            JobOutcome::Exported(r) => {
                self.export_note = Some(r);
                self.progress = None;
            }
            JobOutcome::Uploaded(r) => {
                self.upload_note = Some(r);
                self.uploading = false;
                self.progress = None;
            }
            JobOutcome::Verified(r) => {
                self.verify_note = Some(r);
                self.verifying = false;
                self.progress = None;
            }
            JobOutcome::Registration(id, r) => {
                self.registrations
                    .insert(id, RegistrationCheck::Answered(r));
            }
            JobOutcome::Notices(_) | JobOutcome::Checked(_) => {}
        }
    }
}
