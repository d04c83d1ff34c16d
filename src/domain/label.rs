//! The device label's template language: ZPL (Zebra Programming Language) text with
//! `{placeholder}`s, parsed once when the configuration loads so that a bad template is refused
//! with its line and column instead of printing a broken label for every device.
//!
//! A template is exactly one label, `^XA` … `^XZ` (tilde commands such as `~SD` may stand
//! outside it). Placeholders are the [`Field`]s; `{{` and `}}` are literal braces. Filling a
//! template replaces each placeholder by its value with `^` and `~` made harmless, so a value
//! can never start a ZPL command. This module knows no printer and no device: the label layer
//! supplies the values.

/// One thing a label can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    RegistrationId,
    Serial,
    IdScope,
    Model,
    Firmware,
    /// The day the device was provisioned (`YYYY-MM-DD`, UTC).
    Date,
    Station,
    Line,
    /// X.509: the device certificate's thumbprint (empty for other attestation kinds).
    CertThumbprint,
    /// The QR code's data: `[label] qr_data` filled in (not usable inside `qr_data` itself).
    Qr,
}

impl Field {
    /// Every field, in the order the documentation lists them.
    pub const ALL: [Field; 10] = [
        Field::RegistrationId,
        Field::Serial,
        Field::IdScope,
        Field::Model,
        Field::Firmware,
        Field::Date,
        Field::Station,
        Field::Line,
        Field::CertThumbprint,
        Field::Qr,
    ];

    /// The placeholder's name, as written between braces.
    pub fn name(self) -> &'static str {
        match self {
            Field::RegistrationId => "registration_id",
            Field::Serial => "serial",
            Field::IdScope => "id_scope",
            Field::Model => "model",
            Field::Firmware => "firmware",
            Field::Date => "date",
            Field::Station => "station",
            Field::Line => "line",
            Field::CertThumbprint => "cert_thumbprint",
            Field::Qr => "qr",
        }
    }

    fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// The built-in template: a readable 50 × 25 mm label at 203 dpi (8 dots/mm, 400 × 200 dots):
/// the QR code on the left, the registration ID large beside it, then serial, model and
/// firmware, date, station and line, and the ID scope.
pub const DEFAULT_TEMPLATE: &str = "^XA
^CI28
^PW400
^LL200
^LH0,0
^FO16,16^BQN,2,4^FDMA,{qr}^FS
^FO150,18^A0N,28,18^FD{registration_id}^FS
^FO150,56^A0N,20,12^FDSN {serial}^FS
^FO150,82^A0N,20,12^FD{model} {firmware}^FS
^FO150,108^A0N,20,12^FD{date}^FS
^FO150,134^A0N,20,12^FD{station} {line}^FS
^FO150,160^A0N,20,12^FDscope {id_scope}^FS
^XZ
";

/// The built-in QR code data: the registration ID.
pub const DEFAULT_QR_DATA: &str = "{registration_id}";

/// Where and why a template was refused (1-based line and column within the template).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Field(Field),
}

/// A parsed label template (or the `qr_data` string: placeholders only).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelTemplate {
    parts: Vec<Part>,
}

impl LabelTemplate {
    /// Parse a whole ZPL label template: placeholders known, one `^XA` … `^XZ`.
    pub fn parse(text: &str) -> Result<LabelTemplate, TemplateError> {
        let t = Self::parse_fields(text, true)?;
        check_label_frame(text)?;
        Ok(t)
    }

    /// Parse `qr_data`: placeholders known (not `{qr}`), no ZPL command characters.
    pub fn parse_qr_data(text: &str) -> Result<LabelTemplate, TemplateError> {
        if let Some((i, c)) = text.char_indices().find(|(_, c)| matches!(c, '^' | '~')) {
            let (line, column) = line_col(text, i);
            return Err(TemplateError {
                line,
                column,
                message: format!("`{c}` would start a ZPL command inside the QR code's data"),
            });
        }
        if text.trim().is_empty() {
            return Err(TemplateError {
                line: 1,
                column: 1,
                message: "the QR code's data is empty; e.g. \"{registration_id}\"".into(),
            });
        }
        Self::parse_fields(text, false)
    }

