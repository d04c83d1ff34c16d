//! The label preview: the filled ZPL drawn by the station as a black-and-white PNG, one pixel
//! per printer dot, so the technician (and `station label preview`) sees what will print.
//!
//! It draws the subset of ZPL a label template needs: the label size (`^PW`, `^LL`), home and
//! field origins (`^LH`, `^FO`, `^FT`), fonts (`^CF`, `^A`), text fields (`^FD` … `^FS`), boxes
//! and lines (`^GB`) and QR codes (`^BQ`, with the `qrcode` crate). Text uses an 8 × 8 bitmap
//! font stretched to the field's height and width: positions and sizes are the printer's,
//! glyph shapes are not. Other commands are ignored. It never fails: a field it cannot draw is
//! left out.

use super::{LabelData, template};
use crate::config::LabelSection;
use font8x8::legacy::BASIC_LEGACY;
use qrcode::{Color, EcLevel, QrCode};

/// Label size when the template sets none: 50 × 25 mm at 8 dots/mm (203 dpi).
pub const DEFAULT_SIZE: (usize, usize) = (400, 200);

/// Largest label drawn, in dots each way (a 300 dpi label of 33 cm).
const MAX_DOTS: usize = 4_000;

/// ZPL's default font height and QR magnification on a 203 dpi printer.
const DEFAULT_FONT: (usize, usize) = (9, 5);
const DEFAULT_QR_MAGNIFICATION: usize = 2;

/// The preview of `data`'s label under `section`, as PNG bytes.
pub fn render_png(data: &LabelData, section: &LabelSection) -> Vec<u8> {
    render_zpl(&template::zpl(data, section)).to_png()
}

/// A black-and-white picture, one pixel per printer dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    pub width: usize,
    pub height: usize,
    /// Row by row; `true` is black.
    pub dots: Vec<bool>,
}

impl Bitmap {
    fn new(width: usize, height: usize) -> Bitmap {
        let (width, height) = (width.clamp(1, MAX_DOTS), height.clamp(1, MAX_DOTS));
        Bitmap {
            width,
            height,
            dots: vec![false; width * height],
        }
    }

    /// Whether the dot at (`x`, `y`) is black (outside: white).
    pub fn black(&self, x: usize, y: usize) -> bool {
        x < self.width && y < self.height && self.dots[y * self.width + x]
    }

    fn fill(&mut self, x: i64, y: i64, w: usize, h: usize) {
        for yy in y.max(0)..(y + h as i64).min(self.height as i64) {
            for xx in x.max(0)..(x + w as i64).min(self.width as i64) {
                self.dots[yy as usize * self.width + xx as usize] = true;
            }
        }
    }

    /// 8-bit greyscale PNG (black 0, white 255).
    pub fn to_png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let pixels: Vec<u8> = self.dots.iter().map(|b| if *b { 0 } else { 255 }).collect();
        enc.write_header()
            .and_then(|mut w| w.write_image_data(&pixels))
            .expect("a PNG of a non-empty bitmap encodes into memory");
        out
    }
}

/// One ZPL command: its two-letter code (upper case) and its parameters.
fn commands(zpl: &str) -> Vec<(String, &str)> {
    let starts: Vec<usize> = zpl.match_indices(['^', '~']).map(|(i, _)| i).collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let end = starts.get(k + 1).copied().unwrap_or(zpl.len());
            let body = &zpl[i + 1..end];
            let split = body.char_indices().nth(2).map_or(body.len(), |(j, _)| j);
            (body[..split].to_ascii_uppercase(), &body[split..])
        })
        .collect()
}

/// The numbers of a comma-separated parameter list (blank or bad: `None`).
fn numbers(params: &str) -> Vec<Option<i64>> {
    params
        .split(',')
        .map(|p| p.trim().parse::<i64>().ok())
        .collect()
}

fn number(n: &[Option<i64>], i: usize) -> Option<i64> {
    n.get(i).copied().flatten()
}

/// What the fields drawn so far leave in force.
struct Pen {
    home: (i64, i64),
    origin: (i64, i64),
    /// `^FT`: the origin is the text's baseline, not its top.
    baseline: bool,
    default_font: (usize, usize),
    font: Option<(usize, usize)>,
    qr: Option<usize>,
}

