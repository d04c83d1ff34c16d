//! Registration IDs: the DPS rule (docs: `shared/design/DPS.md`) and the template that forms them.
//!
//! The rule: lowercase; 1 to 128 characters of `a-z 0-9 - . _ :`; first an alphanumeric; last an
//! alphanumeric or `-`. IDs are emitted lowercase because DPS compares them case-insensitively.

use crate::error::{Error, Result};

/// Longest registration ID DPS accepts.
pub const MAX_LEN: usize = 128;

/// A character a registration ID may hold, in either case (IDs are emitted lowercase).
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._:".contains(c)
}

/// What a registration ID may start with.
fn valid_first(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// What a registration ID may end with.
fn valid_last(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

/// Check `id` against the DPS rule; on failure, the rule it broke.
pub fn validate(id: &str) -> Result<()> {
    let fail = |rule: String| {
        Err(Error::RegistrationId {
            id: id.to_string(),
            rule,
        })
    };
    if id.is_empty() {
        return fail("it is empty".into());
    }
    if id.len() > MAX_LEN {
        return fail(format!(
            "it is {} characters long; at most {MAX_LEN} are allowed",
            id.len()
        ));
    }
    if let Some((pos, ch)) = id
        .char_indices()
        .find(|&(_, c)| !allowed(c) || c.is_ascii_uppercase())
    {
        return fail(format!(
            "character {:?} at position {} is not allowed; use a-z, 0-9, - . _ :",
            ch,
            pos + 1
        ));
    }
    let first = id.as_bytes()[0];
    if !valid_first(first as char) {
        return fail(format!(
            "it starts with {:?}; it must start with a letter or digit",
            first as char
        ));
    }
    let last = id.as_bytes()[id.len() - 1];
    if !valid_last(last as char) {
        return fail(format!(
            "it ends with {:?}; it must end with a letter, digit or -",
            last as char
        ));
    }
    Ok(())
}

/// What a template can draw on.
#[derive(Debug, Default, Clone)]
pub struct Inputs<'a> {
    pub serial: &'a str,
    pub scan: Option<&'a str>,
    pub station: &'a str,
    pub line: &'a str,
    pub model: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Serial,
    Scan,
    Station,
    Line,
    Model,
}

/// Refuse literal text no registration ID could contain, so that a template that would fail
/// every device is refused when the configuration loads.
fn check_literals(template: &str, parts: &[Part]) -> std::result::Result<(), String> {
    for p in parts {
        if let Part::Lit(text) = p
            && let Some(c) = text.chars().find(|&c| !allowed(c))
        {
            return Err(format!(
                "character {c:?} in template `{template}` can never be in a registration ID; use a-z, 0-9, - . _ : between placeholders"
            ));
        }
    }
    if let Some(Part::Lit(text)) = parts.first()
        && let Some(c) = text.chars().next().filter(|&c| !valid_first(c))
    {
        return Err(format!(
            "template `{template}` starts with {c:?}; a registration ID must start with a letter or digit"
        ));
    }
    if let Some(Part::Lit(text)) = parts.last()
        && let Some(c) = text.chars().last().filter(|&c| !valid_last(c))
    {
        return Err(format!(
            "template `{template}` ends with {c:?}; a registration ID must end with a letter, digit or -"
        ));
    }
    Ok(())
}

/// A parsed `[registration] template`, e.g. `"{line}-{serial}"`.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

/// Placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &["serial", "scan", "station", "line", "model"];

impl Template {
    /// Parse a template; the error says which placeholder is unknown or unclosed.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in template `{s}`"))?;
            let name = &after[..close];
            parts.push(match name {
                "serial" => Part::Serial,
                "scan" => Part::Scan,
                "station" => Part::Station,
                "line" => Part::Line,
                "model" => Part::Model,
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}}; expected one of {}",
                        PLACEHOLDERS
                            .iter()
                            .map(|p| format!("{{{p}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("the template is empty".into());
        }
        check_literals(s, &parts)?;
        Ok(Template { parts })
    }

    /// Whether the template contains a per-device value.
    pub fn is_per_device(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Serial | Part::Scan))
    }

    /// Whether the template needs a scanned code.
    pub fn needs_scan(&self) -> bool {
        self.parts.contains(&Part::Scan)
    }

    /// Render, lowercase and validate.
    pub fn render(&self, inputs: &Inputs<'_>) -> Result<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Serial => out.push_str(inputs.serial),
                Part::Scan => out.push_str(inputs.scan.ok_or(Error::NoSerial)?),
                Part::Station => out.push_str(inputs.station),
                Part::Line => out.push_str(inputs.line),
                Part::Model => out.push_str(inputs.model),
            }
        }
        let id = out.to_ascii_lowercase();
        validate(&id)?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule_of(id: &str) -> String {
        match validate(id) {
            Err(Error::RegistrationId { rule, .. }) => rule,
            other => panic!("expected a rule violation for {id:?}, got {other:?}"),
        }
    }

    #[test]
    fn accepts_dps_examples() {
        for id in ["a", "sn-0001", "line1.dev_2:x", "abc-", "0"] {
            validate(id).unwrap();
        }
        validate(&"a".repeat(128)).unwrap();
    }

    #[test]
    fn refuses_each_rule_with_its_reason() {
        assert!(rule_of("").contains("empty"));
        assert!(rule_of(&"a".repeat(129)).contains("at most 128"));
        assert!(rule_of("Sn1").contains("'S'"));
        assert!(rule_of("a b").contains("position 2"));
        assert!(rule_of("-ab").contains("must start"));
        assert!(rule_of("ab.").contains("must end"));
        assert!(rule_of("ab_").contains("must end"));
    }

    #[test]
    fn template_renders_lowercase() {
        let t = Template::parse("{line}-{serial}").unwrap();
        let id = t
            .render(&Inputs {
                serial: "SN0042",
                line: "L1",
                ..Default::default()
            })
            .unwrap();
        assert_eq!(id, "l1-sn0042");
    }

    #[test]
    fn template_errors_name_the_problem() {
        assert!(
            Template::parse("{serail}")
                .unwrap_err()
                .contains("{serail}")
        );
        assert!(Template::parse("{serial").unwrap_err().contains("unclosed"));
        assert!(!Template::parse("fixed").unwrap().is_per_device());
        let t = Template::parse("{scan}").unwrap();
        assert!(t.needs_scan());
        assert!(matches!(t.render(&Inputs::default()), Err(Error::NoSerial)));
        let t = Template::parse("{serial}").unwrap();
        let e = t.render(&Inputs {
            serial: "SN 1",
            ..Default::default()
        });
        assert!(matches!(e, Err(Error::RegistrationId { .. })));
    }

    proptest! {
        #[test]
        fn validate_agrees_with_the_reference_regex(id in "[a-zA-Z0-9._: -]{0,130}") {
            // ^[a-z0-9]([a-z0-9._:-]{0,126}[a-z0-9-])?$ written out by hand.
            let b = id.as_bytes();
            let ok_mid = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._:-".contains(&c);
            let expected = !b.is_empty()
                && b.len() <= 128
                && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
                && b.iter().all(|&c| ok_mid(c))
                && (b.len() == 1 || { let l = b[b.len() - 1]; l.is_ascii_lowercase() || l.is_ascii_digit() || l == b'-' });
            prop_assert_eq!(validate(&id).is_ok(), expected);
        }
    }
}
