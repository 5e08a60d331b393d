//! Drawing character cells on a direct-colour framebuffer (GOP or VBE).
//!
//! Glyphs come from `noto-sans-mono-bitmap`: one byte of coverage (0-255) per
//! pixel, so each style has a ramp of 256 ready-made pixel values from its
//! background to its foreground. A row of cells is drawn one line of pixels at
//! a time: built in `line` (RAM), then copied to the framebuffer in one go; the
//! framebuffer is only written, never read (reads from uncached video memory
//! are slow). Every write goes through `PixelSurface::span`, which clips to the
//! framebuffer the boot loader described.

use hvlogic::screen::{choose_cell, extent, Cell, Layout, PixelSurface, Rgb, STYLES};
use noto_sans_mono_bitmap::{get_raster, get_raster_width, FontWeight, RasterHeight};

/// The font sizes built in (Cargo features of the crate), small to large:
/// two, for a payload that fits a flash chip (docs/coreboot.md#size): the
/// 20 and 32 pixel sizes took 59 KiB of the image (12 KiB as LZMA).
const SIZES: [RasterHeight; 2] = [RasterHeight::Size16, RasterHeight::Size24];
const WEIGHT: FontWeight = FontWeight::Regular;
/// Printable ASCII, the characters the grid holds.
const FIRST: u8 = b' ';
const GLYPHS: usize = (b'~' - b' ' + 1) as usize;
/// The line buffer: one line of pixels of the grid (4096 pixels of 4 bytes).
pub const LINE_BYTES: usize = 16 * 1024;

pub struct Painter {
    surface: PixelSurface,
    pub layout: Layout,
    /// Each printable character's coverage bytes, `cell_w * cell_h` of them.
    glyphs: [&'static [u8]; GLYPHS],
    /// Per style, the pixel value for each coverage byte.
    ramps: [[u32; 256]; STYLES.len()],
}

/// The line buffer: kept apart from the painter (which is built on the boot stack).
pub type Line = [u8; LINE_BYTES];

impl Painter {
    /// A painter for `surface` with the largest font that leaves about 100 x 25
    /// characters (`hvlogic::screen::choose_cell`). None if not one cell fits.
    pub fn new(surface: PixelSurface, max_cols: usize, max_rows: usize) -> Option<Painter> {
        let cells = SIZES.map(|size| (get_raster_width(WEIGHT, size), size.val()));
        let pick = choose_cell(&cells, surface.width, surface.height);
        let (size, (cell_w, cell_h)) = (SIZES[pick], cells[pick]);
        let layout = Layout::new(&surface, cell_w, cell_h, max_cols, max_rows, LINE_BYTES)?;
        let mut glyphs: [&'static [u8]; GLYPHS] = [&[]; GLYPHS];
        for (i, g) in glyphs.iter_mut().enumerate() {
            let ch = (FIRST + i as u8) as char;
            // The crate's basic-latin range covers all of printable ASCII.
            *g = get_raster(ch, WEIGHT, size).map_or(&[][..], |r| r.pixels());
        }
        let mut ramps = [[0u32; 256]; STYLES.len()];
        for style in STYLES {
            let (fg, bg) = style.colours();
            for (a, px) in ramps[style as usize].iter_mut().enumerate() {
                *px = surface.pack(blend(bg, fg, a as u32));
            }
        }
        Some(Painter { surface, layout, glyphs, ramps })
    }

    /// Black from edge to edge.
    pub fn clear(&mut self) {
        let base = self.surface.address as *mut u8;
        for y in 0..self.surface.height {
            if let Some((offset, bytes)) = self.surface.span(0, y, self.surface.width) {
                // SAFETY: `span` keeps [offset, offset + bytes) inside the framebuffer
                // the boot loader described, which `console::start` identity-mapped.
                unsafe { core::ptr::write_bytes(base.add(offset), 0, bytes) };
            }
        }
    }

    /// Draw one row of the grid through the line buffer, over what the screen
    /// shows there (`shown`): only up to the last cell with text in either.
    pub fn draw_row(&self, line: &mut Line, row: usize, cells: &[Cell], shown: &[Cell]) {
        let Layout { cell_w, cell_h, .. } = self.layout;
        let bpp = self.surface.bytes_per_pixel;
        let cells = &cells[..extent(cells, shown).min(self.layout.cols)];
        let (x0, y0) = self.layout.origin(0, row);
        let used = cells.len() * cell_w * bpp;
        for py in 0..cell_h {
            for (cell, out) in cells.iter().zip(line[..used].chunks_exact_mut(cell_w * bpp)) {
                let glyph = self.glyphs.get(cell.ch.wrapping_sub(FIRST) as usize).copied().unwrap_or(&[]);
                // A missing glyph (never, with the crate's full ASCII) shows as background.
                let coverage = glyph.get(py * cell_w..(py + 1) * cell_w).unwrap_or(&BLANK[..cell_w]);
                let ramp = &self.ramps[cell.style as usize];
                match bpp {
                    4 => put::<4>(out, coverage, ramp),
                    3 => put::<3>(out, coverage, ramp),
                    _ => put::<2>(out, coverage, ramp),
                }
            }
            if let Some((offset, bytes)) = self.surface.span(x0, y0 + py, cells.len() * cell_w) {
                let bytes = bytes.min(used);
                // SAFETY: `span` keeps [offset, offset + bytes) inside the mapped
                // framebuffer; the line buffer holds at least `bytes` bytes; the two never overlap.
                unsafe {
                    core::ptr::copy_nonoverlapping(line.as_ptr(), (self.surface.address as *mut u8).add(offset), bytes)
                };
            }
        }
    }
}

/// Coverage 0 for a whole glyph row (cells are at most 14 pixels wide).
const BLANK: [u8; 32] = [0; 32];

/// One glyph row into `out`: the ramp's value for each coverage byte, `B` bytes
/// a pixel, little-endian (multiboot2 3.6.12 field positions count from bit 0 of
/// the pixel as it sits in memory).
fn put<const B: usize>(out: &mut [u8], coverage: &[u8], ramp: &[u32; 256]) {
    for (px, &a) in out.chunks_exact_mut(B).zip(coverage) {
        let bytes = ramp[a as usize].to_le_bytes();
        px.copy_from_slice(&bytes[..B]);
    }
}

/// `a`/255 of the way from `bg` to `fg`, per channel.
fn blend(bg: Rgb, fg: Rgb, a: u32) -> Rgb {
    let mix = |b: u8, f: u8| ((b as u32 * (255 - a) + f as u32 * a + 127) / 255) as u8;
    Rgb(mix(bg.0, fg.0), mix(bg.1, fg.1), mix(bg.2, fg.2))
}
