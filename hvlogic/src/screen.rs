//! The screen console's arithmetic, without touching a screen: what the boot
//! loader said about its framebuffer, whether to believe it, where each pixel
//! or character cell of the console lies in it (never outside it), how a colour
//! is packed into a pixel, and the grid of character cells with its scrolling.
//!
//! Sources: the multiboot2 specification 3.6.12 ("Framebuffer info": address,
//! pitch, width, height, bpp, type 0 indexed / 1 direct RGB / 2 EGA text, and
//! the RGB field positions and sizes), and for EGA text the IBM VGA Technical
//! Reference (a cell is a character byte and an attribute byte, foreground in
//! bits 0-3, background in bits 4-6).

use core::fmt;

/// The framebuffer as the boot loader described it (multiboot2 3.6.12), not yet
/// checked. A plain copy of the tag, so others can use it as it is (say, to fill
/// Linux's `screen_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framebuffer {
    /// Physical address of the first byte.
    pub address: u64,
    /// Bytes from one row (text: one line) to the next.
    pub pitch: u32,
    /// Pixels per row; characters per line in EGA text.
    pub width: u32,
    /// Rows of pixels; lines in EGA text.
    pub height: u32,
    /// Bits per pixel (16 per character in EGA text).
    pub bpp: u8,
    pub kind: FramebufferKind,
}

/// `framebuffer_type` and what follows it in the tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramebufferKind {
    /// Type 0: each pixel is an index into a palette of this many colours.
    Indexed { colours: u16 },
    /// Type 1: direct colour; each channel is `size` bits at bit `position` of a pixel.
    Rgb { red: Field, green: Field, blue: Field },
    /// Type 2: EGA text; width and height count characters.
    EgaText,
    /// A type this specification revision does not define.
    Unknown(u8),
}

/// One colour channel of a direct-colour pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Field {
    /// Bit position of the channel's least significant bit.
    pub position: u8,
    /// Width of the channel in bits.
    pub size: u8,
}

/// Why a framebuffer tag is not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FbError {
    /// Type 0: drawing needs the palette programmed; this console does not.
    Indexed,
    Unknown(u8),
    /// Address 0.
    NoAddress,
    /// Width or height 0.
    Empty,
    /// Direct colour in a depth this console does not draw (15, 16, 24, 32 are drawn).
    Depth(u8),
    /// EGA text must have 16 bits per character.
    TextDepth(u8),
    /// A row does not fit in the pitch.
    Pitch {
        pitch: u32,
        row_bytes: u64,
    },
    /// A colour field lies outside the pixel, is empty or wider than 16 bits, or overlaps another.
    Field {
        name: &'static str,
        field: Field,
    },
    /// The framebuffer ends beyond what can be mapped (or beyond 2^64).
    TooHigh {
        end: u128,
        limit: u64,
    },
}

impl fmt::Display for FbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FbError::Indexed => f.write_str("indexed colour (framebuffer type 0) is not drawn"),
            FbError::Unknown(t) => write!(f, "unknown framebuffer type {t}"),
            FbError::NoAddress => f.write_str("framebuffer address 0"),
            FbError::Empty => f.write_str("width or height 0"),
            FbError::Depth(bpp) => write!(f, "{bpp} bits per pixel (15, 16, 24 and 32 are drawn)"),
            FbError::TextDepth(bpp) => write!(f, "EGA text with {bpp} bits per character (16 expected)"),
            FbError::Pitch { pitch, row_bytes } => write!(f, "pitch {pitch} is shorter than a row ({row_bytes} bytes)"),
            FbError::Field { name, field } => {
                write!(f, "{name} field at bit {} size {} does not fit the pixel", field.position, field.size)
            }
            FbError::TooHigh { end, limit } => write!(f, "framebuffer ends at {end:#x}, beyond {limit:#x}"),
        }
    }
}

/// A checked direct-colour framebuffer: every offset this type hands out lies
/// inside `[address, address + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelSurface {
    pub address: u64,
    pub pitch: usize,
    pub width: usize,
    pub height: usize,
    pub bytes_per_pixel: usize,
    pub red: Field,
    pub green: Field,
    pub blue: Field,
    /// Bytes from the first pixel to the end of the last one: `pitch * (height - 1) + width * bytes_per_pixel`.
    pub len: usize,
}

/// A checked EGA text buffer: `cols` x `rows` cells of 2 bytes, `pitch` bytes per line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextSurface {
    pub address: u64,
    pub pitch: usize,
    pub cols: usize,
    pub rows: usize,
    pub len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    Pixels(PixelSurface),
    Text(TextSurface),
}

