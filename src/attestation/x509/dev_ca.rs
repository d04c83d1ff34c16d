//! The development CA for the simulator (`station ca init --dev`).

use super::BACKDATE;
use super::mint::random_serial;
use crate::error::{Error, ErrorCode, Result};
use ::time::{Duration, OffsetDateTime};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// Files `station ca init --dev` wrote.
#[derive(Debug, serde::Serialize)]
pub struct DevCa {
    pub root_cert: PathBuf,
    pub root_key: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
}

/// Create a development root and intermediate CA (ECDSA P-256) in `dir`, labelled as
/// development material. Refuses to overwrite existing files.
pub fn init_dev_ca(dir: &Path) -> Result<DevCa> {
    let paths = DevCa {
        root_cert: dir.join("dev-root.pem"),
        root_key: dir.join("dev-root.key"),
        ca_cert: dir.join("dev-intermediate.pem"),
        ca_key: dir.join("dev-intermediate.key"),
    };
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    refuse_existing(&paths)?;
    let now = OffsetDateTime::now_utc();
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(mint_err)?;
    let root_params = ca_params(now, "Provisioning Station DEVELOPMENT Root CA", 25, 1)?;
    let root = root_params.self_signed(&root_key).map_err(mint_err)?;
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(mint_err)?;
    let mut inter_params = ca_params(
        now,
        "Provisioning Station DEVELOPMENT Intermediate CA",
        20,
        0,
    )?;
    inter_params.use_authority_key_identifier_extension = true;
    let root_issuer = Issuer::from_params(&root_params, &root_key);
    let inter = inter_params
        .signed_by(&ca_key, &root_issuer)
        .map_err(mint_err)?;
    let label = "# DEVELOPMENT CA material made by `station ca init --dev`. Not for production.\n";
    write_new(&paths.root_cert, &format!("{label}{}", root.pem()), 0o644)?;
    write_new(
        &paths.root_key,
        &format!("{label}{}", root_key.serialize_pem()),
        0o600,
    )?;
    write_new(&paths.ca_cert, &format!("{label}{}", inter.pem()), 0o644)?;
    write_new(
        &paths.ca_key,
        &format!("{label}{}", ca_key.serialize_pem()),
        0o600,
    )?;
    Ok(paths)
}

fn file_err(path: &Path, source: std::io::Error) -> Error {
    Error::File {
        what: "cannot write development CA file",
        path: path.to_path_buf(),
        source,
    }
}

fn mint_err(e: rcgen::Error) -> Error {
    Error::Csr {
        code: ErrorCode::X509MintFailed,
        message: e.to_string(),
    }
}

/// Refuse to overwrite any of the development CA files.
fn refuse_existing(paths: &DevCa) -> Result<()> {
    for p in [
        &paths.root_cert,
        &paths.root_key,
        &paths.ca_cert,
        &paths.ca_key,
    ] {
        if p.exists() {
            return Err(Error::Usage(format!(
                "{} already exists; remove the development CA first or choose another directory",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Parameters of a development CA certificate named `cn`, valid for `years` from `now`.
fn ca_params(now: OffsetDateTime, cn: &str, years: i64, path_len: u8) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::OrganizationName,
        "DEVELOPMENT ONLY - not for production",
    );
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.serial_number = Some(random_serial()?);
    p.not_before = now - BACKDATE;
    p.not_after = now + Duration::days(365 * years);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.key_identifier_method = KeyIdMethod::Sha256;
    Ok(p)
}

/// Write `text` to a new file `path` (never an existing one) with permissions `mode`.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| file_err(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| file_err(path, e))
}
