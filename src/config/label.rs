//! `[label]`: the device label printed after each PASS — the printer, the ZPL template and the
//! QR code's data.
//!
//! The template (inline `template`, a `template_file`, or the built-in one) is parsed when the
//! configuration loads; an unknown placeholder or an unbalanced `^XA`/`^XZ` is refused with
//! the `file:line:column` of the template line that holds it (within station.toml for an
//! inline template). A template file is read once, at load.

use crate::domain::label::{DEFAULT_QR_DATA, DEFAULT_TEMPLATE, LabelTemplate, TemplateError};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The port of a Zebra-compatible printer's raw TCP socket when the address names none.
pub const ZPL_TCP_DEFAULT_PORT: u16 = 9100;

/// Where labels go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum PrinterAddress {
    /// `zpl-tcp://host:port`: raw ZPL over TCP (port 9100 unless given), as Zebra printers
    /// and most compatible label printers accept it.
    ZplTcp { host: String, port: u16 },
    /// `cups:QUEUE`: through the local print system (`lp -d QUEUE -o raw`).
    Cups { queue: String },
    /// `file:DIR`: each label written as a `.zpl` file in `DIR` (relative to station.toml).
    File { dir: PathBuf },
}

impl TryFrom<String> for PrinterAddress {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        let expected = "expected `zpl-tcp://host:9100`, `cups:QUEUE` or `file:DIR`";
        if let Some(rest) = s.strip_prefix("zpl-tcp://") {
            let rest = rest.trim_end_matches('/');
            let (host, port) = match rest.rsplit_once(':') {
                // `host:9100`, `[::1]:9100`.
                Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                    let port = p
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| format!("`{s}`: `{p}` is not a TCP port"))?;
                    (h, port)
                }
                // `[::1]`
                Some(_) if rest.starts_with('[') && rest.ends_with(']') => {
                    (rest, ZPL_TCP_DEFAULT_PORT)
                }
                Some(_) => {
                    return Err(format!(
                        "`{s}`: write an IPv6 address in brackets, e.g. zpl-tcp://[fd00::5]:9100"
                    ));
                }
                None => (rest, ZPL_TCP_DEFAULT_PORT),
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || host.contains(['/', ' ']) {
                return Err(format!("`{s}`: no printer host; {expected}"));
            }
            return Ok(PrinterAddress::ZplTcp {
                host: host.to_string(),
                port,
            });
        }
        if let Some(queue) = s.strip_prefix("cups:") {
            if queue.is_empty() || !queue.chars().all(|c| c.is_ascii_graphic() && c != '/') {
                return Err(format!("`{s}`: expected a CUPS queue name after `cups:`"));
            }
            return Ok(PrinterAddress::Cups {
                queue: queue.into(),
            });
        }
        if let Some(dir) = s.strip_prefix("file:") {
            if dir.is_empty() {
                return Err(format!("`{s}`: expected a directory after `file:`"));
            }
            return Ok(PrinterAddress::File { dir: dir.into() });
        }
        Err(format!("`{s}`: {expected}"))
    }
}

impl From<PrinterAddress> for String {
    fn from(p: PrinterAddress) -> String {
        p.to_string()
    }
}

impl std::fmt::Display for PrinterAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrinterAddress::ZplTcp { host, port } if host.contains(':') => {
                write!(f, "zpl-tcp://[{host}]:{port}")
            }
            PrinterAddress::ZplTcp { host, port } => write!(f, "zpl-tcp://{host}:{port}"),
            PrinterAddress::Cups { queue } => write!(f, "cups:{queue}"),
            PrinterAddress::File { dir } => write!(f, "file:{}", dir.display()),
        }
    }
}

/// `[label]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSection {
    /// Print a label after every PASS.
    #[serde(default)]
    pub enabled: bool,
    /// Required when `enabled`.
    #[serde(default)]
    pub printer: Option<PrinterAddress>,
    /// The ZPL template inline (at most one of `template` and `template_file`).
    #[serde(default)]
    pub template: Option<String>,
    /// A file holding the ZPL template (relative to station.toml).
    #[serde(default)]
    pub template_file: Option<PathBuf>,
    /// What the QR code carries (`{qr}` in the template); placeholders allowed.
    #[serde(default = "default_qr_data")]
    pub qr_data: String,
    /// Labels kept while the printer is down, at most.
    #[serde(default = "default_queue_limit")]
    pub queue_limit: usize,
    /// Time allowed to connect to and send one label to the printer.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How often a label the printer did not take is tried again.
    #[serde(default = "default_retry_ms")]
    pub retry_ms: u64,
    /// At the end of `station provision`: how long to wait for queued labels to print.
    #[serde(default = "default_drain_s")]
    pub drain_s: u64,
    /// The contents of `template_file`, read when the configuration loads.
    #[serde(skip)]
    pub loaded_template: Option<String>,
}