impl Framebuffer {
    /// Check the tag; `limit` is the first address that cannot be mapped.
    pub fn validate(&self, limit: u64) -> Result<Surface, FbError> {
        let (bytes_per_pixel, fields) = match self.kind {
            FramebufferKind::Indexed { .. } => return Err(FbError::Indexed),
            FramebufferKind::Unknown(t) => return Err(FbError::Unknown(t)),
            FramebufferKind::EgaText if self.bpp != 16 => return Err(FbError::TextDepth(self.bpp)),
            FramebufferKind::EgaText => (2, None),
            FramebufferKind::Rgb { red, green, blue } => match self.bpp {
                15 | 16 => (2, Some([("red", red), ("green", green), ("blue", blue)])),
                24 => (3, Some([("red", red), ("green", green), ("blue", blue)])),
                32 => (4, Some([("red", red), ("green", green), ("blue", blue)])),
                bpp => return Err(FbError::Depth(bpp)),
            },
        };
        if self.address == 0 {
            return Err(FbError::NoAddress);
        }
        if self.width == 0 || self.height == 0 {
            return Err(FbError::Empty);
        }
        let row_bytes = self.width as u64 * bytes_per_pixel;
        if (self.pitch as u64) < row_bytes {
            return Err(FbError::Pitch { pitch: self.pitch, row_bytes });
        }
        let len = self.pitch as u64 * (self.height as u64 - 1) + row_bytes;
        let end = self.address as u128 + len as u128;
        if end > limit as u128 || usize::try_from(len).is_err() {
            return Err(FbError::TooHigh { end, limit });
        }
        let Some(fields) = fields else {
            return Ok(Surface::Text(TextSurface {
                address: self.address,
                pitch: self.pitch as usize,
                cols: self.width as usize,
                rows: self.height as usize,
                len: len as usize,
            }));
        };
        let mut used = 0u64;
        for (name, field) in fields {
            let bits = field.position as u32 + field.size as u32;
            let mask = if field.size == 0 { 0 } else { ((1u64 << field.size) - 1) << field.position };
            if field.size == 0 || field.size > 16 || bits > self.bpp as u32 || used & mask != 0 {
                return Err(FbError::Field { name, field });
            }
            used |= mask;
        }
        let [(_, red), (_, green), (_, blue)] = fields;
        Ok(Surface::Pixels(PixelSurface {
            address: self.address,
            pitch: self.pitch as usize,
            width: self.width as usize,
            height: self.height as usize,
            bytes_per_pixel: bytes_per_pixel as usize,
            red,
            green,
            blue,
            len: len as usize,
        }))
    }
}

impl PixelSurface {
    /// Byte offset of pixel (x, y), if it is on the screen.
    pub fn offset(&self, x: usize, y: usize) -> Option<usize> {
        (x < self.width && y < self.height).then(|| y * self.pitch + x * self.bytes_per_pixel)
    }

    /// The run of `count` pixels from (x, y) to the right, cut at the right
    /// edge: (byte offset, bytes). None when (x, y) is off the screen.
    pub fn span(&self, x: usize, y: usize, count: usize) -> Option<(usize, usize)> {
        let offset = self.offset(x, y)?;
        Some((offset, count.min(self.width - x) * self.bytes_per_pixel))
    }

    /// The pixel value of an 8-bit-per-channel colour in this framebuffer's format.
    pub fn pack(&self, rgb: Rgb) -> u32 {
        channel(rgb.0, self.red) | channel(rgb.1, self.green) | channel(rgb.2, self.blue)
    }
}

/// Scale an 8-bit channel to `field.size` bits (rounding to nearest) and move it into place.
fn channel(value: u8, field: Field) -> u32 {
    let max = (1u32 << field.size) - 1;
    ((value as u32 * max + 127) / 255) << field.position
}

impl TextSurface {
    /// Byte offset of the cell at (col, row), if it is on the screen.
    pub fn offset(&self, col: usize, row: usize) -> Option<usize> {
        (col < self.cols && row < self.rows).then(|| row * self.pitch + col * 2)
    }
}

/// Where the character grid lies on a pixel surface: `cols` x `rows` cells of
/// `cell_w` x `cell_h` pixels from the top-left corner. By construction every
/// cell lies inside the surface and a row of cells fits `row_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub cols: usize,
    pub rows: usize,
    pub cell_w: usize,
    pub cell_h: usize,
}

/// Fewest columns and rows the font choice aims for: a log line is up to about
/// 100 characters wide, and a 25-line screen is the text-mode classic.
pub const MIN_COLS: usize = 100;
pub const MIN_ROWS: usize = 25;

/// The largest cell (`(width, height)` in pixels) that still leaves MIN_COLS x
/// MIN_ROWS cells on a `width` x `height` screen; the smallest cell when none does.
/// `cells` is sorted from small to large.
pub fn choose_cell(cells: &[(usize, usize)], width: usize, height: usize) -> usize {
    let fits = |&(w, h): &(usize, usize)| w > 0 && h > 0 && width / w >= MIN_COLS && height / h >= MIN_ROWS;
    cells.iter().rposition(fits).unwrap_or(0)
}

