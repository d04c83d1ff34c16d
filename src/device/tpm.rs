//! A device's TPM reached directly through a TCTI (`device:/dev/tpmrm0`, `swtpm:...`,
//! `mssim:...`, `tabrmd:...`): its endorsement key (EK), SRK and EK certificate, read with
//! tss-esapi exactly as DPS wants them (TPM2B_PUBLIC, big-endian, with its size prefix).
//!
//! The EK used is the one persisted at 0x81010001; if there is none, the TCG default EK
//! template (which matches the manufacturer's EK certificate, unlike the Azure C SDK's
//! template). Persisting a created EK needs `persist`.

use crate::config::TpmEkType;
use crate::error::{Error, ErrorCode, Result};
use std::str::FromStr;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ek};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::{
    dynamic_handles::Persistent, ecc::EccCurve, key_bits::RsaKeyBits, resource_handles::Provision,
    session_handles::AuthSession,
};
use tss_esapi::structures::{Public, PublicBuffer};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};

/// Persistent handle of the EK (TCG).
pub const EK_HANDLE: u32 = 0x8101_0001;
/// Persistent handle of the SRK (TCG).
pub const SRK_HANDLE: u32 = 0x8100_0001;

trait Selection {
    fn selection(self) -> AsymmetricAlgorithmSelection;
}

impl Selection for TpmEkType {
    fn selection(self) -> AsymmetricAlgorithmSelection {
        match self {
            TpmEkType::Rsa2048 => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            TpmEkType::EccP256 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
        }
    }
}

/// The EK's public key, for comparing with its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EkKey {
    Rsa { modulus: Vec<u8> },
    Ecc { x: Vec<u8>, y: Vec<u8> },
}

/// What was read from a TPM.
#[derive(Debug, Clone)]
pub struct EkReading {
    /// TPM2B_PUBLIC of the EK (size prefix included), exactly as DPS wants it before base64.
    pub public: Vec<u8>,
    /// The EK certificate (DER) from its NV index, if present.
    pub certificate: Option<Vec<u8>>,
    /// TPM2B_PUBLIC of the SRK at 0x81000001, if asked for and present.
    pub srk: Option<Vec<u8>>,
    /// Where the EK came from: `persistent`, `created` or `created-and-persisted`.
    pub origin: &'static str,
}

pub(crate) fn tpm_error(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::Tpm {
        code,
        message: message.into(),
    }
}

/// The EK's public key from its TPM2B_PUBLIC bytes (also validates the encoding).
pub fn ek_key(tpm2b_public: &[u8]) -> Result<EkKey> {
    let bad = |m: String| {
        tpm_error(
            ErrorCode::TpmBadEk,
            format!("the EK is not a valid TPM2B_PUBLIC: {m}"),
        )
    };
    if tpm2b_public.len() < 2
        || u16::from_be_bytes([tpm2b_public[0], tpm2b_public[1]]) as usize + 2 != tpm2b_public.len()
    {
        return Err(bad("its size prefix does not match its length".into()));
    }
    let buffer = PublicBuffer::unmarshall(tpm2b_public).map_err(|e| bad(e.to_string()))?;
    let public = Public::try_from(buffer).map_err(|e| bad(e.to_string()))?;
    // DPS and the device derive the registration ID from these very bytes: bytes inside the
    // size prefix that the structure does not hold would make another EK of the same key.
    let canonical = tpm2b(public.clone()).map_err(|e| bad(e.to_string()))?;
    if canonical != tpm2b_public {
        return Err(bad(format!(
            "its {} bytes are not the {} bytes its structure marshals to",
            tpm2b_public.len(),
            canonical.len()
        )));
    }
    let key = match public {
        Public::Rsa { unique, .. } => EkKey::Rsa {
            modulus: unique.value().to_vec(),
        },
        Public::Ecc { unique, .. } => EkKey::Ecc {
            x: unique.x().value().to_vec(),
            y: unique.y().value().to_vec(),
        },
        _ => return Err(bad("not an RSA or ECC key".into())),
    };
    match &key {
        EkKey::Rsa { modulus } if modulus.is_empty() => Err(bad("its RSA modulus is empty".into())),
        EkKey::Ecc { x, y } if x.is_empty() || y.is_empty() => {
            Err(bad("its ECC point is empty".into()))
        }
        _ => Ok(key),
    }
}

fn tpm2b(public: Public) -> Result<Vec<u8>> {
    PublicBuffer::try_from(public)
        .and_then(|b| b.marshall())
        .map_err(|e| tpm_error(ErrorCode::TpmBadEk, format!("cannot encode the EK: {e}")))
}

/// The error for a TPM that cannot be reached (or fails) at `tcti`.
fn tpm_unreachable(tcti: &str) -> impl Fn(tss_esapi::Error) -> Error + '_ {
    move |e| tpm_error(ErrorCode::TpmUnreachable, format!("TPM at `{tcti}`: {e}"))
}

