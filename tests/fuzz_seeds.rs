//! Writes the fuzz targets' seed corpora (`fuzz/corpus/<target>/seed-*`): not a test that runs
//! by default, a reproducible generator (`cargo test --test fuzz_seeds -- --ignored`), since the
//! seeds must be the real thing: the worked examples of docs/protocol.md, the simulator's
//! traffic (its answers to a whole cycle, clean, with boot-log noise and corrupted), CSRs the
//! simulator's devices make (and the faulty ones its faults make), a real TPM's EK and EK
//! certificate (swtpm), the DPS answers of the service's swagger definitions as the test DPS
//! serves them, and the repository's station.toml files and templates.

mod common;

use common::swtpm::{Manufacture, Swtpm};
use provisioning_station::attestation::tpm::read_ek_tcti;
use provisioning_station::config::TpmEkType;
use provisioning_station::device::v1::frame::{Decoder, encode};
use provisioning_station::device::v1::protocol::{Request, encode_ek};
use provisioning_station::sim::{self, SimConfig};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn seed(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(corpus(target).join(format!("seed-{name}")), bytes).unwrap();
}

/// The bytes of a line of hex pairs (`None` for the format line `00 | COBS( frame ) | 00`).
fn unhex(s: &str) -> Option<Vec<u8>> {
    s.split_whitespace()
        .map(|w| u8::from_str_radix(w, 16).ok())
        .collect()
}

/// The simulator's end of a pty, in memory: the requests to read, then stop.
struct Port<'a> {
    input: Vec<u8>,
    at: usize,
    output: Vec<u8>,
    stop: &'a AtomicBool,
}

impl Read for Port<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.input.len() - self.at);
        if n == 0 {
            self.stop.store(true, Ordering::Relaxed);
        }
        buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Write for Port<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A whole cycle's requests, as the station sends them.
fn cycle() -> Vec<Request> {
    let record = |record: u8, data: &[u8]| Request::Write {
        record,
        offset: 0,
        total: data.len() as u32,
        data: data.to_vec(),
    };
    vec![
        Request::Hello { min: 1, max: 1 },
        record(1, b"0ne00000001"),
        record(2, b"global.azure-devices-provisioning.net"),
        record(3, b"sn0001"),
        record(4, &[1]),
        record(5, b"2qtULHSsbaQE9R6XWK4E8PuSDOi0YgHQTra3oqsG6yY="),
        Request::Commit { flags: 0 },
        Request::ReadDigest,
        Request::ReadRecord { record: 3 },
        Request::ReadRecord { record: 5 },
        Request::GenCsr {
            key_type: 1,
            common_name: "sn0001".into(),
        },
        Request::GenCsr {
            key_type: 2,
            common_name: "sn0001".into(),
        },
        Request::GenCsr {
            key_type: 3,
            common_name: "sn0001".into(),
        },
        Request::ReadEk { ek_type: 1 },
        Request::Reset,
    ]
}

/// What the simulator sends back to `requests`, with `faults`.
fn simulate(requests: &[Request], faults: &[&str]) -> Vec<u8> {
    let flash = tempfile::tempdir().unwrap();
    let mut config = SimConfig::new(flash.path());
    for f in faults {
        config.faults.add(f).unwrap();
    }
    let mut input = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        input.extend(encode(r.kind(), 0x10 + i as u8, &r.encode_body()));
    }
    let stop = AtomicBool::new(false);
    let mut port = Port {
        input,
        at: 0,
        output: Vec::new(),
        stop: &stop,
    };
    sim::run(&mut port, config, &stop).unwrap();
    port.output
}

/// The frames of a stream.
fn frames(wire: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    Decoder::new(1 << 16).push(wire, |r| out.extend(r.ok().map(|f| (f.kind, f.body))));
    out
}

fn field(bytes: &[u8]) -> Vec<u8> {
    let mut v = (bytes.len() as u16).to_le_bytes().to_vec();
    v.extend_from_slice(bytes);
    v
}

#[test]
#[ignore = "writes fuzz/corpus/*/seed-*: run by hand after changing what the targets read"]
fn write_seed_corpora() {
    let traffic = protocol_seeds();
    csr_seeds();
    ek_seeds(&traffic);
    dps_seeds();
    config_seeds();
}