impl Layout {
    /// The grid for cells of `cell_w` x `cell_h` on `surface`, at most
    /// `max_cols` x `max_rows`, and with a row of pixels of at most
    /// `max_row_bytes` (the line buffer it is drawn through). None when not
    /// even one cell fits.
    pub fn new(
        surface: &PixelSurface,
        cell_w: usize,
        cell_h: usize,
        max_cols: usize,
        max_rows: usize,
        max_row_bytes: usize,
    ) -> Option<Layout> {
        if cell_w == 0 || cell_h == 0 {
            return None;
        }
        let by_buffer = max_row_bytes / (cell_w * surface.bytes_per_pixel);
        let cols = (surface.width / cell_w).min(max_cols).min(by_buffer);
        let rows = (surface.height / cell_h).min(max_rows);
        (cols > 0 && rows > 0).then_some(Layout { cols, rows, cell_w, cell_h })
    }

    /// Pixel coordinates of the top-left corner of cell (col, row).
    pub fn origin(&self, col: usize, row: usize) -> (usize, usize) {
        (col * self.cell_w, row * self.cell_h)
    }
}

/// An 8-bit-per-channel colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

/// How a line is shown: log lines in grey, the SUMMARY line in its result's colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Style {
    #[default]
    Log = 0,
    Pass = 1,
    NoVmx = 2,
    Fail = 3,
}

pub const STYLES: [Style; 4] = [Style::Log, Style::Pass, Style::NoVmx, Style::Fail];

/// Colours of the VGA 16-colour palette (IBM VGA Technical Reference: light grey
/// 7, light green 10, light red 12, yellow 14), so both kinds of screen agree.
pub const GREY: Rgb = Rgb(0xaa, 0xaa, 0xaa);
pub const LIGHT_GREEN: Rgb = Rgb(0x55, 0xff, 0x55);
pub const YELLOW: Rgb = Rgb(0xff, 0xff, 0x55);
pub const LIGHT_RED: Rgb = Rgb(0xff, 0x55, 0x55);
pub const BLACK: Rgb = Rgb(0, 0, 0);

impl Style {
    /// The SUMMARY line's style for a result.
    pub fn for_result(result: crate::summary::RunResult) -> Style {
        match result {
            crate::summary::RunResult::Pass => Style::Pass,
            crate::summary::RunResult::NoVmx => Style::NoVmx,
            crate::summary::RunResult::Fail => Style::Fail,
        }
    }

    /// (foreground, background) on a pixel screen. The SUMMARY line is black on
    /// a band of its colour across the screen, so it stands out from the log.
    pub fn colours(self) -> (Rgb, Rgb) {
        match self {
            Style::Log => (GREY, BLACK),
            Style::Pass => (BLACK, LIGHT_GREEN),
            Style::NoVmx => (BLACK, YELLOW),
            Style::Fail => (BLACK, LIGHT_RED),
        }
    }

    /// The EGA attribute byte: background bits 4-6 can only be the eight dark
    /// colours (bit 7 blinks), so in text mode the SUMMARY is its bright colour
    /// on black: light green 0x0a, yellow 0x0e, light red 0x0c; the log is light grey 0x07.
    pub fn ega_attribute(self) -> u8 {
        match self {
            Style::Log => 0x07,
            Style::Pass => 0x0a,
            Style::NoVmx => 0x0e,
            Style::Fail => 0x0c,
        }
    }

    /// Whether the rest of the row takes the line's background (the band).
    fn fills_row(self) -> bool {
        self != Style::Log
    }
}

/// How many cells of `row` must be drawn to show it over `shown`: up to the last
/// cell that is not blank in either (the rest is blank on both).
pub fn extent(row: &[Cell], shown: &[Cell]) -> usize {
    let used = |cells: &[Cell]| cells.iter().rposition(|c| *c != Cell::BLANK).map_or(0, |i| i + 1);
    used(row).max(used(shown)).min(row.len())
}

/// One character cell: a printable ASCII byte and its style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    pub ch: u8,
    pub style: Style,
}

impl Cell {
    pub const BLANK: Cell = Cell { ch: b' ', style: Style::Log };
}

impl Default for Cell {
    fn default() -> Self {
        Cell::BLANK
    }
}

/// The character grid: what the screen should show (`cells`) and what it shows
/// (`shown`), so only rows that differ are drawn. Lines wrap at the right edge;
/// when the bottom is reached the grid scrolls up by `step` rows at once, so a
/// full redraw happens once every `step` lines instead of on every line.
/// Storage is fixed (`N` cells); the grid uses `cols * rows <= N` of them.
pub struct Grid<const N: usize> {
    cells: [Cell; N],
    shown: [Cell; N],
    cols: usize,
    rows: usize,
    step: usize,
    row: usize,
    col: usize,
    style: Style,
    scrolls: u64,
}

