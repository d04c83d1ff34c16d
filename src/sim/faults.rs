//! The faults the simulator can inject, and the `--fault` spec syntax that turns them on.

use crate::device::v1::protocol::{NakCode, kind};

/// Faults the simulator can inject (see `docs/protocol.md`, "Simulator").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Boot-log text at power-on and log lines between frames.
    pub noise: bool,
    /// Corrupt one byte of every Nth response.
    pub corrupt_every: Option<u32>,
    /// Drop every Nth response.
    pub drop_every: Option<u32>,
    /// Stop answering at the first request of this type (the device hangs).
    pub stall_on: Option<u8>,
    /// Close the line at the second request of this type (unplugged mid-operation).
    pub disconnect_on: Option<u8>,
    /// Refuse every request of this type with this NAK code.
    pub nak_on: Option<(u8, u8)>,
    /// Devices come with an identity already committed under this registration ID.
    pub provisioned_as: Option<String>,
    /// The device stores a corrupted credential (its digest will not match).
    pub bad_storage: bool,
    /// GEN_CSR answers with a CSR whose signature is broken.
    pub csr_tamper: bool,
    /// GEN_CSR puts this CN in the CSR instead of the one asked for.
    pub csr_cn: Option<String>,
    /// GEN_CSR makes a key of this type instead (`ed25519`, `p256`, `p384`, `rsa2048`).
    pub csr_key: Option<String>,
    /// Refuse the first N requests of this type with BUSY (a device still booting).
    pub busy_on: Option<(u8, u32)>,
    /// Answer this request type with a response of another type (firmware bug).
    pub wrong_type_on: Option<u8>,
    /// Answer this request type under the previous sequence number.
    pub stale_seq_on: Option<u8>,
    /// Refuse this request type with a NAK that has no code byte.
    pub empty_nak_on: Option<u8>,
    /// Answer COMMIT/READ_DIGEST of this type with this state byte.
    pub state_on: Option<(u8, u8)>,
}

impl Faults {
    /// Parse one `--fault` spec: `noise`, `corrupt:N`, `drop:N`, `stall[:CMD]`,
    /// `disconnect[:CMD]`, `nak:CMD[:CODE]`, `provisioned:REGID`, `bad-storage`.
    pub fn add(&mut self, spec: &str) -> Result<(), String> {
        let s = Spec::parse(spec);
        match s.name {
            "noise" => self.noise = true,
            "corrupt" => self.corrupt_every = Some(s.num(s.a)?),
            "drop" => self.drop_every = Some(s.num(s.a)?),
            "stall" => self.stall_on = Some(s.cmd(kind::WRITE)?),
            "disconnect" => self.disconnect_on = Some(s.cmd(kind::WRITE)?),
            "nak" => self.nak_on = Some(s.nak()?),
            "provisioned" => self.provisioned_as = Some(s.text("a registration ID")?),
            "bad-storage" => self.bad_storage = true,
            "busy" => self.busy_on = Some(s.busy()?),
            "wrong-type" => self.wrong_type_on = Some(s.cmd(kind::COMMIT)?),
            "stale-seq" => self.stale_seq_on = Some(s.cmd(kind::COMMIT)?),
            "empty-nak" => self.empty_nak_on = Some(s.cmd(kind::COMMIT)?),
            "state" => self.state_on = Some(s.state()?),
            "csr-tamper" => self.csr_tamper = true,
            "csr-cn" => self.csr_cn = Some(s.text("a CN")?),
            "csr-key" => self.csr_key = Some(s.csr_key()?),
            _ => {
                return Err(format!(
                    "unknown fault `{spec}`; use noise, corrupt:N, drop:N, stall[:CMD], disconnect[:CMD], nak:CMD[:CODE], provisioned:ID, bad-storage, csr-tamper, csr-cn:CN, csr-key:TYPE, busy:CMD[:N], wrong-type:CMD, stale-seq:CMD, empty-nak:CMD, state:CMD:N"
                ));
            }
        }
        Ok(())
    }
}

/// One `--fault` spec cut at its colons: `name[:a[:b]]`.
struct Spec<'a> {
    spec: &'a str,
    name: &'a str,
    a: Option<&'a str>,
    b: Option<&'a str>,
}

impl<'a> Spec<'a> {
    fn parse(spec: &'a str) -> Self {
        let mut parts = spec.splitn(3, ':');
        let name = parts.next().unwrap_or("");
        let a = parts.next();
        let b = parts.next();
        Spec { spec, name, a, b }
    }

    /// A count above 0.
    fn num(&self, v: Option<&str>) -> Result<u32, String> {
        let (spec, name) = (self.spec, self.name);
        v.and_then(|s| s.parse().ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("fault `{spec}` needs a count above 0, e.g. {name}:3"))
    }

    /// The request type named by the first argument, `default` when there is none.
    fn cmd(&self, default: u8) -> Result<u8, String> {
        let spec = self.spec;
        match self.a.map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("hello") => Ok(kind::HELLO),
            Some("write") => Ok(kind::WRITE),
            Some("commit") => Ok(kind::COMMIT),
            Some("read-digest") | Some("digest") => Ok(kind::READ_DIGEST),
            Some("read-record") => Ok(kind::READ_RECORD),
            Some("reset") => Ok(kind::RESET),
            Some("gen-csr") => Ok(kind::GEN_CSR),
            Some("read-ek") => Ok(kind::READ_EK),
            Some(o) => Err(format!(
                "unknown command `{o}` in fault `{spec}`; use hello, write, commit, read-digest, read-record, gen-csr, read-ek or reset"
            )),
        }
    }

    /// A non-empty first argument (`what` names it in the error).
    fn text(&self, what: &str) -> Result<String, String> {
        let spec = self.spec;
        Ok(self
            .a
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("fault `{spec}` needs {what}"))?
            .to_string())
    }

    /// `nak:CMD[:CODE]`.
    fn nak(&self) -> Result<(u8, u8), String> {
        let c = self.cmd(kind::COMMIT)?;
        let spec = self.spec;
        let code = match self.b {
            None => NakCode::StorageFailure as u8,
            Some(v) => v
                .parse::<u8>()
                .map_err(|_| format!("NAK code in `{spec}` must be a number"))?,
        };
        Ok((c, code))
    }

    /// `busy:CMD[:N]` (the count is checked before the command).
    fn busy(&self) -> Result<(u8, u32), String> {
        let n = match self.b {
            None => u32::MAX,
            Some(v) => self.num(Some(v))?,
        };
        Ok((self.cmd(kind::WRITE)?, n))
    }

    /// `state:CMD:N`.
    fn state(&self) -> Result<(u8, u8), String> {
        let c = self.cmd(kind::READ_DIGEST)?;
        let spec = self.spec;
        let v = self
            .b
            .and_then(|v| v.parse::<u8>().ok())
            .ok_or_else(|| format!("fault `{spec}` needs a state byte, e.g. state:commit:0"))?;
        Ok((c, v))
    }

    /// `csr-key:TYPE`.
    fn csr_key(&self) -> Result<String, String> {
        match self.a {
            Some(k @ ("ed25519" | "p256" | "p384" | "rsa2048")) => Ok(k.to_string()),
            _ => Err(format!(
                "fault `{}`: use csr-key:ed25519, p256, p384 or rsa2048",
                self.spec
            )),
        }
    }
}
