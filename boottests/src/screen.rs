//! Looking at the screen as a person would: the picture QEMU's `screendump`
//! saves (PPM), its colours, and the text `tesseract` (OCR) reads from it.

use crate::Log;
use std::path::Path;
use std::process::Command;

/// An RGB picture, 8 bits a channel.
#[derive(Clone)]
pub struct Screen {
    pub width: usize,
    pub height: usize,
    /// Row-major RGB triples.
    pub rgb: Vec<u8>,
}

/// The colours a SUMMARY line can have, as classes wide enough for 15/16-bit
/// rounding and the VGA palette (light green, yellow, light red).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colour {
    Green,
    Yellow,
    Red,
}

impl Colour {
    /// The colour of `result=` (PASS, NO_VMX, FAIL).
    pub fn of_result(result: &str) -> Colour {
        match result {
            "PASS" => Colour::Green,
            "NO_VMX" => Colour::Yellow,
            _ => Colour::Red,
        }
    }

    pub fn matches(self, [r, g, b]: [u8; 3]) -> bool {
        let (hi, lo) = (|c: u8| c >= 0xc0, |c: u8| c <= 0x80);
        match self {
            Colour::Green => lo(r) && hi(g) && lo(b),
            Colour::Yellow => hi(r) && hi(g) && lo(b),
            Colour::Red => hi(r) && lo(g) && lo(b),
        }
    }
}

impl Screen {
    /// Read a binary PPM (P6, maxval 255), as QEMU's screendump writes it.
    pub fn from_ppm(path: &Path) -> Result<Screen, String> {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // Header: "P6", width, height, maxval, each after whitespace, then one whitespace byte.
        let mut fields = Vec::new();
        let mut pos = 0;
        while fields.len() < 4 {
            while pos < data.len() && data[pos].is_ascii_whitespace() {
                pos += 1;
            }
            let start = pos;
            while pos < data.len() && !data[pos].is_ascii_whitespace() {
                pos += 1;
            }
            if start == pos {
                return Err(format!("{}: truncated PPM header", path.display()));
            }
            fields.push(String::from_utf8_lossy(&data[start..pos]).into_owned());
        }
        let num = |s: &str| s.parse::<usize>().map_err(|_| format!("{}: bad PPM header field {s:?}", path.display()));
        if fields[0] != "P6" || num(&fields[3])? != 255 {
            return Err(format!("{}: not an 8-bit binary PPM: {fields:?}", path.display()));
        }
        let (width, height) = (num(&fields[1])?, num(&fields[2])?);
        let rgb = data.get(pos + 1..).unwrap_or_default().to_vec();
        if width == 0 || height == 0 || rgb.len() != width * height * 3 {
            return Err(format!("{}: {width}x{height} but {} bytes of pixels", path.display(), rgb.len()));
        }
        Ok(Screen { width, height, rgb })
    }

    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Rows in which at least `min` pixels have `colour`.
    pub fn rows_with(&self, colour: Colour, min: usize) -> Vec<usize> {
        (0..self.height)
            .filter(|&y| (0..self.width).filter(|&x| colour.matches(self.pixel(x, y))).count() >= min)
            .collect()
    }

    /// Of the pixels in rows `rows` that are not black, the share that has `colour`.
    pub fn share(&self, rows: std::ops::Range<usize>, colour: Colour) -> f64 {
        let (mut lit, mut coloured) = (0usize, 0usize);
        for y in rows {
            for x in 0..self.width {
                let p = self.pixel(x, y);
                if p.iter().any(|&c| c > 0x30) {
                    lit += 1;
                    coloured += colour.matches(p) as usize;
                }
            }
        }
        if lit == 0 {
            0.0
        } else {
            coloured as f64 / lit as f64
        }
    }