/// `frames` and `responses`: docs/protocol.md's examples and the simulator's traffic.
fn protocol_seeds() -> Vec<(u8, Vec<u8>)> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md")).unwrap();
    let mut all = Vec::new();
    for (i, wire) in doc
        .lines()
        .filter_map(|l| l.strip_prefix("wire:"))
        .filter_map(unhex)
        .enumerate()
    {
        seed("frames", &format!("protocol-md-{i:02}"), &wire);
        all.extend(wire);
    }
    seed("frames", "protocol-md-all", &all);
    let clean = simulate(&cycle(), &[]);
    seed("frames", "sim-cycle", &clean);
    seed("frames", "sim-cycle-noise", &simulate(&cycle(), &["noise"]));
    seed(
        "frames",
        "sim-cycle-corrupt",
        &simulate(&cycle(), &["noise", "corrupt:3"]),
    );
    let answers = frames(&clean);
    for (i, (_, body)) in answers.iter().enumerate() {
        let mut input = vec![0];
        input.extend(body);
        seed("responses", &format!("decode-sim-{i:02}"), &input);
    }
    for (i, r) in cycle().iter().enumerate() {
        let mut input = vec![0, r.kind()];
        input.extend(r.encode_body());
        seed("responses", &format!("decode-request-{i:02}"), &input);
    }
    // The link's cycle (fuzzing::responses): HELLO, two WRITEs, COMMIT, READ_DIGEST,
    // READ_RECORD, GEN_CSR, READ_EK, RESET, answered as the simulator answers them.
    let body = |k: u8| {
        answers
            .iter()
            .find(|(kind, _)| *kind == k)
            .unwrap()
            .1
            .clone()
    };
    let mut ack_long = vec![5];
    ack_long.extend(700u32.to_le_bytes());
    let ek = encode_ek(&[0, 4, 0, 1, 0, 0], &[], &[]);
    let steps: Vec<(u8, Vec<u8>)> = vec![
        (0, body(0x81)),
        (0, vec![1, 11, 0, 0, 0]),
        (0, ack_long),
        (0, body(0x83)),
        (0, body(0x84)),
        (0, body(0x85)),
        (0, body(0x87)),
        (0, ek),
        (0, Vec::new()),
    ];
    let script = |steps: &[(u8, Vec<u8>)]| {
        let mut input = vec![1, 1];
        for (tag, body) in steps {
            input.push(*tag);
            input.extend(field(body));
        }
        input
    };
    seed("responses", "link-cycle", &script(&steps));
    for (name, tag) in [("nak", 1), ("stale", 2), ("corrupt", 4), ("twice", 7)] {
        let mut varied = steps.clone();
        for (i, step) in varied.iter_mut().enumerate() {
            if i % 2 == 1 {
                step.0 = tag;
            }
        }
        seed("responses", &format!("link-cycle-{name}"), &script(&varied));
    }
    answers
}

/// `csr`: what the simulator's devices answer to GEN_CSR, good and faulty.
fn csr_seeds() {
    let ask = |key_type: u8| {
        vec![
            Request::Hello { min: 1, max: 1 },
            Request::GenCsr {
                key_type,
                common_name: "sn0001".into(),
            },
        ]
    };
    let input = |key_type: u8, der: &[u8]| {
        let mut v = vec![key_type, 6];
        v.extend_from_slice(b"sn0001");
        v.extend_from_slice(der);
        v
    };
    let cases: [(&str, u8, &[&str]); 7] = [
        ("p256", 1, &[]),
        ("p384", 2, &[]),
        ("rsa2048", 3, &[]),
        ("tampered", 1, &["csr-tamper"]),
        ("other-cn", 1, &["csr-cn:sn0002"]),
        ("ed25519", 1, &["csr-key:ed25519"]),
        ("p384-for-p256", 1, &["csr-key:p384"]),
    ];
    for (name, key_type, faults) in cases {
        let answers = frames(&simulate(&ask(key_type), faults));
        let (_, der) = answers.iter().find(|(k, _)| *k == 0x87).unwrap();
        seed("csr", &format!("sim-{name}"), &input(key_type, der));
    }
    // A subject with more than the CN (the simulator never makes one).
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "sn0001");
    dn.push(rcgen::DnType::OrganizationName, "not the station's");
    params.distinguished_name = dn;
    let der = params.serialize_request(&key).unwrap().der().to_vec();
    seed("csr", "extra-subject-attribute", &input(1, &der));
}

