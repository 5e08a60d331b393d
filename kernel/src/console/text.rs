//! Drawing character cells in the EGA text buffer GRUB left (multiboot2
//! framebuffer type 2, normally 80 x 25 at 0xb8000): each cell is the character
//! byte followed by its attribute byte (IBM VGA Technical Reference, alphanumeric
//! modes). The fixed-range MTRRs make 0xa0000-0xbffff uncached on PCs, so the
//! write-back identity map is left as it is.

use hvlogic::screen::{Cell, TextSurface};
use x86_64::instructions::port::Port;

/// The CRT controller's index and data ports (colour text modes), and its
/// Cursor Start register, whose bit 5 turns the text cursor off (IBM VGA
/// Technical Reference, CRT Controller Registers, index 0Ah).
const CRTC_INDEX: u16 = 0x3d4;
const CRTC_DATA: u16 = 0x3d5;
const CURSOR_START: u8 = 0x0a;
const CURSOR_DISABLE: u8 = 1 << 5;

pub struct TextScreen {
    surface: TextSurface,
    pub cols: usize,
    pub rows: usize,
}

impl TextScreen {
    pub fn new(surface: TextSurface, max_cols: usize, max_rows: usize) -> TextScreen {
        TextScreen { surface, cols: surface.cols.min(max_cols), rows: surface.rows.min(max_rows) }
    }

    /// Blank (space, light grey on black) cells everywhere, and no blinking cursor
    /// where GRUB left it.
    pub fn clear(&mut self) {
        let (mut index, mut data) = (Port::<u8>::new(CRTC_INDEX), Port::<u8>::new(CRTC_DATA));
        // SAFETY: the VGA CRT controller of the colour text mode GRUB left; only the
        // cursor-disable bit of one register changes.
        unsafe {
            index.write(CURSOR_START);
            let v = data.read();
            data.write(v | CURSOR_DISABLE);
        }
        for row in 0..self.surface.rows {
            for col in 0..self.surface.cols {
                self.put(col, row, Cell::BLANK);
            }
        }
    }

    pub fn draw_row(&mut self, row: usize, cells: &[Cell]) {
        for (col, &cell) in cells.iter().enumerate().take(self.cols) {
            self.put(col, row, cell);
        }
    }

    fn put(&mut self, col: usize, row: usize, cell: Cell) {
        if let Some(offset) = self.surface.offset(col, row) {
            let p = (self.surface.address as usize + offset) as *mut u8;
            // SAFETY: TextSurface::offset keeps both bytes of the cell inside the text
            // buffer the boot loader described, which `console::start` identity-mapped.
            unsafe {
                core::ptr::write_volatile(p, cell.ch);
                core::ptr::write_volatile(p.add(1), cell.style.ega_attribute());
            }
        }
    }
}