/// Read the EK (and optionally the SRK and the EK certificate) through a TCTI such as
/// `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`, `mssim:...` or `tabrmd:...`.
pub fn read_ek_tcti(
    tcti: &str,
    ek_type: TpmEkType,
    persist: bool,
    include_srk: bool,
    want_certificate: bool,
) -> Result<EkReading> {
    let conf = TctiNameConf::from_str(tcti).map_err(tpm_unreachable(tcti))?;
    let mut ctx = tss_esapi::Context::new(conf).map_err(tpm_unreachable(tcti))?;
    let persistent_handles = present(&mut ctx, 0x8100_0000);
    let (public, origin) = match persistent(&mut ctx, &persistent_handles, EK_HANDLE) {
        Some(p) => (p, "persistent"),
        None => create_ek(&mut ctx, tcti, ek_type, persist)?,
    };
    let certificate = if want_certificate {
        ek_certificate(&mut ctx, ek_type)
    } else {
        None
    };
    let srk = if include_srk {
        persistent(&mut ctx, &persistent_handles, SRK_HANDLE)
            .map(tpm2b)
            .transpose()?
    } else {
        None
    };
    Ok(EkReading {
        public: tpm2b(public)?,
        certificate,
        srk,
        origin,
    })
}

/// The persistent handles and NV indices from `first` on. Asking which handles exist first
/// makes reading an absent one neither an error (tpm2-tss logs those to stderr) nor a wasted
/// round trip.
fn present(ctx: &mut tss_esapi::Context, first: u32) -> Vec<u32> {
    match ctx.get_capability(tss_esapi::constants::CapabilityType::Handles, first, 64) {
        Ok((tss_esapi::structures::CapabilityData::Handles(list), _)) => list
            .into_inner()
            .into_iter()
            .filter_map(|h| match h {
                TpmHandle::Persistent(p) => Some(u32::from(p)),
                TpmHandle::NvIndex(n) => Some(u32::from(n)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The public area of the persistent object at `handle`, if it is among `present_handles`
/// and readable.
fn persistent(
    ctx: &mut tss_esapi::Context,
    present_handles: &[u32],
    handle: u32,
) -> Option<Public> {
    if !present_handles.contains(&handle) {
        return None;
    }
    let h = PersistentTpmHandle::new(handle).ok()?;
    let obj = ctx
        .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::Persistent(h)))
        .ok()?;
    let public = ctx
        .read_public(KeyHandle::from(obj))
        .ok()
        .map(|(p, _, _)| p);
    let _ = ctx.tr_close(&mut obj.clone());
    public
}

/// Create the EK from the TCG default template (persisting it at 0x81010001 if `persist`);
/// returns its public area and origin.
fn create_ek(
    ctx: &mut tss_esapi::Context,
    tcti: &str,
    ek_type: TpmEkType,
    persist: bool,
) -> Result<(Public, &'static str)> {
    let handle = ek::create_ek_object_2(ctx, ek_type.selection(), None).map_err(|e| {
        tpm_error(
            ErrorCode::TpmNoEk,
            format!("no EK at 0x81010001 and creating one failed: {e}"),
        )
    })?;
    let (public, _, _) = ctx.read_public(handle).map_err(tpm_unreachable(tcti))?;
    let origin = if persist {
        let target = PersistentTpmHandle::new(EK_HANDLE).map_err(tpm_unreachable(tcti))?;
        ctx.execute_with_session(Some(AuthSession::Password), |c| {
            c.evict_control(
                Provision::Owner,
                ObjectHandle::from(handle),
                Persistent::Persistent(target),
            )
        })
        .map_err(|e| {
            tpm_error(
                ErrorCode::TpmPersistFailed,
                format!("cannot persist the EK at 0x81010001: {e}"),
            )
        })?;
        "created-and-persisted"
    } else {
        "created"
    };
    let _ = ctx.flush_context(ObjectHandle::from(handle));
    Ok((public, origin))
}

/// The EK certificate (DER) from its NV index, if the index is present and readable.
fn ek_certificate(ctx: &mut tss_esapi::Context, ek_type: TpmEkType) -> Option<Vec<u8>> {
    let nv_index = match ek_type {
        TpmEkType::Rsa2048 => 0x01c0_0002,
        TpmEkType::EccP256 => 0x01c0_000a,
    };
    if present(ctx, 0x0100_0000).contains(&nv_index) {
        ek::retrieve_ek_pubcert(ctx, ek_type.selection()).ok()
    } else {
        None
    }
}

/// Check that a TPM answers at `tcti`.
pub fn probe(tcti: &str) -> Result<()> {
    let conf = TctiNameConf::from_str(tcti).map_err(tpm_unreachable(tcti))?;
    let mut ctx = tss_esapi::Context::new(conf).map_err(tpm_unreachable(tcti))?;
    ctx.get_random(8).map(|_| ()).map_err(tpm_unreachable(tcti))
}