    /// The placeholders, `{{`/`}}` escapes and literal text of `text`.
    fn parse_fields(text: &str, allow_qr: bool) -> Result<LabelTemplate, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text.char_indices().peekable();
        while let Some((i, c)) = rest.next() {
            match c {
                '{' if rest.peek().map(|p| p.1) == Some('{') => {
                    rest.next();
                    lit.push('{');
                }
                '}' if rest.peek().map(|p| p.1) == Some('}') => {
                    rest.next();
                    lit.push('}');
                }
                '{' => {
                    let field = placeholder_at(text, i, allow_qr)?;
                    // Skip the name and its closing brace.
                    for _ in 0..field.name().len() + 1 {
                        rest.next();
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Field(field));
                }
                '}' => {
                    return Err(error_at(
                        text,
                        i,
                        "`}` closes no placeholder (write `}}` for a literal brace)".into(),
                    ));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(LabelTemplate { parts })
    }

    /// The placeholders this template uses, in order (repeats included).
    pub fn fields(&self) -> impl Iterator<Item = Field> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f) => Some(*f),
            Part::Lit(_) => None,
        })
    }

    /// The text with every placeholder replaced by `value(field)`; `^` and `~` in a value
    /// become `?` so that no value can start a ZPL command.
    pub fn fill(&self, value: impl Fn(Field) -> String) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Field(f) => out.extend(value(*f).chars().map(|c| match c {
                    '^' | '~' => '?',
                    c => c,
                })),
            }
        }
        out
    }
}

/// The placeholder opened by the `{` at byte `open`.
fn placeholder_at(text: &str, open: usize, allow_qr: bool) -> Result<Field, TemplateError> {
    let after = &text[open + 1..];
    let end = after
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(after.len());
    let name = &after[..end];
    if !after[end..].starts_with('}') {
        return Err(error_at(
            text,
            open,
            format!(
                "`{{{name}` is not closed with `}}` (write `{{{{` for a literal brace); placeholders: {}",
                known()
            ),
        ));
    }
    match Field::parse(name) {
        Some(Field::Qr) if !allow_qr => Err(error_at(
            text,
            open,
            "`{qr}` is the QR code's data itself; use the other placeholders here".into(),
        )),
        Some(f) => Ok(f),
        None => Err(error_at(
            text,
            open,
            format!(
                "unknown placeholder `{{{name}}}`; placeholders: {}",
                known()
            ),
        )),
    }
}