/// `ek`: a real TPM's EKs (swtpm) with its EK certificate and manufacturer CA.
fn ek_seeds(_traffic: &[(u8, Vec<u8>)]) {
    let tpm = Swtpm::start(Manufacture::EkWithCertificate);
    let rsa = read_ek_tcti(&tpm.tcti, TpmEkType::Rsa2048, false, true, true).unwrap();
    let ecc = read_ek_tcti(&tpm.tcti, TpmEkType::EccP256, false, false, true).unwrap();
    let roots: Vec<Vec<u8>> = tpm
        .roots()
        .iter()
        .flat_map(|p| {
            let text = std::fs::read(p).unwrap();
            x509_parser::pem::Pem::iter_from_buffer(&text)
                .map(|pem| pem.unwrap().contents)
                .collect::<Vec<_>>()
        })
        .collect();
    for (name, reading) in [("rsa", &rsa), ("ecc", &ecc)] {
        let cert = reading.certificate.clone().unwrap_or_default();
        let srk = reading.srk.clone().unwrap_or_default();
        let body = encode_ek(&reading.public, &cert, &srk);
        for (policy, p) in [("require", 0u8), ("warn", 1), ("off", 2)] {
            let mut input = vec![p];
            input.extend(field(&body));
            for r in &roots {
                input.extend(field(r));
            }
            seed("ek", &format!("swtpm-{name}-{policy}"), &input);
        }
    }
}

