//! Which device each fixture is working on, so that two fixtures never provision one device
//! (the same unit seen twice, or two units carrying one serial label).
//!
//! A fixture claims the device's serial and registration ID once it is identified, before
//! anything is recorded; the claim ends with the device's cycle. The second fixture fails with
//! `fixture.same_device` and touches no enrollment.

use crate::domain::FixtureId;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The devices in progress on a station's fixtures (shared by all its workflows).
#[derive(Debug, Clone, Default)]
pub struct Claims(Arc<Mutex<HashMap<String, FixtureId>>>);

/// A fixture's hold on one device; dropping it releases the device.
#[derive(Debug)]
pub struct Claim {
    claims: Claims,
    keys: Vec<String>,
}

impl Claims {
    /// Claim the device `serial` / `registration_id` for `fixture`, or say which fixture has it.
    pub fn claim(&self, fixture: &FixtureId, serial: &str, registration_id: &str) -> Result<Claim> {
        let keys = vec![
            format!("serial:{serial}"),
            format!("id:{}", registration_id.to_ascii_lowercase()),
        ];
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(other) = keys
            .iter()
            .filter_map(|k| held.get(k))
            .find(|f| *f != fixture)
        {
            return Err(Error::SameDevice {
                serial: serial.to_string(),
                registration_id: registration_id.to_string(),
                fixture: other.0.clone(),
            });
        }
        for k in &keys {
            held.insert(k.clone(), fixture.clone());
        }
        Ok(Claim {
            claims: self.clone(),
            keys,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = self.claims.0.lock().unwrap_or_else(|p| p.into_inner());
        for k in &self.keys {
            held.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_device_is_held_by_one_fixture_until_its_cycle_ends() {
        let c = Claims::default();
        let (a, b) = (FixtureId("a".into()), FixtureId("b".into()));
        let held = c.claim(&a, "SN1", "sn1").unwrap();
        let e = c.claim(&b, "SN1", "sn1").unwrap_err();
        assert_eq!(e.code().as_str(), "fixture.same_device");
        assert!(e.to_string().contains("fixture a"), "{e}");
        // Another unit with the same label maps to the same registration ID: refused too.
        assert!(c.claim(&b, "SN1-B", "SN1").is_err());
        assert!(c.claim(&b, "SN2", "sn2").is_ok());
        drop(held);
        assert!(c.claim(&b, "SN1", "sn1").is_ok());
    }
}
