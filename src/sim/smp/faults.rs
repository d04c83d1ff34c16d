//! The faults the SMP simulator can inject, and their `--fault` spec syntax.

use std::time::Duration;

/// Faults of a simulated MCUmgr device (docs/smp.md, "Simulator").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmpFaults {
    /// Console output between answers (Zephyr's log on the same UART).
    pub noise: bool,
    /// Corrupt one byte of every Nth answer.
    pub corrupt_every: Option<u32>,
    /// Drop every Nth answer.
    pub drop_every: Option<u32>,
    /// The file system holds at most this many bytes of files.
    pub fs_capacity: Option<u64>,
    /// Report a wrong SHA-256 for files with this name (the last path component).
    pub wrong_hash: Option<String>,
    /// The first chunk of every upload (which erases) takes this long.
    pub slow_erase: Option<Duration>,
}

impl SmpFaults {
    /// Parse one `--fault` spec: `noise`, `corrupt:N`, `drop:N`, `fs-full:BYTES`,
    /// `wrong-hash[:NAME]`, `slow-erase:MS`.
    pub fn add(&mut self, spec: &str) -> Result<(), String> {
        let (name, arg) = match spec.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (spec, None),
        };
        let num = |what: &str| -> Result<u64, String> {
            arg.and_then(|a| a.parse::<u64>().ok())
                .filter(|n| *n > 0 || what == "bytes")
                .ok_or_else(|| format!("fault `{spec}` needs {what}, e.g. {name}:3"))
        };
        match name {
            "noise" => self.noise = true,
            "corrupt" => self.corrupt_every = Some(num("a count above 0")? as u32),
            "drop" => self.drop_every = Some(num("a count above 0")? as u32),
            "fs-full" => self.fs_capacity = Some(num("bytes")?),
            "wrong-hash" => {
                self.wrong_hash = Some(arg.filter(|a| !a.is_empty()).unwrap_or("credential").into())
            }
            "slow-erase" => {
                self.slow_erase = Some(Duration::from_millis(num("milliseconds above 0")?))
            }
            _ => {
                return Err(format!(
                    "unknown SMP fault `{spec}`; use noise, corrupt:N, drop:N, fs-full:BYTES, wrong-hash[:NAME], slow-erase:MS"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_unknown_ones_list_the_known() {
        let mut f = SmpFaults::default();
        f.add("drop:3").unwrap();
        f.add("fs-full:100").unwrap();
        f.add("wrong-hash").unwrap();
        f.add("slow-erase:1500").unwrap();
        assert_eq!(f.drop_every, Some(3));
        assert_eq!(f.fs_capacity, Some(100));
        assert_eq!(f.wrong_hash.as_deref(), Some("credential"));
        assert_eq!(f.slow_erase, Some(Duration::from_millis(1500)));
        assert!(f.add("drop:0").unwrap_err().contains("count above 0"));
        assert!(f.add("stall").unwrap_err().contains("slow-erase:MS"));
    }
}