    /// The text tesseract reads in rows `rows` (the whole width), enlarged
    /// `scale` times (2 reads best; more makes blocky glyphs OCR misreads) and turned into dark text on a light ground (as OCR wants
    /// it) from whatever colours the screen uses. `psm` is tesseract's page
    /// segmentation mode: 6 a block of text, 7 a single line.
    pub fn ocr(&self, rows: std::ops::Range<usize>, scale: usize, psm: u32, file: &Path) -> Result<String, String> {
        let (w, h) = (self.width * scale, rows.len() * scale);
        let luma = |p: [u8; 3]| p[0] as f32 * 0.299 + p[1] as f32 * 0.587 + p[2] as f32 * 0.114;
        let gray: Vec<f32> = rows
            .clone()
            .flat_map(|y| (0..self.width).map(move |x| (x, y)))
            .map(|(x, y)| luma(self.pixel(x, y)))
            .collect();
        // Dark text on a light ground, as OCR wants it: light-on-dark is inverted.
        let light_ground = gray.iter().sum::<f32>() / gray.len().max(1) as f32 > 128.0;
        let (sw, sh) = (self.width, rows.len());
        let at = |x: usize, y: usize| gray[y.min(sh - 1) * sw + x.min(sw - 1)];
        let mut pgm = format!("P5\n{w} {h}\n255\n").into_bytes();
        // Bilinear enlargement: smooth edges read better than blocky ones.
        for oy in 0..h {
            let fy = ((oy as f32 + 0.5) / scale as f32 - 0.5).max(0.0);
            let (y0, ty) = (fy as usize, fy.fract());
            for ox in 0..w {
                let fx = ((ox as f32 + 0.5) / scale as f32 - 0.5).max(0.0);
                let (x0, tx) = (fx as usize, fx.fract());
                let top = at(x0, y0) * (1.0 - tx) + at(x0 + 1, y0) * tx;
                let bottom = at(x0, y0 + 1) * (1.0 - tx) + at(x0 + 1, y0 + 1) * tx;
                let v = (top * (1.0 - ty) + bottom * ty).clamp(0.0, 255.0) as u8;
                pgm.push(if light_ground { v } else { 255 - v });
            }
        }
        std::fs::write(file, &pgm).map_err(|e| format!("{}: {e}", file.display()))?;
        let out = Command::new("tesseract")
            .arg(file)
            .arg("stdout")
            .args(["--psm", &psm.to_string()])
            // One thread: the tests already run two at a time on two cores.
            .env("OMP_THREAD_LIMIT", "1")
            .output()
            .map_err(|e| format!("tesseract (Debian's tesseract-ocr; scripts/install-deps installs it): {e}"))?;
        if !out.status.success() {
            return Err(format!("tesseract failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Text as compared with OCR: runs of whitespace as one space, and each set of
/// shapes OCR confuses in these fonts (measured on QEMU's screens with
/// tesseract 5.3) as one character: the font's dotted zero with '@', '®' and
/// 'O'; '1' with 'l' and 'I'; the VGA text font's 'V' read as 'U'; 'g' read as 'q'.
pub fn normalize(text: &str) -> String {
    let classes: [(&[char], char); 4] =
        [(&['@', '®', '©', 'O', 'o', 'Ø', 'ø', 'θ', 'Q'], '0'), (&['l', 'I', '|'], '1'), (&['U'], 'V'), (&['q'], 'g')];
    let mut s = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for (shapes, as_) in classes {
        s = s.replace(shapes, &as_.to_string());
    }
    s
}

impl Log {
    /// The screen saved after the run; fails the test when there is none.
    pub fn screen(&self) -> &Screen {
        match &self.screen {
            Some(Ok(s)) => s,
            Some(Err(e)) => self.fail(&format!("no screen picture: {e}")),
            None => self.fail("no screen picture: the scenario did not ask for a screendump"),
        }
    }

    /// The SUMMARY line must be on the screen as `expected`: its rows carry
    /// the colour of its result (and no other rows do), and OCR reads the line
    /// from those rows.
    pub fn assert_screen_summary(&self, expected: &str) {
        let screen = self.screen();
        let result = expected.rsplit("result=").next().and_then(|r| r.split_whitespace().next()).unwrap_or_default();
        let colour = Colour::of_result(result);
        let rows = screen.rows_with(colour, 20);
        let (Some(&first), Some(&last)) = (rows.first(), rows.last()) else {
            self.fail(&format!("no row of the screen has the {colour:?} of result={result}"));
        };
        if last - first + 1 > screen.height / 8 {
            self.fail(&format!("{colour:?} spreads over rows {first}..={last}, more than the SUMMARY line"));
        }
        let share = screen.share(first..last + 1, colour);
        if share < 0.6 {
            self.fail(&format!("only {:.0}% of the lit pixels of the SUMMARY rows are {colour:?}", share * 100.0));
        }
        let band = first.saturating_sub(4)..(last + 5).min(screen.height);
        let read = screen.ocr(band, 2, 7, &self.dir.join("summary.pgm")).unwrap_or_else(|e| self.fail(&e));
        if !normalize(&read).contains(&normalize(expected)) {
            self.fail(&format!("OCR of the {colour:?} rows {first}..={last} reads {read:?}, not {expected:?}"));
        }
    }

    /// OCR of the whole screen (of the rows with anything lit: a black screen
    /// reads as nothing), enlarged twice.
    pub fn screen_text(&self) -> String {
        let screen = self.screen();
        let lit = |y: usize| (0..screen.width).any(|x| screen.pixel(x, y).iter().any(|&c| c > 0x30));
        let (Some(first), Some(last)) = ((0..screen.height).find(|&y| lit(y)), (0..screen.height).rfind(|&y| lit(y)))
        else {
            return String::new();
        };
        let rows = first.saturating_sub(8)..(last + 9).min(screen.height);
        screen.ocr(rows, 2, 6, &self.dir.join("screen.pgm")).unwrap_or_else(|e| self.fail(&e))
    }
}
