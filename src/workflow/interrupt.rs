//! A stop request (SIGINT, SIGTERM, or a front end's Stop) that the workflow honours up to a
//! device's COMMIT.

use crate::error::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A request to stop, set by SIGINT or SIGTERM (or by a front end). The current device is
/// abandoned before its COMMIT, or finished after it; nothing new starts.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    signal: Arc<AtomicUsize>,
    seen: Arc<AtomicBool>,
}

impl Interrupt {
    /// Route SIGINT and SIGTERM here. A second signal ends the process at once (exit 130).
    pub fn install() -> Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let i = Self::default();
        for sig in [SIGINT, SIGTERM] {
            let registered = signal_hook::flag::register_conditional_shutdown(
                sig,
                crate::error::ExitClass::Interrupted as i32,
                i.seen.clone(),
            )
            .and_then(|_| signal_hook::flag::register(sig, i.seen.clone()))
            .and_then(|_| signal_hook::flag::register_usize(sig, i.signal.clone(), sig as usize));
            registered.map_err(|e| Error::Internal {
                message: format!("cannot install a signal handler: {e}"),
            })?;
        }
        Ok(i)
    }

    /// Ask for a stop, as a signal would.
    pub fn request(&self, signal: i32) {
        self.signal.store(signal as usize, Ordering::SeqCst);
        self.seen.store(true, Ordering::SeqCst);
    }

    /// The signal that asked for a stop, if any.
    pub fn requested(&self) -> Option<&'static str> {
        if !self.seen.load(Ordering::SeqCst) {
            return None;
        }
        Some(match self.signal.load(Ordering::SeqCst) as i32 {
            signal_hook::consts::SIGTERM => "SIGTERM",
            signal_hook::consts::SIGINT => "SIGINT",
            _ => "a stop request",
        })
    }
}
