//! Every worked example in docs/protocol.md is what the station's encoder produces, and decodes
//! back to what the page says.

use provisioning_station::device::v1::frame::{Decoder, encode};
use provisioning_station::device::v1::protocol::{
    Request, decode_device_info, decode_digest, kind,
};

fn unhex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .flat_map(|w| {
            (0..w.len() / 2).map(move |i| u8::from_str_radix(&w[2 * i..2 * i + 2], 16).unwrap())
        })
        .collect()
}

#[test]
fn worked_examples_match_the_encoder() {
    let doc = include_str!("../docs/protocol.md");
    let lines: Vec<&str> = doc.lines().collect();
    let mut checked = 0;
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("<!-- example ") else {
            continue;
        };
        // Fields are whitespace-separated `name=value`; the last one may carry the `-->`.
        let field_opt = |name: &str| {
            rest.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .map(|v| v.trim_end_matches("-->").to_string())
        };
        let field = |name: &str| field_opt(name).unwrap();
        let k = u8::from_str_radix(field("kind").trim_start_matches("0x"), 16).unwrap();
        let seq = u8::from_str_radix(field("seq").trim_start_matches("0x"), 16).unwrap();
        let body = unhex(&field("body"));
        // `state=` (COMMIT / READ_DIGEST responses): the state byte the example carries.
        let state: u8 = field_opt("state").map_or(1, |s| s.parse().unwrap());
        let wire_line = lines[i..]
            .iter()
            .find_map(|l| l.strip_prefix("wire:"))
            .unwrap();
        let wire = unhex(wire_line);
        assert_eq!(
            encode(k, seq, &body),
            wire,
            "example at docs/protocol.md line {}",
            i + 1
        );
        let mut frames = Vec::new();
        Decoder::new(4096).push(&wire, |r| frames.push(r.unwrap()));
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].body, body);
        match k {
            0x01..=0x08 => assert!(
                Request::decode(k, &body).is_some(),
                "request at line {}",
                i + 1
            ),
            0x81 => assert_eq!(decode_device_info(&body).unwrap().serial, "SN0001"),
            0x83 | 0x84 => assert_eq!(
                decode_digest(&body).unwrap().provisioned,
                state != 0,
                "digest state at line {}",
                i + 1
            ),
            _ => assert!(k == kind::NAK || k & kind::RESPONSE != 0),
        }
        checked += 1;
    }
    // Every marker was checked (a marker the loop skipped would make this differ).
    let markers = doc.matches("<!-- example ").count();
    assert!(markers >= 12, "only {markers} examples in the document");
    assert_eq!(checked, markers);
}

#[test]
fn commit_example_digest_is_the_documented_record_digest() {
    use provisioning_station::device::v1::protocol::records_digest;
    let d = records_digest([
        (1u8, &b"0ne00000001"[..]),
        (2, &b"global.azure-devices-provisioning.net"[..]),
        (3, &b"sn0001"[..]),
        (4, &[1u8][..]),
        (5, &b"2qtULHSsbaQE9R6XWK4E8PuSDOi0YgHQTra3oqsG6yY="[..]),
    ]);
    let doc = include_str!("../docs/protocol.md");
    let hex: String = d.iter().map(|b| format!("{b:02x} ")).collect();
    assert!(
        doc.contains(hex.trim()),
        "COMMIT example must carry digest {hex}"
    );
}

#[test]
fn crc_check_value_is_the_documented_one() {
    assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
}