impl Default for LabelSection {
    fn default() -> Self {
        Self {
            enabled: false,
            printer: None,
            template: None,
            template_file: None,
            qr_data: default_qr_data(),
            queue_limit: default_queue_limit(),
            timeout_ms: default_timeout_ms(),
            retry_ms: default_retry_ms(),
            drain_s: default_drain_s(),
            loaded_template: None,
        }
    }
}

fn default_qr_data() -> String {
    DEFAULT_QR_DATA.into()
}
fn default_queue_limit() -> usize {
    100
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_retry_ms() -> u64 {
    5_000
}
fn default_drain_s() -> u64 {
    30
}

impl LabelSection {
    /// The template text in force: the file's, the inline one, or the built-in one.
    pub fn template_text(&self) -> &str {
        self.loaded_template
            .as_deref()
            .or(self.template.as_deref())
            .unwrap_or(DEFAULT_TEMPLATE)
    }

    /// Time allowed to connect to and send one label.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }

    /// How long to wait before sending a refused label again.
    pub fn retry(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.retry_ms)
    }

    /// The template in force, parsed. A loaded configuration's always parses; a hand-made
    /// section's bad template falls back to the built-in one.
    pub fn parsed_template(&self) -> LabelTemplate {
        LabelTemplate::parse(self.template_text())
            .unwrap_or_else(|_| LabelTemplate::parse(DEFAULT_TEMPLATE).expect("built-in parses"))
    }

    /// `qr_data`, parsed (the built-in one when it does not parse; see [`Self::parsed_template`]).
    pub fn parsed_qr_data(&self) -> LabelTemplate {
        LabelTemplate::parse_qr_data(&self.qr_data).unwrap_or_else(|_| {
            LabelTemplate::parse_qr_data(DEFAULT_QR_DATA).expect("built-in parses")
        })
    }
}

/// The `[label]` checks serde cannot make, each located in station.toml (`key`, message).
pub(super) fn check(s: &LabelSection) -> std::result::Result<(), (String, String)> {
    let bad = |key: &str, m: &str| Err((format!("label.{key}"), m.to_string()));
    if s.enabled && s.printer.is_none() {
        return bad(
            "enabled",
            "printing labels needs printer = \"zpl-tcp://host:9100\", \"cups:QUEUE\" or \"file:DIR\"",
        );
    }
    if s.template.is_some() && s.template_file.is_some() {
        return bad(
            "template_file",
            "give the template inline (template) or in a file (template_file), not both",
        );
    }
    if s.queue_limit == 0 || s.queue_limit > 10_000 {
        return bad("queue_limit", "expected 1 to 10000 labels");
    }
    if s.timeout_ms == 0 || s.retry_ms == 0 {
        return bad("timeout_ms", "expected timeout_ms and retry_ms above 0");
    }
    Ok(())
}

/// Read `template_file` and parse the template in force and `qr_data`; a refusal names the
/// template's own line: in the template file, or in `text` (station.toml, at `path`);
/// `locate` finds a dotted key's line and column in `text`.
pub(super) fn load_template(
    s: &mut LabelSection,
    text: &str,
    path: &Path,
    locate: &dyn Fn(&str) -> Option<(usize, usize)>,
) -> Result<()> {
    let locate = |key: &str| locate(&format!("label.{key}"));
    let here = |key: &str| {
        let (line, col) = locate(key).unwrap_or((1, 1));
        format!("{}:{line}:{col}", path.display())
    };
    if let Some(file) = &s.template_file {
        let resolved = if file.is_absolute() {
            file.clone()
        } else {
            path.parent().unwrap_or(Path::new("")).join(file)
        };
        let body = std::fs::read_to_string(&resolved).map_err(|e| Error::ConfigInvalid {
            location: here("template_file"),
            key: "label.template_file".into(),
            message: format!("cannot read {}: {e}", resolved.display()),
        })?;
        LabelTemplate::parse(&body).map_err(|e| Error::ConfigInvalid {
            location: format!("{}:{}:{}", resolved.display(), e.line, e.column),
            key: "label.template_file".into(),
            message: e.message,
        })?;
        s.loaded_template = Some(body);
    } else if let Some(inline) = &s.template {
        LabelTemplate::parse(inline)
            .map_err(|e| inline_error(text, path, locate("template"), e))?;
    }
    LabelTemplate::parse_qr_data(&s.qr_data).map_err(|e| Error::ConfigInvalid {
        location: here("qr_data"),
        key: "label.qr_data".into(),
        message: e.message,
    })?;
    Ok(())
}