/// `dps_answers`: the service's answers (swagger 2021-10-01 definitions, as tests' DPS serves
/// them), each for its parser with status 200 (or as stated), as text.
fn dps_seeds() {
    let pem = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";
    let answers: Vec<(&str, u8, u8, String)> = vec![
        ("bulk-ok", 0, 0, r#"{"isSuccessful":true,"errors":[]}"#.into()),
        ("bulk-item-error", 0, 0, r#"{"isSuccessful":false,"errors":[{"registrationId":"SN0002","errorCode":409,"errorStatus":"Conflict"},{"registrationId":"sn0001","errorCode":200,"errorStatus":"OK"}]}"#.into()),
        ("bulk-failed-unnamed", 0, 0, r#"{"isSuccessful":false,"errors":[]}"#.into()),
        ("bulk-400", 0, 3, r#"{"errorCode":400004,"trackingId":"x","message":"Invalid enrollment","timestampUtc":"2026-01-01T00:00:00Z"}"#.into()),
        ("enrollment-symmetric", 1, 0, r#"{"registrationId":"sn0001","attestation":{"type":"symmetricKey","symmetricKey":{}},"provisioningStatus":"enabled","capabilities":{"iotEdge":false},"reprovisionPolicy":{"updateHubAssignment":true,"migrateDeviceData":true},"iotHubs":["hub-a.azure-devices.net"],"initialTwin":{"tags":{"line":"a"},"properties":{"desired":{"t":30,"$metadata":{}}}},"allocationPolicy":"hashed","etag":"\"1\"","createdDateTimeUtc":"2026-01-01T00:00:00Z"}"#.into()),
        ("mechanism-symmetric", 1, 0, r#"{"type":"symmetricKey","symmetricKey":{"primaryKey":"c2VudC1wcmltYXJ5LWtleS0wMDAwMDAwMDAwMDA=","secondaryKey":"aGVsZC1zZWNvbmRhcnkta2V5LTAwMDAwMDAwMDA="}}"#.into()),
        ("enrollment-x509", 1, 0, r#"{"registrationId":"sn0002","attestation":{"type":"x509","x509":{"clientCertificates":{"primary":{"info":{"subjectName":"CN=sn0002","sha256Thumbprint":"1BEE45D2A1E45C3E0D4D8C4F93D3B3E8A04D8BA3E0F3E8A1B1A3B4E5C6D7E8F9","sha1Thumbprint":"x","issuerName":"CN=ca","notBeforeUtc":"2026-01-01T00:00:00Z","notAfterUtc":"2036-01-01T00:00:00Z","serialNumber":"01","version":3}}}}},"capabilities":{"iotEdge":true}}"#.into()),
        ("mechanism-x509-pem", 1, 0, format!(r#"{{"type":"x509","x509":{{"clientCertificates":{{"primary":{{"certificate":{}}},"secondary":{{"info":{{"sha256Thumbprint":"AB"}}}}}},"caReferences":{{"primary":"ca"}}}}}}"#, serde_json::to_string(pem).unwrap())),
        ("enrollment-tpm", 1, 0, r#"{"registrationId":"sn0003","attestation":{"type":"tpm","tpm":{"endorsementKey":"AA EC","storageRootKey":"AwQF"}},"reprovisionPolicy":{"updateHubAssignment":false,"migrateDeviceData":false}}"#.into()),
        ("enrollment-absent", 1, 6, String::new()),
        ("enrollment-unauthorized", 1, 4, r#"{"errorCode":401002,"message":"unauthorized"}"#.into()),
        ("query-page", 2, 0, r#"[{"registrationId":"sn0001","attestation":{"type":"symmetricKey","symmetricKey":{}},"etag":"\"2\"","iotHubs":["HUB-A.azure-devices.net"]},{"registrationId":"sn0003","attestation":{"type":"tpm","tpm":{"endorsementKey":"AAEC"}},"etag":"\"3\""}]"#.into()),
        ("registration-assigned", 3, 0, r#"{"registrationId":"sn0001","createdDateTimeUtc":"2026-01-01T00:00:00Z","assignedHub":"hub-a.azure-devices.net","deviceId":"sn0001","status":"assigned","substatus":"initialAssignment","lastUpdatedDateTimeUtc":"2026-01-01T00:00:01Z","etag":"\"4\""}"#.into()),
        ("registration-failed", 3, 0, r#"{"registrationId":"sn0002","status":"failed","errorCode":401002,"errorMessage":"The device is unauthorized"}"#.into()),
        ("registration-none", 3, 6, String::new()),
        ("retry-after-seconds", 4, 0, " 120 ".into()),
        ("retry-after-date", 4, 0, "Sun, 06 Nov 1994 08:49:37 GMT".into()),
        ("retry-after-leap-day", 4, 0, "Tue, 29 Feb 2028 23:59:59 GMT".into()),
    ];
    for (name, parser, status, text) in answers {
        let mut input = vec![parser, status, 0];
        if parser == 2 {
            input.push(1);
        }
        input.extend(text.as_bytes());
        seed("dps_answers", name, &input);
    }
}

/// `config`: the repository's station.toml files, docs/config.md's examples, templates.
fn config_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, path) in [
        ("station-toml", "station.toml"),
        ("installer-toml", "installer/station.toml"),
    ] {
        let mut input = vec![0];
        input.extend(std::fs::read(root.join(path)).unwrap());
        seed("config", name, &input);
    }
    let doc = std::fs::read_to_string(root.join("docs/config.md")).unwrap();
    let mut block: Option<String> = None;
    let mut n = 0;
    for line in doc.lines() {
        match (&mut block, line.trim_start()) {
            (None, "```toml") => block = Some(String::new()),
            (Some(text), "```") => {
                let mut input = vec![0];
                input.extend(text.as_bytes());
                seed("config", &format!("config-md-{n:02}"), &input);
                n += 1;
                block = None;
            }
            (Some(text), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    for (i, t) in [
        "{serial}\nSN0001\n\nstation-01\nline-a\nsensor",
        "{line}-{serial}\nSN-0042\n\nst\nL1\nm",
        "{scan}\n\nABC123\nst\nl\nm",
        "dev.{model}:{serial}-\nSN1\n\nst\nl\nSensor_X",
    ]
    .iter()
    .enumerate()
    {
        let mut input = vec![1];
        input.extend(t.as_bytes());
        seed("config", &format!("registration-template-{i}"), &input);
    }
    let mut input = vec![2];
    input.extend(provisioning_station::domain::label::DEFAULT_TEMPLATE.as_bytes());
    seed("config", "label-template-default", &input);
    seed("config", "label-qr-data", b"\x02{registration_id}");
}