/// Draw `zpl` (the first label in it).
pub fn render_zpl(zpl: &str) -> Bitmap {
    let cmds = commands(zpl);
    let size = |code: &str, default: usize| {
        cmds.iter()
            .rev()
            .find(|(c, _)| c == code)
            .and_then(|(_, p)| number(&numbers(p), 0))
            .filter(|n| *n > 0)
            .map_or(default, |n| n as usize)
    };
    let mut bitmap = Bitmap::new(size("PW", DEFAULT_SIZE.0), size("LL", DEFAULT_SIZE.1));
    let mut pen = Pen {
        home: (0, 0),
        origin: (0, 0),
        baseline: false,
        default_font: DEFAULT_FONT,
        font: None,
        qr: None,
    };
    let mut data = String::new();
    for (code, params) in &cmds {
        let n = numbers(params);
        let xy = |n: &[Option<i64>]| (number(n, 0).unwrap_or(0), number(n, 1).unwrap_or(0));
        match code.as_str() {
            "XZ" => break,
            "LH" => pen.home = xy(&n),
            "FO" | "FT" => {
                let (x, y) = xy(&n);
                pen.origin = (pen.home.0 + x, pen.home.1 + y);
                pen.baseline = code == "FT";
            }
            "CF" => pen.default_font = font(&n[1.min(n.len())..], pen.default_font),
            c if c.starts_with('A') => {
                // `^A0N,h,w`: the code is `A` and the font name; orientation, height, width.
                pen.font = Some(font(n.get(1..).unwrap_or(&[]), pen.default_font));
            }
            "BQ" => {
                let m = number(&n, 2).filter(|m| (1..=100).contains(m));
                pen.qr = Some(m.map_or(DEFAULT_QR_MAGNIFICATION, |m| m as usize));
            }
            "GB" => draw_box(&mut bitmap, pen.origin, &n),
            "FD" => data = params.replace(['\r', '\n'], ""),
            "FS" => {
                match pen.qr.take() {
                    Some(magnification) => draw_qr(&mut bitmap, pen.origin, magnification, &data),
                    None => {
                        let (h, w) = pen.font.unwrap_or(pen.default_font);
                        let (x, y) = pen.origin;
                        let top = if pen.baseline { y - h as i64 } else { y };
                        draw_text(&mut bitmap, (x, top), (h, w), &data);
                    }
                }
                pen.font = None;
                data.clear();
            }
            _ => {}
        }
    }
    bitmap
}

/// `(height, width)` from `h,w` (a width left out is the height's, as ZPL scales font 0).
fn font(n: &[Option<i64>], default: (usize, usize)) -> (usize, usize) {
    let clamp = |v: i64| v.clamp(1, 1_000) as usize;
    match (number(n, 0), number(n, 1)) {
        (Some(h), Some(w)) => (clamp(h), clamp(w)),
        (Some(h), None) => (clamp(h), clamp(h)),
        (None, Some(w)) => (default.0, clamp(w)),
        (None, None) => default,
    }
}

/// `^GBw,h,t`: a box with borders `t` thick (a line when `w` or `h` is no more than `t`).
fn draw_box(b: &mut Bitmap, (x, y): (i64, i64), n: &[Option<i64>]) {
    let t = number(n, 2).unwrap_or(1).clamp(1, MAX_DOTS as i64) as usize;
    let w = (number(n, 0).unwrap_or(1).clamp(1, MAX_DOTS as i64) as usize).max(t);
    let h = (number(n, 1).unwrap_or(1).clamp(1, MAX_DOTS as i64) as usize).max(t);
    b.fill(x, y, w, t);
    b.fill(x, y + (h - t) as i64, w, t);
    b.fill(x, y, t, h);
    b.fill(x + (w - t) as i64, y, t, h);
}

/// Text in the 8 × 8 font stretched to cells `w` wide and `h` high.
fn draw_text(b: &mut Bitmap, (x, y): (i64, i64), (h, w): (usize, usize), text: &str) {
    for (k, c) in text.chars().enumerate() {
        let glyph = BASIC_LEGACY[if c.is_ascii() {
            c as usize
        } else {
            '?' as usize
        }];
        let left = x + (k * w) as i64;
        for dy in 0..h {
            let row = glyph[dy * 8 / h];
            for dx in 0..w {
                if row & (1 << (dx * 8 / w)) != 0 {
                    b.fill(left + dx as i64, y + dy as i64, 1, 1);
                }
            }
        }
    }
}

/// `^BQ` field data `EM,data`: error correction `E` (H, Q, M, L), input mode `M`, the data.
fn draw_qr(b: &mut Bitmap, (x, y): (i64, i64), magnification: usize, field: &str) {
    let (level, data) = match field.as_bytes() {
        [e, _, b',', ..] => (*e, &field[3..]),
        _ => (b'Q', field),
    };
    let level = match level.to_ascii_uppercase() {
        b'H' => EcLevel::H,
        b'M' => EcLevel::M,
        b'L' => EcLevel::L,
        _ => EcLevel::Q,
    };
    let Ok(code) = QrCode::with_error_correction_level(data.as_bytes(), level) else {
        return;
    };
    let width = code.width();
    for (i, c) in code.to_colors().into_iter().enumerate() {
        if c == Color::Dark {
            let (mx, my) = ((i % width) * magnification, (i / width) * magnification);
            b.fill(x + mx as i64, y + my as i64, magnification, magnification);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_render_sizes_the_canvas_and_draws_boxes_and_text() {
        let b = render_zpl("^XA^PW100^LL50^FO10,10^GB20,10,2^FS^FO40,5^A0N,16,16^FDI^FS^XZ");
        assert_eq!((b.width, b.height), (100, 50));
        assert!(b.black(10, 10) && b.black(29, 19) && !b.black(20, 15));
        assert!((40..56).any(|x| b.black(x, 12)), "the I's stem");
        let b = render_zpl("^XA^FDx^FS^XZ");
        assert_eq!((b.width, b.height), DEFAULT_SIZE);
    }

    #[test]
    fn label_render_draws_the_qr_code_at_its_magnification() {
        let b = render_zpl("^XA^FO4,6^BQN,2,3^FDMA,hello^FS^XZ");
        // The finder pattern's top-left corner is dark, 3 dots per module.
        assert!(b.black(4, 6) && b.black(6, 8) && !b.black(3, 6));
        assert!(b.to_png().starts_with(b"\x89PNG"));
    }
}
