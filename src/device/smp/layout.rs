//! How an identity lies on an SMP device: one file (or settings key) per record, and a
//! manifest written last that lists each record's length and SHA-256 with the identity's
//! digest.
//!
//! The manifest is what makes a half-written directory harmless: it is cleared (files) or
//! deleted (settings) before the first record is written and written only after every record's
//! device-side hash matched, so a device holds an identity exactly when its manifest parses and
//! every record it lists hashes, on the device, to the listed SHA-256. The digest it carries is
//! the station's records digest (`domain::record::records_digest`) over those same bytes, so the
//! workflow compares SMP and protocol v1 devices alike.

use crate::domain::{Digest, RecordId, hex};

/// The manifest's file (or key) name beside the records.
pub const MANIFEST: &str = "manifest";
/// What a cleared file holds: the fs group cannot delete, and an upload without data does not
/// truncate, so a file is cleared by overwriting it with one newline.
pub const CLEARED: &[u8] = b"\n";
/// The manifest's first line.
const MAGIC: &str = "dps-identity 1";

/// The file (or settings key) name of a record.
pub fn record_name(r: RecordId) -> &'static str {
    match r {
        RecordId::IdScope => "id_scope",
        RecordId::GlobalEndpoint => "global_endpoint",
        RecordId::RegistrationId => "registration_id",
        RecordId::CredentialType => "credential_type",
        RecordId::Credential => "credential",
        RecordId::CredentialSecondary => "credential_secondary",
        RecordId::PrivateKey => "private_key",
    }
}

/// One record as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub record: RecordId,
    pub len: usize,
    pub sha256: [u8; 32],
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub entries: Vec<Entry>,
    pub digest: Digest,
}

impl Manifest {
    /// The manifest's text: the magic line, `NAME LEN SHA256` per record in id order, then
    /// `digest HEX`.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("{MAGIC}\n");
        let mut entries = self.entries.clone();
        entries.sort_by_key(|e| e.record);
        for e in &entries {
            s.push_str(&format!(
                "{} {} {}\n",
                record_name(e.record),
                e.len,
                hex(&e.sha256)
            ));
        }
        s.push_str(&format!("digest {}\n", hex(&self.digest)));
        s.into_bytes()
    }

    /// Parse a manifest; `None` for anything that is not one (an emptied manifest, a torn
    /// write, another file).
    pub fn parse(bytes: &[u8]) -> Option<Manifest> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let mut entries: Vec<Entry> = Vec::new();
        for line in lines {
            let mut f = line.split(' ');
            match (f.next()?, f.next()?, f.next(), f.next()) {
                ("digest", d, None, None) => {
                    let digest = unhex32(d)?;
                    let required = RecordId::REQUIRED
                        .iter()
                        .all(|r| entries.iter().any(|e| e.record == *r));
                    return required.then_some(Manifest { entries, digest });
                }
                (name, len, Some(h), None) => {
                    let record = RecordId::ALL
                        .into_iter()
                        .find(|r| record_name(*r) == name)?;
                    if entries.iter().any(|e| e.record == record) {
                        return None;
                    }
                    let len = len.parse().ok().filter(|l| *l <= u16::MAX as usize)?;
                    let sha256 = unhex32(h)?;
                    entries.push(Entry {
                        record,
                        len,
                        sha256,
                    });
                }
                _ => return None,
            }
        }
        None
    }
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let entries = RecordId::REQUIRED
            .iter()
            .enumerate()
            .map(|(i, r)| Entry {
                record: *r,
                len: i * 10,
                sha256: [i as u8; 32],
            })
            .collect();
        Manifest {
            entries,
            digest: [0xab; 32],
        }
    }

    #[test]
    fn a_manifest_reads_back_as_written() {
        let m = manifest();
        assert_eq!(Manifest::parse(&m.encode()), Some(m));
    }

    #[test]
    fn an_emptied_torn_or_incomplete_manifest_is_no_identity() {
        let text = manifest().encode();
        assert_eq!(Manifest::parse(b""), None);
        assert_eq!(Manifest::parse(CLEARED), None);
        assert_eq!(Manifest::parse(&text[..text.len() - 10]), None);
        let without_credential: Vec<u8> = String::from_utf8(text.clone())
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("credential "))
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect();
        assert_eq!(Manifest::parse(&without_credential), None);
        let doubled = [&text[..text.len() - 72], b"id_scope 1 00\n"].concat();
        assert_eq!(Manifest::parse(&doubled), None);
    }
}