/// A refusal in an inline template, at its line in station.toml: the template's first line is
/// the key's own, or the next when the value opens with `"""` or `'''` and a line break.
fn inline_error(
    text: &str,
    path: &Path,
    key_at: Option<(usize, usize)>,
    e: TemplateError,
) -> Error {
    let (key_line, key_col) = key_at.unwrap_or((1, 1));
    let key_text = text.lines().nth(key_line - 1).unwrap_or("");
    let value = key_text.split_once('=').map_or("", |(_, v)| v.trim());
    let multi_line = ["\"\"\"", "'''"]
        .iter()
        .any(|d| value.strip_prefix(d).is_some_and(|r| r.trim().is_empty()));
    let (line, column) = if multi_line {
        (key_line + e.line, e.column)
    } else if e.line == 1 {
        // On the key's line: the column after `key = "`.
        let value_col = key_text.find(value).unwrap_or(0) + 2;
        (key_line, value_col + e.column - 1)
    } else {
        (key_line, key_col)
    };
    Error::ConfigInvalid {
        location: format!("{}:{line}:{column}", path.display()),
        key: "label.template".into(),
        message: e.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_printer_addresses_parse_and_print_back() {
        for (s, p) in [
            (
                "zpl-tcp://10.0.0.5:9100",
                PrinterAddress::ZplTcp {
                    host: "10.0.0.5".into(),
                    port: 9100,
                },
            ),
            (
                "zpl-tcp://printer-3",
                PrinterAddress::ZplTcp {
                    host: "printer-3".into(),
                    port: 9100,
                },
            ),
            (
                "zpl-tcp://[::1]:6101",
                PrinterAddress::ZplTcp {
                    host: "::1".into(),
                    port: 6101,
                },
            ),
            (
                "cups:Zebra_ZD421",
                PrinterAddress::Cups {
                    queue: "Zebra_ZD421".into(),
                },
            ),
            (
                "file:labels",
                PrinterAddress::File {
                    dir: "labels".into(),
                },
            ),
        ] {
            assert_eq!(PrinterAddress::try_from(s.to_string()).as_ref(), Ok(&p));
        }
        assert_eq!(
            PrinterAddress::try_from("zpl-tcp://printer-3".to_string())
                .unwrap()
                .to_string(),
            "zpl-tcp://printer-3:9100"
        );
        for s in [
            "lpt1",
            "zpl-tcp://:9100",
            "zpl-tcp://h:0",
            "zpl-tcp://h:x",
            "cups:",
            "file:",
        ] {
            assert!(PrinterAddress::try_from(s.to_string()).is_err(), "{s}");
        }
    }

    /// Where `template` is written in the texts below.
    fn at_line_2(key: &str) -> Option<(usize, usize)> {
        (key == "label.template").then_some((2, 1))
    }

    #[test]
    fn label_inline_template_errors_point_into_station_toml() {
        let text = "[label]\ntemplate = \"\"\"\n^XA\n^FD{nope}^FS\n^XZ\n\"\"\"\n";
        let mut s: LabelSection = toml::from_str::<toml::Table>(text).unwrap()["label"]
            .clone()
            .try_into()
            .unwrap();
        let e = load_template(&mut s, text, Path::new("station.toml"), &at_line_2).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("station.toml:4:4: `label.template`"),
            "{e}"
        );
        let text = "[label]\ntemplate = \"^XA^FD{nope}^FS\"\n";
        let mut s: LabelSection = toml::from_str::<toml::Table>(text).unwrap()["label"]
            .clone()
            .try_into()
            .unwrap();
        let e = load_template(&mut s, text, Path::new("station.toml"), &at_line_2).unwrap_err();
        assert!(e.to_string().starts_with("station.toml:2:19:"), "{e}");
    }
}