impl<const N: usize> Default for Grid<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Grid<N> {
    /// An empty grid of no size: nothing is kept until `resize`, which
    /// blanks the cells. All zeros, so a `static` grid goes into .bss.
    pub const fn new() -> Self {
        const UNUSED: Cell = Cell { ch: 0, style: Style::Log };
        Grid {
            cells: [UNUSED; N],
            shown: [UNUSED; N],
            cols: 0,
            rows: 0,
            step: 0,
            row: 0,
            col: 0,
            style: Style::Log,
            scrolls: 0,
        }
    }

    /// Set the size (cut to the storage) and the scroll step (1..=rows), and clear.
    pub fn resize(&mut self, cols: usize, rows: usize, step: usize) {
        self.cols = cols.min(N);
        self.rows = N.checked_div(self.cols).map_or(0, |fit| rows.min(fit));
        self.step = step.clamp(1, self.rows.max(1));
        // fill, not a new array: N cells would be built on the (small) kernel stack.
        self.cells.fill(Cell::BLANK);
        self.shown.fill(Cell::BLANK);
        self.row = 0;
        self.col = 0;
        self.scrolls = 0;
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// How many times the grid scrolled.
    pub fn scrolls(&self) -> u64 {
        self.scrolls
    }

    /// The cells of row `r` as they should be shown.
    pub fn row(&self, r: usize) -> &[Cell] {
        &self.cells[r * self.cols..(r + 1) * self.cols]
    }

    /// Start a line in `style` (on a fresh row).
    pub fn begin_line(&mut self, style: Style) {
        self.style = style;
        self.col = 0;
        self.make_room();
    }

    /// Add text to the current line: printable ASCII as it is, a tab as a space,
    /// anything else as '?'; wraps at the right edge.
    pub fn put_str(&mut self, s: &str) {
        for &b in s.as_bytes() {
            // A UTF-8 continuation byte belongs to a character already shown as '?'.
            if b & 0xc0 == 0x80 {
                continue;
            }
            let ch = match b {
                b' '..=b'~' => b,
                b'\t' => b' ',
                _ => b'?',
            };
            self.put(ch);
        }
    }

    fn put(&mut self, ch: u8) {
        if self.rows == 0 {
            return;
        }
        if self.col == self.cols {
            self.fill_rest();
            self.row += 1;
            self.col = 0;
            self.make_room();
        }
        self.cells[self.row * self.cols + self.col] = Cell { ch, style: self.style };
        self.col += 1;
    }

    /// End the current line: the rest of its row takes the line's background.
    pub fn end_line(&mut self) {
        if self.rows == 0 {
            return;
        }
        self.fill_rest();
        self.row += 1;
        self.col = 0;
    }

    fn fill_rest(&mut self) {
        let fill = Cell { ch: b' ', style: if self.style.fills_row() { self.style } else { Style::Log } };
        let start = self.row * self.cols;
        self.cells[start + self.col..start + self.cols].fill(fill);
    }

    /// Make sure the current row exists and is blank, scrolling by `step` rows at the bottom.
    fn make_room(&mut self) {
        if self.row >= self.rows {
            let step = self.step.min(self.rows);
            let used = self.rows * self.cols;
            self.cells.copy_within(step * self.cols..used, 0);
            self.cells[used - step * self.cols..used].fill(Cell::BLANK);
            self.row = self.rows - step;
            self.scrolls += 1;
        }
        let start = self.row * self.cols;
        self.cells[start..start + self.cols].fill(Cell::BLANK);
    }

    /// Forget what the screen shows (it was cleared), so the next `sync` draws every non-blank row.
    pub fn screen_cleared(&mut self) {
        self.shown.fill(Cell::BLANK);
    }

    /// Call `draw(row, cells, shown)` for every row whose cells differ from what
    /// the screen shows (`shown`), then take them as shown. Returns the number of rows drawn.
    pub fn sync(&mut self, mut draw: impl FnMut(usize, &[Cell], &[Cell])) -> usize {
        let mut drawn = 0;
        for r in 0..self.rows {
            let range = r * self.cols..(r + 1) * self.cols;
            if self.cells[range.clone()] != self.shown[range.clone()] {
                draw(r, &self.cells[range.clone()], &self.shown[range.clone()]);
                self.shown[range.clone()].copy_from_slice(&self.cells[range]);
                drawn += 1;
            }
        }
        drawn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;

    const RGB32: FramebufferKind = FramebufferKind::Rgb {
        red: Field { position: 16, size: 8 },
        green: Field { position: 8, size: 8 },
        blue: Field { position: 0, size: 8 },
    };
    const RGB565: FramebufferKind = FramebufferKind::Rgb {
        red: Field { position: 11, size: 5 },
        green: Field { position: 5, size: 6 },
        blue: Field { position: 0, size: 5 },
    };
    const RGB555: FramebufferKind = FramebufferKind::Rgb {
        red: Field { position: 10, size: 5 },
        green: Field { position: 5, size: 5 },
        blue: Field { position: 0, size: 5 },
    };
    const LIMIT: u64 = 512 << 30;

    fn fb(width: u32, height: u32, bpp: u8, pitch: u32, kind: FramebufferKind) -> Framebuffer {
        Framebuffer { address: 0xfd00_0000, pitch, width, height, bpp, kind }
    }

    fn pixels(f: Framebuffer) -> PixelSurface {
        match f.validate(LIMIT) {
            Ok(Surface::Pixels(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn qemu_and_ovmf_framebuffers_are_accepted() {
        let p = pixels(fb(1024, 768, 32, 4096, RGB32));
        assert_eq!((p.width, p.height, p.bytes_per_pixel, p.pitch), (1024, 768, 4, 4096));
        assert_eq!(p.len, 4096 * 767 + 4096);
        let p = pixels(fb(1280, 800, 32, 5120, RGB32));
        assert_eq!(p.len, 5120 * 800);
    }

    #[test]
    fn every_drawn_depth_has_its_pixel_size() {
        assert_eq!(pixels(fb(800, 600, 15, 1600, RGB555)).bytes_per_pixel, 2);
        assert_eq!(pixels(fb(800, 600, 16, 1600, RGB565)).bytes_per_pixel, 2);
        assert_eq!(pixels(fb(800, 600, 24, 2400, RGB32)).bytes_per_pixel, 3);
        assert_eq!(pixels(fb(800, 600, 32, 3200, RGB32)).bytes_per_pixel, 4);
        assert_eq!(fb(800, 600, 8, 800, RGB565).validate(LIMIT), Err(FbError::Depth(8)));
        assert_eq!(fb(800, 600, 0, 800, RGB565).validate(LIMIT), Err(FbError::Depth(0)));
    }

    #[test]
    fn ega_text_is_a_text_surface() {
        let t = fb(80, 25, 16, 160, FramebufferKind::EgaText);
        let t = Framebuffer { address: 0xb8000, ..t };
        assert_eq!(
            t.validate(LIMIT),
            Ok(Surface::Text(TextSurface { address: 0xb8000, pitch: 160, cols: 80, rows: 25, len: 4000 }))
        );
        assert_eq!(Framebuffer { bpp: 8, ..t }.validate(LIMIT), Err(FbError::TextDepth(8)));
        assert_eq!(Framebuffer { pitch: 158, ..t }.validate(LIMIT), Err(FbError::Pitch { pitch: 158, row_bytes: 160 }));
    }

    #[test]
    fn bad_tags_are_refused_with_a_reason() {
        let good = fb(1024, 768, 32, 4096, RGB32);
        assert_eq!(Framebuffer { address: 0, ..good }.validate(LIMIT), Err(FbError::NoAddress));
        assert_eq!(Framebuffer { width: 0, ..good }.validate(LIMIT), Err(FbError::Empty));
        assert_eq!(Framebuffer { height: 0, ..good }.validate(LIMIT), Err(FbError::Empty));
        assert_eq!(
            Framebuffer { pitch: 4095, ..good }.validate(LIMIT),
            Err(FbError::Pitch { pitch: 4095, row_bytes: 4096 })
        );
        assert_eq!(
            Framebuffer { kind: FramebufferKind::Indexed { colours: 256 }, ..good }.validate(LIMIT),
            Err(FbError::Indexed)
        );
        assert_eq!(Framebuffer { kind: FramebufferKind::Unknown(7), ..good }.validate(LIMIT), Err(FbError::Unknown(7)));
        // Past the mappable limit, and past 2^64.
        let high = Framebuffer { address: LIMIT - 4096 * 100, ..good };
        assert!(matches!(high.validate(LIMIT), Err(FbError::TooHigh { .. })));
        let wrap = Framebuffer { address: u64::MAX - 10, ..good };
        assert!(matches!(wrap.validate(u64::MAX), Err(FbError::TooHigh { .. })));
        let huge = Framebuffer { width: u32::MAX, pitch: u32::MAX, height: u32::MAX, ..good };
        assert!(huge.validate(LIMIT).is_err());
        // Ends exactly at the limit: accepted.
        let edge = Framebuffer { address: LIMIT - 4096 * 768, ..good };
        assert!(edge.validate(LIMIT).is_ok());
        assert!(alloc::format!("{}", FbError::Depth(8)).contains("8 bits per pixel"));
    }

    #[test]
    fn colour_fields_must_fit_and_not_overlap() {
        let with =
            |red: Field, green: Field, blue: Field| fb(640, 480, 16, 1280, FramebufferKind::Rgb { red, green, blue });
        let f = |position, size| Field { position, size };
        assert!(with(f(11, 5), f(5, 6), f(0, 5)).validate(LIMIT).is_ok());
        assert_eq!(
            with(f(12, 5), f(5, 6), f(0, 5)).validate(LIMIT),
            Err(FbError::Field { name: "red", field: f(12, 5) }),
            "17 bits in a 16-bit pixel"
        );
        assert_eq!(
            with(f(11, 5), f(4, 6), f(0, 5)).validate(LIMIT),
            Err(FbError::Field { name: "blue", field: f(0, 5) })
        );
        assert_eq!(
            with(f(11, 5), f(5, 0), f(0, 5)).validate(LIMIT),
            Err(FbError::Field { name: "green", field: f(5, 0) })
        );
        // 10-bit channels in 32 bits (GOP may report them).
        let deep = fb(640, 480, 32, 2560, FramebufferKind::Rgb { red: f(20, 10), green: f(10, 10), blue: f(0, 10) });
        assert_eq!(pixels(deep).pack(Rgb(255, 0, 0)), 0x3ff << 20);
    }

    #[test]
    fn offsets_and_spans_stay_inside_the_framebuffer() {
        // A pitch wider than the row (padding), 24 bpp: 3 bytes a pixel.
        let p = pixels(fb(100, 50, 24, 320, RGB32));
        assert_eq!(p.offset(0, 0), Some(0));
        assert_eq!(p.offset(99, 49), Some(49 * 320 + 297));
        assert_eq!(p.offset(100, 0), None);
        assert_eq!(p.offset(0, 50), None);
        assert_eq!(p.span(90, 10, 20), Some((10 * 320 + 270, 30)), "cut at the right edge");
        assert_eq!(p.span(0, 49, 1000), Some((49 * 320, 300)));
        // Every span of every row ends inside len.
        for y in 0..p.height {
            for x in (0..p.width).step_by(7) {
                let (off, bytes) = p.span(x, y, 64).unwrap();
                assert!(off + bytes <= p.len);
            }
        }
    }

    #[test]
    fn the_layout_never_leaves_the_surface() {
        for (w, h, bpp, pitch) in [(1024, 768, 32, 4096), (640, 480, 16, 1280), (800, 600, 24, 2400), (7, 16, 32, 28)] {
            let kind = if bpp == 16 { RGB565 } else { RGB32 };
            let p = pixels(fb(w, h, bpp, pitch, kind));
            for (cw, ch) in [(7, 16), (9, 20), (11, 24), (14, 32)] {
                let Some(l) = Layout::new(&p, cw, ch, 256, 128, 16384) else {
                    assert!(w < cw as u32 || h < ch as u32);
                    continue;
                };
                let (x, y) = l.origin(l.cols - 1, l.rows - 1);
                assert!(x + cw <= p.width && y + ch <= p.height, "{w}x{h} cell {cw}x{ch}");
                assert!(l.cols * cw * p.bytes_per_pixel <= 16384);
            }
        }
        let p = pixels(fb(4096, 2160, 32, 16384, RGB32));
        let l = Layout::new(&p, 7, 16, 256, 128, 16384).unwrap();
        assert_eq!((l.cols, l.rows), (256, 128), "capped by the grid's storage");
        let l = Layout::new(&p, 14, 32, 1000, 1000, 8192).unwrap();
        assert_eq!(l.cols, 8192 / (14 * 4), "capped by the line buffer");
        let tiny = pixels(fb(5, 5, 32, 20, RGB32));
        assert_eq!(Layout::new(&tiny, 7, 16, 256, 128, 16384), None);
    }

    /// Whatever size, depth and pitch the tag says: every byte the console
    /// writes (as the kernel's painter computes it: one span per pixel row of
    /// each cell row, and each text cell's 2 bytes) lies inside the framebuffer.
    #[test]
    fn no_write_leaves_the_framebuffer_whatever_the_tag_says() {
        let cells = [(7, 16), (9, 20), (11, 24), (14, 32)];
        let mut checked = 0;
        for width in [1u32, 6, 7, 8, 100, 639, 640, 800, 1023, 1280, 1920, 4096, 5000] {
            for height in [1u32, 15, 16, 17, 200, 480, 767, 1080, 3000] {
                for (bpp, kind) in [(15, RGB555), (16, RGB565), (24, RGB32), (32, RGB32)] {
                    let row = width as usize * (bpp as usize).div_ceil(8);
                    for pitch in [row, row + 1, row + 64, row * 2] {
                        let f = fb(width, height, bpp, pitch as u32, kind);
                        let Ok(Surface::Pixels(p)) = f.validate(LIMIT) else { panic!("{f:?}") };
                        for (cw, ch) in cells {
                            let Some(l) = Layout::new(&p, cw, ch, 256, 128, 16384) else { continue };
                            for r in 0..l.rows {
                                let (x0, y0) = l.origin(0, r);
                                for py in 0..ch {
                                    let (off, bytes) = p.span(x0, y0 + py, l.cols * cw).expect("row on screen");
                                    assert!(off + bytes <= p.len && bytes <= 16384, "{f:?} cell {cw}x{ch} row {r}");
                                    checked += 1;
                                }
                            }
                        }
                        // The clear: every pixel row, edge to edge.
                        for y in 0..p.height {
                            let (off, bytes) = p.span(0, y, p.width).unwrap();
                            assert!(off + bytes <= p.len);
                        }
                        // A pitch shorter than the row is refused, not drawn.
                        let short = Framebuffer { pitch: row as u32 - 1, ..f };
                        assert!(matches!(short.validate(LIMIT), Err(FbError::Pitch { .. })));
                    }
                }
            }
        }
        assert!(checked > 100_000);
        for (cols, rows, pitch) in [(80u32, 25u32, 160u32), (80, 50, 160), (132, 43, 264), (40, 25, 100), (1, 1, 2)] {
            let f = Framebuffer {
                address: 0xb8000,
                pitch,
                width: cols,
                height: rows,
                bpp: 16,
                kind: FramebufferKind::EgaText,
            };
            let Ok(Surface::Text(t)) = f.validate(LIMIT) else { panic!("{f:?}") };
            for r in 0..t.rows.min(128) {
                for c in 0..t.cols.min(256) {
                    assert!(t.offset(c, r).unwrap() + 2 <= t.len);
                }
            }
            assert_eq!(t.offset(t.cols, 0), None);
            assert_eq!(t.offset(0, t.rows), None);
        }
    }

    #[test]
    fn the_cell_grows_with_the_screen() {
        let cells = [(7, 16), (9, 20), (11, 24), (14, 32)];
        assert_eq!(choose_cell(&cells, 640, 480), 0, "nothing fits: the smallest");
        assert_eq!(choose_cell(&cells, 800, 600), 0);
        assert_eq!(choose_cell(&cells, 1024, 768), 1);
        assert_eq!(choose_cell(&cells, 1280, 800), 2);
        assert_eq!(choose_cell(&cells, 1920, 1080), 3);
        assert_eq!(choose_cell(&cells, 3840, 2160), 3);
    }

    #[test]
    fn colours_pack_into_each_format() {
        assert_eq!(pixels(fb(8, 8, 32, 32, RGB32)).pack(YELLOW), 0x00ff_ff55);
        assert_eq!(pixels(fb(8, 8, 16, 16, RGB565)).pack(Rgb(255, 255, 255)), 0xffff);
        assert_eq!(pixels(fb(8, 8, 16, 16, RGB565)).pack(LIGHT_RED), (31 << 11) | (21 << 5) | 10);
        assert_eq!(pixels(fb(8, 8, 15, 16, RGB555)).pack(Rgb(255, 0, 255)), 0x7c1f);
        // BGR order (some GOPs): red in the low byte.
        let bgr = FramebufferKind::Rgb {
            red: Field { position: 0, size: 8 },
            green: Field { position: 8, size: 8 },
            blue: Field { position: 16, size: 8 },
        };
        assert_eq!(pixels(fb(8, 8, 32, 32, bgr)).pack(LIGHT_GREEN), 0x0055_ff55);
        assert_eq!(pixels(fb(8, 8, 24, 24, bgr)).pack(Rgb(1, 2, 3)), 0x0003_0201);
        // No value has bits beyond the pixel's depth (the bytes past it are not written).
        for (bpp, kind) in [(15, RGB555), (16, RGB565), (24, RGB32), (32, bgr)] {
            let p = pixels(fb(8, 8, bpp, 32, kind));
            for v in [0u8, 1, 127, 128, 254, 255] {
                let px = p.pack(Rgb(v, v, v)) as u64;
                assert_eq!(px >> bpp, 0, "{bpp} bpp, channel {v}");
            }
        }
    }

    #[test]
    fn result_styles() {
        use crate::summary::RunResult;
        assert_eq!(Style::for_result(RunResult::Pass).colours().1, LIGHT_GREEN);
        assert_eq!(Style::for_result(RunResult::NoVmx).colours().1, YELLOW);
        assert_eq!(Style::for_result(RunResult::Fail).colours().1, LIGHT_RED);
        assert_eq!(STYLES.map(Style::ega_attribute), [0x07, 0x0a, 0x0e, 0x0c]);
    }

    fn text<const N: usize>(g: &Grid<N>) -> Vec<String> {
        (0..g.rows()).map(|r| g.row(r).iter().map(|c| c.ch as char).collect::<String>().trim_end().into()).collect()
    }

    fn line<const N: usize>(g: &mut Grid<N>, style: Style, s: &str) {
        g.begin_line(style);
        g.put_str(s);
        g.end_line();
    }

    #[test]
    fn lines_wrap_and_the_grid_scrolls_by_its_step() {
        let mut g = Grid::<64>::new();
        g.resize(8, 4, 1);
        line(&mut g, Style::Log, "one");
        line(&mut g, Style::Log, "two is long");
        assert_eq!(text(&g), ["one", "two is l", "ong", ""]);
        line(&mut g, Style::Log, "three");
        assert_eq!(text(&g), ["one", "two is l", "ong", "three"]);
        assert_eq!(g.scrolls(), 0);
        line(&mut g, Style::Log, "four");
        assert_eq!(text(&g), ["two is l", "ong", "three", "four"]);
        assert_eq!(g.scrolls(), 1);
        // A line longer than the screen keeps its end.
        line(&mut g, Style::Log, "abcdefghijklmnopqrstuvwxyz0123456789");
        assert_eq!(text(&g), ["ijklmnop", "qrstuvwx", "yz012345", "6789"]);

        // Step 2: the grid jumps two rows at a time, leaving a blank row to fill.
        let mut g = Grid::<64>::new();
        g.resize(8, 4, 2);
        for s in ["a", "b", "c", "d", "e"] {
            line(&mut g, Style::Log, s);
        }
        assert_eq!(text(&g), ["c", "d", "e", ""]);
        assert_eq!(g.scrolls(), 1);
        line(&mut g, Style::Log, "f");
        assert_eq!(text(&g), ["c", "d", "e", "f"]);
        assert_eq!(g.scrolls(), 1);
    }

    #[test]
    fn odd_bytes_are_shown_safely() {
        let mut g = Grid::<32>::new();
        g.resize(16, 2, 1);
        line(&mut g, Style::Log, "a\tb\u{e9}c\x1b");
        assert_eq!(text(&g)[0], "a b?c?");
    }

    #[test]
    fn the_summary_band_fills_its_rows() {
        let mut g = Grid::<64>::new();
        g.resize(8, 4, 1);
        line(&mut g, Style::Log, "log");
        line(&mut g, Style::NoVmx, "SUMMARY x");
        assert!(g.row(0)[3..].iter().all(|c| *c == Cell::BLANK));
        assert!(g.row(1).iter().chain(g.row(2)).all(|c| c.style == Style::NoVmx), "both rows of the wrapped line");
        assert!(g.row(3).iter().all(|c| *c == Cell::BLANK));
    }

    #[test]
    fn sync_draws_only_rows_that_changed() {
        let mut g = Grid::<64>::new();
        g.resize(8, 4, 1);
        let mut drawn = Vec::new();
        assert_eq!(g.sync(|r, _, _| drawn.push(r)), 0, "a blank grid on a cleared screen");
        line(&mut g, Style::Log, "a");
        line(&mut g, Style::Log, "b");
        g.sync(|r, _, _| drawn.push(r));
        assert_eq!(drawn, [0, 1]);
        drawn.clear();
        line(&mut g, Style::Log, "c");
        g.sync(|r, cells, shown| {
            assert_eq!(cells[0].ch, b'c');
            assert_eq!(extent(cells, shown), 1);
            drawn.push(r)
        });
        assert_eq!(drawn, [2]);
        // Scrolling changes every row with text.
        line(&mut g, Style::Log, "d");
        line(&mut g, Style::Log, "e");
        drawn.clear();
        g.sync(|r, _, _| drawn.push(r));
        assert_eq!(drawn, [0, 1, 2, 3]);
        // After the screen is cleared, every row with text is drawn again.
        g.screen_cleared();
        drawn.clear();
        g.sync(|r, _, _| drawn.push(r));
        assert_eq!(drawn, [0, 1, 2, 3]);
    }

    #[test]
    fn the_extent_covers_old_and_new_text() {
        let mut g = Grid::<64>::new();
        g.resize(8, 2, 1);
        line(&mut g, Style::Log, "long one");
        line(&mut g, Style::Log, "x");
        g.sync(|_, _, _| {});
        line(&mut g, Style::Log, "ab");
        let mut seen = Vec::new();
        g.sync(|r, cells, shown| seen.push((r, extent(cells, shown))));
        assert_eq!(seen, [(0, 8), (1, 2)], "scrolled: row 0 clears 'long one', row 1 draws 'ab'");
        line(&mut g, Style::Fail, "S");
        seen.clear();
        g.sync(|r, cells, shown| seen.push((r, extent(cells, shown))));
        assert_eq!(seen, [(0, 2), (1, 8)], "a band row is drawn across");
        assert_eq!(extent(&[Cell::BLANK; 4], &[Cell::BLANK; 4]), 0);
    }

    #[test]
    fn an_unsized_grid_keeps_nothing() {
        let mut g = Grid::<16>::new();
        line(&mut g, Style::Log, "lost");
        assert_eq!(g.sync(|_, _, _| panic!("nothing to draw")), 0);
        g.resize(100, 100, 1);
        assert_eq!((g.cols(), g.rows()), (16, 1), "cut to the storage");
    }
}
