//! Signed batch manifests: `<batch>.manifest.json` beside each exported batch names the batch,
//! its station and counts, the size and SHA-256 of its CSV and JSON files, and the audit
//! trail's entry that recorded the batch, signed with the station's audit key (Ed25519).
//!
//! Everything in it is fixed when the batch is recorded (and Ed25519 signatures are
//! deterministic), so a batch re-created from the database gets a byte-identical manifest.

use crate::error::{Error, ErrorCode, Result};
use crate::store::audit_key::{AuditKey, verify};
use crate::store::{Batch, BatchFile, Store};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "provisioning-station batch manifest v1";

/// The audit entry that recorded the batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
}

/// What a manifest says (the signature covers all of it but `signature`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub batch: String,
    pub station: String,
    pub created_at: String,
    pub count: i64,
    pub first_seq: i64,
    pub last_seq: i64,
    pub files: Vec<BatchFile>,
    pub audit_head: AuditHead,
    /// base64 of the 32-byte Ed25519 public key that signed it.
    pub public_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature: String,
}

impl Manifest {
    /// The bytes signed: the manifest's JSON without its signature.
    fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature.clear();
        serde_json::to_vec(&unsigned).expect("manifest serialises")
    }
}

/// The manifest file of `batch` in `dir`.
pub fn path(dir: &Path, batch: &str) -> PathBuf {
    dir.join(format!("{batch}.manifest.json"))
}

fn manifest_error(message: String) -> Error {
    Error::Audit {
        code: ErrorCode::AuditManifestInvalid,
        message,
    }
}

/// Build and sign the manifest of a recorded batch.
pub fn build(store: &Store, batch: &Batch, files: &[BatchFile]) -> Result<Manifest> {
    let (seq, hash) = store.batch_audit_entry(&batch.id)?.ok_or_else(|| {
        manifest_error(format!(
            "the audit trail has no entry recording batch {}",
            batch.id
        ))
    })?;
    let key = AuditKey::load_or_create(Path::new(store.path()))?;
    let mut m = Manifest {
        format: FORMAT.into(),
        batch: batch.id.clone(),
        station: batch.station.clone(),
        created_at: batch.created_at.clone(),
        count: batch.count,
        first_seq: batch.first_seq,
        last_seq: batch.last_seq,
        files: files.to_vec(),
        audit_head: AuditHead { seq, hash },
        public_key: key.public_base64(),
        signature: String::new(),
    };
    m.signature = B64.encode(key.sign(&m.signed_bytes()));
    Ok(m)
}

/// Write the manifest of a recorded batch into `dir` (temporary name, then renamed).
pub fn write(store: &Store, batch: &Batch, files: &[BatchFile], dir: &Path) -> Result<PathBuf> {
    let m = build(store, batch, files)?;
    let to = path(dir, &batch.id);
    let tmp = dir.join(format!(".{}.manifest.json.tmp", batch.id));
    let io = |what: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| Error::File { what, path, source }
    };
    let mut bytes = serde_json::to_vec_pretty(&m).expect("manifest serialises");
    bytes.push(b'\n');
    std::fs::write(&tmp, bytes).map_err(io("cannot write the manifest", &tmp))?;
    std::fs::rename(&tmp, &to).map_err(io("cannot rename the manifest to", &to))?;
    Ok(to)
}

/// What checking one manifest found.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub manifest: PathBuf,
    pub batch: String,
    pub count: i64,
    /// `None`: the files are as the manifest says and the signature verifies.
    pub problem: Option<String>,
}

/// Check one manifest file: the signature (against `key`, else the key it names — then only
/// the files' integrity is shown, not who made them), and each file it lists beside it.
pub fn check(manifest: &Path, key: Option<&[u8]>) -> Checked {
    let mut c = Checked {
        manifest: manifest.to_path_buf(),
        batch: String::new(),
        count: 0,
        problem: None,
    };
    let m: Manifest = match std::fs::read(manifest)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(m) => m,
        Err(e) => {
            c.problem = Some(format!("not a readable manifest: {e}"));
            return c;
        }
    };
    c.batch = m.batch.clone();
    c.count = m.count;
    c.problem = problem(&m, manifest, key);
    c
}

fn problem(m: &Manifest, manifest: &Path, key: Option<&[u8]>) -> Option<String> {
    if m.format != FORMAT {
        return Some(format!("unknown format `{}`", m.format));
    }
    let named = B64.decode(&m.public_key).unwrap_or_default();
    let key = key.unwrap_or(&named);
    if named != key {
        return Some("signed with another key than the one given".into());
    }
    let sig = B64.decode(&m.signature).unwrap_or_default();
    if !verify(key, &m.signed_bytes(), &sig) {
        return Some("the signature does not verify: the manifest was changed or swapped".into());
    }
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let own_name = format!("{}.manifest.json", m.batch);
    if manifest
        .file_name()
        .is_some_and(|n| n.to_string_lossy() != own_name)
    {
        return Some(format!(
            "it is batch {}'s manifest (swapped in under another batch's name)",
            m.batch
        ));
    }
    if m.files.iter().any(|f| !f.name.starts_with(&m.batch)) {
        return Some("it lists files of another batch".into());
    }
    for f in &m.files {
        let p = dir.join(&f.name);
        match std::fs::read(&p) {
            Err(e) => return Some(format!("{}: {e}", p.display())),
            Ok(b) if b.len() as u64 != f.bytes => {
                return Some(format!(
                    "{}: {} bytes, the manifest says {}",
                    f.name,
                    b.len(),
                    f.bytes
                ));
            }
            Ok(b) if crate::domain::hex(&Sha256::digest(&b)) != f.sha256 => {
                return Some(format!(
                    "{}: content differs from the manifest (SHA-256)",
                    f.name
                ));
            }
            Ok(_) => {}
        }
    }
    None
}

/// The manifests to check for `path`: the file itself, or every manifest in a directory.
pub fn manifests_at(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|source| Error::File {
        what: "cannot read directory",
        path: path.to_path_buf(),
        source,
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".manifest.json"))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// Before an upload: batch `batch`'s manifest in `dir` must verify with the station's key and
/// list exactly the files the database recorded.
pub fn require(store: &Store, batch: &str, dir: &Path) -> Result<()> {
    let file = path(dir, batch);
    let key = AuditKey::load_or_create(Path::new(store.path()))?.public();
    let c = check(&file, Some(&key));
    let refuse = |why: String| {
        Err(manifest_error(format!(
            "batch {batch} is not uploaded: its manifest {} {why}",
            file.display()
        )))
    };
    if let Some(p) = c.problem {
        return refuse(p);
    }
    let m: Manifest = serde_json::from_slice(&std::fs::read(&file).unwrap_or_default())
        .map_err(|e| manifest_error(e.to_string()))?;
    if m.files != store.batch_files(batch)? {
        return refuse("does not list the files the database recorded".into());
    }
    Ok(())
}
