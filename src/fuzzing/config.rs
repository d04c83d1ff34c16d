//! `station.toml` and the template languages it carries: the registration ID template and the
//! ZPL label template with its QR code data.

use crate::config::load_str;
use crate::domain::label::{Field, LabelTemplate};
use crate::domain::registration_id::{Inputs, Template, validate};
use crate::error::Error;
use std::path::Path;

/// Where the fuzzed configuration "is": a directory that does not exist, so that nothing it
/// names relative to itself can be read.
const PATH: &str = "/nonexistent-fuzz-dir/station.toml";

/// Input: `what u8` (0 station.toml, 1 registration template, 2 label template; wrapping),
/// then the text (lossy UTF-8). For a registration template the text's lines are the template,
/// then the serial, scan, station, line and model it is rendered with.
///
/// Properties: a configuration loads the same twice, its registration template parses and is
/// per-device, and every refusal names `file:line:column` inside the text; a registration
/// template renders only valid, lowercase DPS registration IDs; a label template's refusal
/// points inside it, and no value filled into a template can add a ZPL command character.
pub fn config(data: &[u8]) {
    let Some((what, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match what % 3 {
        0 => station_toml(&text),
        1 => registration_template(&text),
        _ => label_template(&text),
    }
}

fn station_toml(text: &str) {
    // A label `template_file` is read at load: the one file access a configuration makes. Keep
    // the fuzzer from naming any file (say, /dev/zero) through it, looking at the parsed TOML:
    // escapes are resolved there, and a comment that mentions the key (the repository's
    // station.toml seeds have one) does not hide the whole configuration from the fuzzer.
    if names_a_template_file(text) {
        return;
    }
    match load_str(text, Path::new(PATH)) {
        Ok(config) => {
            let again = load_str(text, Path::new(PATH)).expect("loads twice");
            assert_eq!(format!("{config:?}"), format!("{again:?}"));
            let t = Template::parse(&config.registration.template)
                .expect("a loaded configuration's template parses");
            assert!(t.is_per_device());
        }
        Err(Error::ConfigInvalid { location, .. }) => {
            let place = location
                .strip_prefix(PATH)
                .and_then(|p| p.strip_prefix(':'))
                .unwrap_or_else(|| panic!("refusal at {location}, not in the file"));
            let (line, column) = place.split_once(':').expect("line:column");
            let line: usize = line.parse().expect("a line number");
            let column: usize = column.parse().expect("a column number");
            let lines = text.lines().count().max(1);
            assert!(
                (1..=lines + 1).contains(&line) && column >= 1,
                "refusal at {location} outside a text of {lines} lines"
            );
        }
        Err(e) => panic!("station.toml refused with {}: {e}", e.code().as_str()),
    }
}

/// Whether `text`, read as TOML, sets `template_file` in any table.
fn names_a_template_file(text: &str) -> bool {
    fn has(v: &toml::Value) -> bool {
        match v {
            toml::Value::Table(t) => t.iter().any(|(k, v)| k == "template_file" || has(v)),
            toml::Value::Array(a) => a.iter().any(has),
            _ => false,
        }
    }
    text.parse::<toml::Table>()
        .is_ok_and(|t| has(&toml::Value::Table(t)))
}

fn registration_template(text: &str) {
    let mut lines = text.split('\n');
    let template = lines.next().unwrap_or_default();
    let mut next = || lines.next().unwrap_or_default();
    let (serial, scan, station, line, model) = (next(), next(), next(), next(), next());
    let Ok(t) = Template::parse(template) else {
        return;
    };
    assert_eq!(t.needs_scan(), template.contains("{scan}"));
    let inputs = Inputs {
        serial,
        scan: (!scan.is_empty()).then_some(scan),
        station,
        line,
        model,
    };
    if let Ok(id) = t.render(&inputs) {
        assert!(validate(&id).is_ok(), "rendered an invalid ID {id:?}");
        assert_eq!(id, id.to_ascii_lowercase());
    }
}

fn label_template(text: &str) {
    let lines = text.split('\n').count();
    for parsed in [
        LabelTemplate::parse(text),
        LabelTemplate::parse_qr_data(text),
    ] {
        match parsed {
            Ok(t) => {
                let commands = |s: &str| s.matches(['^', '~']).count();
                let empty = t.fill(|_| String::new());
                let hostile = t.fill(|f: Field| format!("^XZ~JA{}^", f.name()));
                assert_eq!(
                    commands(&empty),
                    commands(&hostile),
                    "a value adds a command"
                );
            }
            Err(e) => assert!(
                (1..=lines).contains(&e.line) && e.column >= 1,
                "refused at {}:{} in a text of {lines} lines",
                e.line,
                e.column
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::names_a_template_file;

    #[test]
    fn only_a_set_template_file_keeps_a_configuration_from_the_fuzzer() {
        // The repository's station.toml mentions the key in a comment, and so do the seeds made
        // from it, the one with [[fixture]] tables and a [label] section among them: they were
        // skipped whole before, and no fuzzed [[fixture]] or [label] reached their checks.
        let text = include_str!("../../station.toml");
        assert!(text.contains("template_file"));
        assert!(!names_a_template_file(text));
        assert!(!names_a_template_file(include_str!(
            "../../installer/station.toml"
        )));
        assert!(names_a_template_file(
            "[label]\ntemplate_file = \"/dev/zero\"\n"
        ));
        assert!(names_a_template_file(
            "[label]\n\"template\\u005ffile\" = \"/dev/zero\"\n"
        ));
        assert!(names_a_template_file(
            "[[fixture]]\nid = \"a\"\n[fixture.x]\ntemplate_file = \"z\"\n"
        ));
        assert!(!names_a_template_file("not toml ["));
    }
}