fn known() -> String {
    Field::ALL
        .iter()
        .map(|f| format!("{{{}}}", f.name()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Exactly one label: `^XA` opens it, `^XZ` closes it, nothing opens twice or closes unopened.
fn check_label_frame(text: &str) -> Result<(), TemplateError> {
    let mut open: Option<usize> = None;
    let mut labels = 0;
    for (i, _) in text.match_indices('^') {
        let code = text[i + 1..].get(..2).unwrap_or("").to_ascii_uppercase();
        match (code.as_str(), open) {
            ("XA", Some(at)) => {
                let (line, _) = line_col(text, at);
                return Err(error_at(
                    text,
                    i,
                    format!(
                        "^XA opens a label while the one opened at line {line} is not closed with ^XZ"
                    ),
                ));
            }
            ("XA", None) if labels > 0 => {
                return Err(error_at(
                    text,
                    i,
                    "a second label: a template is one label, ^XA … ^XZ".into(),
                ));
            }
            ("XA", None) => open = Some(i),
            ("XZ", None) => {
                return Err(error_at(
                    text,
                    i,
                    "^XZ closes no label (no ^XA before it)".into(),
                ));
            }
            ("XZ", Some(_)) => {
                open = None;
                labels += 1;
            }
            _ if open.is_none() => {
                return Err(error_at(
                    text,
                    i,
                    format!("^{code} outside the label: ZPL commands belong between ^XA and ^XZ"),
                ));
            }
            _ => {}
        }
    }
    match (open, labels) {
        (Some(at), _) => Err(error_at(
            text,
            at,
            "^XA opens a label that is never closed with ^XZ".into(),
        )),
        (None, 0) => Err(TemplateError {
            line: 1,
            column: 1,
            message: "no label: a ZPL template starts with ^XA and ends with ^XZ".into(),
        }),
        (None, _) => Ok(()),
    }
}

fn error_at(text: &str, offset: usize, message: String) -> TemplateError {
    let (line, column) = line_col(text, offset);
    TemplateError {
        line,
        column,
        message,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> TemplateError {
        LabelTemplate::parse(text).expect_err("refused")
    }

    #[test]
    fn the_default_template_parses_and_uses_the_qr_field() {
        let t = LabelTemplate::parse(DEFAULT_TEMPLATE).unwrap();
        let fields: Vec<Field> = t.fields().collect();
        assert!(fields.contains(&Field::Qr) && fields.contains(&Field::RegistrationId));
        LabelTemplate::parse_qr_data(DEFAULT_QR_DATA).unwrap();
    }

    #[test]
    fn label_template_fills_placeholders_and_escapes_zpl_in_values() {
        let t = LabelTemplate::parse("^XA^FD{serial}/{{x}}^FS^XZ").unwrap();
        let zpl = t.fill(|f| match f {
            Field::Serial => "A^B~C".into(),
            _ => String::new(),
        });
        assert_eq!(zpl, "^XA^FDA?B?C/{x}^FS^XZ");
    }

    #[test]
    fn label_template_refuses_an_unknown_placeholder_at_its_line_and_column() {
        let e = refused("^XA\n^FO1,1^FD{serail}^FS\n^XZ");
        assert_eq!((e.line, e.column), (2, 10));
        assert!(
            e.message.contains("unknown placeholder `{serail}`"),
            "{e:?}"
        );
        assert!(
            e.message.contains("{registration_id}"),
            "names the known ones"
        );
    }

    #[test]
    fn label_template_refuses_unclosed_and_stray_braces() {
        let e = refused("^XA^FD{serial^FS^XZ");
        assert_eq!((e.line, e.column), (1, 7));
        assert!(e.message.contains("not closed"), "{e:?}");
        let e = refused("^XA\n^FDa}b^FS^XZ");
        assert_eq!((e.line, e.column), (2, 5));
    }

    #[test]
    fn label_template_refuses_unbalanced_xa_xz() {
        let e = refused("^XA\n^FDx^FS\n");
        assert_eq!((e.line, e.column), (1, 1));
        assert!(e.message.contains("never closed"), "{e:?}");
        let e = refused("^FDx^FS\n^XZ");
        assert_eq!(e.line, 1, "a command outside the label: {e:?}");
        let e = refused("^XA\n^XZ\n^XZ\n");
        assert_eq!((e.line, e.message.contains("closes no label")), (3, true));
        let e = refused("^XA\n^FDx^FS\n  ^XA\n^XZ");
        assert_eq!((e.line, e.column), (3, 3));
        assert!(e.message.contains("line 1"), "{e:?}");
        let e = refused("^XA^XZ\n^XA^XZ");
        assert_eq!(e.line, 2);
        let e = refused("hello");
        assert!(e.message.contains("no label"), "{e:?}");
    }

    #[test]
    fn label_template_allows_tilde_commands_outside_and_lowercase_commands() {
        LabelTemplate::parse("~SD20\n^xa^FDx^FS^xz\n").unwrap();
    }

    #[test]
    fn label_qr_data_refuses_zpl_characters_and_itself() {
        let e = LabelTemplate::parse_qr_data("{registration_id}^FS").unwrap_err();
        assert_eq!(e.column, 18);
        assert!(LabelTemplate::parse_qr_data("{qr}").is_err());
        assert!(LabelTemplate::parse_qr_data("  ").is_err());
        let t = LabelTemplate::parse_qr_data("https://x/{registration_id}?s={serial}").unwrap();
        assert_eq!(
            t.fill(|f| f.name().to_uppercase()),
            "https://x/REGISTRATION_ID?s=SERIAL"
        );
    }
}
