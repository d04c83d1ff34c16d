//! The station's audit key: an Ed25519 key pair made at first start, its private part (PKCS#8)
//! owner-only next to the database (`<database>.audit-key`; group-readable in the installer's
//! set-group-ID data directory, which the station's accounts share). It signs the audit chain's head and
//! every batch manifest; its public part (`station audit key`) goes to the back office, which
//! verifies with it.

use crate::error::{Error, Result};
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410) before the 32 key bytes.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The station's audit key pair.
pub struct AuditKey {
    pair: Ed25519KeyPair,
    path: PathBuf,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("path", &self.path)
            .field("public", &self.public_base64())
            .finish_non_exhaustive()
    }
}

/// Make the key at `path`, or read the one another process made first. The key is written
/// whole to a file of its own and then linked into place, so no reader sees half a key and two
/// first users (the window and a CLI command started together) end with the same key.
fn create(path: &Path) -> std::result::Result<Vec<u8>, (&'static str, std::io::Error)> {
    let doc =
        Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).map_err(|_| {
            (
                "cannot generate the audit key",
                std::io::Error::other("key generation failed"),
            )
        })?;
    // Owner-only; group-readable in a set-group-ID directory (the installer's data directory,
    // shared by the station's accounts like the database).
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let shared = dir
        .and_then(|d| std::fs::metadata(d).ok())
        .is_some_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.permissions().mode() & 0o2000 != 0
        });
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(
        ".new-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let tmp = PathBuf::from(tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if shared { 0o640 } else { 0o600 })
        .open(&tmp)
        .map_err(|e| ("cannot create the audit key", e))
        .and_then(|mut f| {
            f.write_all(doc.as_ref())
                .and_then(|()| f.sync_all())
                .map_err(|e| ("cannot write the audit key", e))
        });
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(doc.as_ref().to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read(path).map_err(|e| ("cannot read the audit key", e))
        }
        Err(e) => Err(("cannot create the audit key", e)),
    });
    let _ = std::fs::remove_file(&tmp);
    linked
}

impl AuditKey {
    /// Where the key of the database at `db` lives.
    pub fn path_for(db: &Path) -> PathBuf {
        let mut p = db.as_os_str().to_owned();
        p.push(".audit-key");
        PathBuf::from(p)
    }

    /// Load the key of the database at `db`, making it (0600) at first use.
    pub fn load_or_create(db: &Path) -> Result<Self> {
        let path = Self::path_for(db);
        let file_err = |what: &'static str| {
            let path = path.clone();
            move |source| Error::File { what, path, source }
        };
        let der = match std::fs::read(&path) {
            Ok(der) => der,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create(&path).map_err(|(what, source)| file_err(what)(source))?
            }
            Err(e) => return Err(file_err("cannot read the audit key")(e)),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|e| Error::Database {
            path: path.display().to_string(),
            message: format!("the audit key is not an Ed25519 PKCS#8 key ({e})"),
        })?;
        Ok(Self { pair, path })
    }

    /// The 32 public key bytes.
    pub fn public(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    pub fn public_base64(&self) -> String {
        B64.encode(self.public())
    }

    /// The public key as a PEM SubjectPublicKeyInfo (`openssl pkey -pubin` reads it).
    pub fn public_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend(self.public());
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            B64.encode(der)
        )
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(msg).as_ref().to_vec()
    }
}

/// A public key given as base64 of the 32 bytes, or as a PEM/base64 SubjectPublicKeyInfo.
pub fn parse_public_key(text: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
        .split_whitespace()
        .collect();
    let bytes = B64.decode(body).ok()?;
    match bytes.len() {
        32 => Some(bytes),
        44 if bytes[..12] == SPKI_PREFIX => Some(bytes[12..].to_vec()),
        _ => None,
    }
}

/// Whether `signature` is `public`'s signature of `msg`.
pub fn verify(public: &[u8], msg: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public)
        .verify(msg, signature)
        .is_ok()
}

/// What the audit key signs for a chain head.
pub fn head_message(seq: i64, hash: &str) -> Vec<u8> {
    format!("provisioning-station audit head v1\n{seq}\n{hash}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_owner_only_and_signs_verifiably() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("station.db");
        let k = AuditKey::load_or_create(&db).unwrap();
        let again = AuditKey::load_or_create(&db).unwrap();
        assert_eq!(k.public(), again.public(), "made once, then loaded");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(AuditKey::path_for(&db))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sig = k.sign(b"head");
        assert!(verify(&k.public(), b"head", &sig));
        assert!(!verify(&k.public(), b"head2", &sig));
        assert_eq!(parse_public_key(&k.public_pem()), Some(k.public()));
        assert_eq!(parse_public_key(&k.public_base64()), Some(k.public()));
        assert!(!format!("{k:?}").contains("pair"));
    }

    #[test]
    fn first_users_at_once_all_get_the_one_key() {
        // Before the key was linked into place whole, the losers of this race failed to
        // create it ("file exists") or read half of it ("not an Ed25519 PKCS#8 key").
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join(format!("station-{round}.db"));
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let keys: Vec<Vec<u8>> = (0..6)
                .map(|_| {
                    let (db, start) = (db.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        AuditKey::load_or_create(&db).map(|k| k.public())
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap().unwrap())
                .collect();
            assert!(keys.windows(2).all(|w| w[0] == w[1]), "one key");
            let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
            assert_eq!(left.len(), 1, "no temporary file is left behind");
        }
    }
}
