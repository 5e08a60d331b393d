//! The screen console: every log line and the SUMMARY on the screen GRUB left,
//! for machines without a serial port.
//!
//! It is a sink of whole, finished lines (`line`): the log ring's drain calls
//! it beside COM1 (`console::sink`, registered after `console::init`). Lines
//! go into a grid of character cells (`hvlogic::screen::Grid`); only rows that
//! changed are drawn, never read back from the screen, and the grid scrolls
//! several rows at a time on a pixel screen, so a full redraw is rare.
//!
//! Until the command line is read (`start`), lines are only kept in the grid:
//! with `console=serial` they are dropped and the screen is never touched;
//! otherwise they are drawn at once. `console=screen` turns COM1 off from there on.
//!
//! Backends: a direct-colour framebuffer (`framebuffer.rs`, GOP under UEFI or
//! VBE under BIOS) drawn with the `noto-sans-mono-bitmap` font, or the EGA text
//! buffer (`text.rs`) when GRUB left text mode. Without a framebuffer tag the
//! console stays silent.

mod framebuffer;
mod text;

use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use hvlogic::cmdline::ConsoleMode;
use hvlogic::screen::{Framebuffer, Grid, Style, Surface};
use hvlogic::summary::RunResult;

/// The grid's storage: enough for 256 x 128 cells (a 3840-pixel-wide screen
/// with the 14 x 32 font has 274 columns; the rest stays black).
const MAX_COLS: usize = 256;
const MAX_ROWS: usize = 128;
const MAX_CELLS: usize = MAX_COLS * MAX_ROWS;

/// `MODE`: lines are kept but not drawn until the command line says what to do.
const PENDING: u8 = 0;
/// Lines are drawn.
const ON: u8 = 1;
/// No screen (no usable framebuffer, or `console=serial`): lines are dropped.
const OFF: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(OFF);
/// COM1 carries the log (false with `console=screen`).
static SERIAL: AtomicBool = AtomicBool::new(true);

// One value, in a static: built before the heap exists, so not boxed.
#[allow(clippy::large_enum_variant)]
/// `repr(u8)` puts `None` at tag 0, so the console's static state is all zeros (.bss).
#[repr(u8)]
enum Backend {
    None,
    Pixels(framebuffer::Painter),
    Text(text::TextScreen),
}

impl Backend {
    fn clear(&mut self) {
        match self {
            Backend::None => {}
            Backend::Pixels(p) => p.clear(),
            Backend::Text(t) => t.clear(),
        }
    }

    fn draw(&mut self, grid: &mut Grid<MAX_CELLS>, line: &mut framebuffer::Line) {
        match self {
            Backend::None => 0,
            Backend::Pixels(p) => grid.sync(|row, cells, shown| p.draw_row(line, row, cells, shown)),
            Backend::Text(t) => grid.sync(|row, cells, _| t.draw_row(row, cells)),
        };
    }
}

/// What drawing cost, in TSC ticks.
#[derive(Default)]
struct Stats {
    lines: u64,
    ticks: u64,
    max_ticks: u64,
    first_screen_ticks: u64,
}

struct State {
    backend: Backend,
    grid: Grid<MAX_CELLS>,
    line: framebuffer::Line,
    /// What `init` found, for the log line of `start`.
    about: About,
    stats: Stats,
}

/// `repr(u8)`: `Nothing` at tag 0, as for `Backend`.
#[derive(Clone, Copy)]
#[repr(u8)]
enum About {
    Nothing,
    Rejected(hvlogic::screen::FbError),
    TooSmall,
    Pixels { fb: Framebuffer, cols: usize, rows: usize, cell: (usize, usize) },
    Text { fb: Framebuffer, cols: usize, rows: usize },
}

static STATE: Lock<State> = Lock::new(State {
    backend: Backend::None,
    grid: Grid::new(),
    line: [0; framebuffer::LINE_BYTES],
    about: About::Nothing,
    stats: Stats { lines: 0, ticks: 0, max_ticks: 0, first_screen_ticks: 0 },
});

/// Take the framebuffer GRUB described (bootinfo), before anything is drawn.
/// From here on lines are kept for the screen until `start`.
pub fn init(fb: Option<Framebuffer>) {
    STATE.with(|s| {
        let Some(fb) = fb else { return };
        s.about = match fb.validate(crate::paging::LIMIT) {
            Err(e) => About::Rejected(e),
            Ok(Surface::Pixels(surface)) => match framebuffer::Painter::new(surface, MAX_COLS, MAX_ROWS) {
                Some(p) => {
                    let (cols, rows, cell) = (p.layout.cols, p.layout.rows, (p.layout.cell_w, p.layout.cell_h));
                    // A full redraw of a pixel screen is costly: scroll a quarter of it at a time.
                    s.grid.resize(cols, rows, rows / 4);
                    s.backend = Backend::Pixels(p);
                    About::Pixels { fb, cols, rows, cell }
                }
                None => About::TooSmall,
            },
            Ok(Surface::Text(surface)) => {
                let t = text::TextScreen::new(surface, MAX_COLS, MAX_ROWS);
                // Redrawing 80 x 25 cells is cheap: scroll line by line.
                s.grid.resize(t.cols, t.rows, 1);
                let (cols, rows) = (t.cols, t.rows);
                s.backend = Backend::Text(t);
                About::Text { fb, cols, rows }
            }
        };
        if !matches!(s.backend, Backend::None) {
            MODE.store(PENDING, Ordering::Release);
        }
    });
}

/// The command line is read: draw what was kept and go on drawing, or drop it
/// and leave the screen alone (`console=serial`). Needs the heap (a framebuffer
/// above 4 GiB gets page tables).
/// Without a usable screen COM1 stays on whatever `console=` says.
pub fn start(mode: ConsoleMode) {
    let about = STATE.with(|s| s.about).unwrap_or(About::Nothing);
    if MODE.load(Ordering::Acquire) != PENDING {
        match about {
            About::Rejected(e) => log::warn!("console: framebuffer not used: {e}; COM1 only"),
            About::TooSmall => log::warn!("console: framebuffer too small for one character; COM1 only"),
            _ => log::info!("console: no framebuffer from the boot loader; COM1 only"),
        }
        return;
    }
    if !mode.screen() {
        MODE.store(OFF, Ordering::Release);
        log::info!("console: screen left alone (console=serial)");
        return;
    }
    let mapped = match about {
        About::Pixels { fb, .. } => crate::paging::identity_map_device(fb.address, fb.pitch as u64 * fb.height as u64),
        // Text mode's buffer is in the first megabyte, mapped by boot.s and uncached by the MTRRs.
        About::Text { fb, .. } => crate::paging::identity_map(fb.address, fb.pitch as u64 * fb.height as u64),
        _ => Ok(()),
    };
    if let Err(e) = mapped {
        MODE.store(OFF, Ordering::Release);
        log::warn!("console: framebuffer not used: {e}; COM1 only");
        return;
    }
    show();
    SERIAL.store(mode.serial(), Ordering::Release);
    match about {
        About::Pixels { fb, cols, rows, cell } => log::info!(
            "console: framebuffer {}x{} {} bpp at {:#x} (pitch {}), {cols}x{rows} characters of {}x{} pixels",
            fb.width,
            fb.height,
            fb.bpp,
            fb.address,
            fb.pitch,
            cell.0,
            cell.1
        ),
        About::Text { fb, cols, rows } => {
            log::info!("console: EGA text {cols}x{rows} at {:#x}", fb.address)
        }
        _ => {}
    }
}

/// Clear the screen and draw every line kept so far; from now on lines are drawn.
fn show() {
    STATE.with(|s| {
        let t0 = crate::tsc::rdtsc();
        s.backend.clear();
        s.grid.screen_cleared();
        s.backend.draw(&mut s.grid, &mut s.line);
        s.stats.first_screen_ticks = crate::tsc::rdtsc() - t0;
        MODE.store(ON, Ordering::Release);
    });
}

/// Whether COM1 carries the log.
pub fn serial_enabled() -> bool {
    SERIAL.load(Ordering::Acquire)
}

/// Show one finished line in `style`. Returns at once when there is no screen;
/// a line logged while this CPU is already drawing (an exception in the
/// console itself) is left off the screen rather than waited for forever.
pub fn line(style: Style, args: fmt::Arguments) {
    let mode = MODE.load(Ordering::Acquire);
    if mode == OFF {
        return;
    }
    STATE.with(|s| {
        let t0 = crate::tsc::rdtsc();
        s.grid.begin_line(style);
        let _ = fmt::write(&mut GridWriter(&mut s.grid), args);
        s.grid.end_line();
        if mode == ON {
            s.backend.draw(&mut s.grid, &mut s.line);
            let ticks = crate::tsc::rdtsc() - t0;
            s.stats.lines += 1;
            s.stats.ticks += ticks;
            s.stats.max_ticks = s.stats.max_ticks.max(ticks);
        }
    });
}

struct GridWriter<'a>(&'a mut Grid<MAX_CELLS>);

impl fmt::Write for GridWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.put_str(s);
        Ok(())
    }
}

/// The log's sink (logger::add_sink): every finished line, in order, from
/// whichever CPU drains the log ring. Lines without a level are the run's own
/// (SUMMARY, GUEST-END); the SUMMARY is drawn in the result's colour, where it
/// stays when the machine halts, and a run that ends before the command line
/// was read shows its screen as `console=both` would.
pub fn sink(level: Option<log::Level>, text: &str) {
    let style = match level {
        None if text.starts_with("SUMMARY ") => {
            if MODE.load(Ordering::Acquire) == PENDING && below_4gib() {
                show();
            }
            Style::for_result(summary_result(text))
        }
        _ => Style::Log,
    };
    line(style, format_args!("{text}"));
}

/// The result a SUMMARY line states (`result=PASS|NO_VMX|FAIL`, followed by
/// ` virt=...`).
fn summary_result(text: &str) -> RunResult {
    match text.rsplit("result=").next().and_then(|r| r.split_whitespace().next()) {
        Some("PASS") => RunResult::Pass,
        Some("NO_VMX") => RunResult::NoVmx,
        _ => RunResult::Fail,
    }
}

/// Whether the pending framebuffer is mapped without the heap (boot.s maps 4 GiB).
fn below_4gib() -> bool {
    match STATE.with(|s| s.about) {
        Some(About::Pixels { fb, .. }) => {
            fb.address + fb.pitch as u64 * fb.height as u64 <= crate::boot::IDENTITY_MAPPED
        }
        Some(About::Text { .. }) => true,
        _ => false,
    }
}

/// Log what drawing cost (debug level): the figure `make bench` prints.
pub fn report() {
    if MODE.load(Ordering::Acquire) != ON {
        return;
    }
    let Some((lines, ticks, max, first, scrolls)) = STATE.with(|s| {
        let st = &s.stats;
        (st.lines, st.ticks, st.max_ticks, st.first_screen_ticks, s.grid.scrolls())
    }) else {
        return;
    };
    let us = crate::tsc::ticks_to_micros;
    let tenths = (ticks * 10).checked_div(lines).map_or(0, us);
    log::debug!(
        "console: {lines} lines drawn, {}.{} us per line, {} us at most, {scrolls} scrolls; first screen {} us",
        tenths / 10,
        tenths % 10,
        us(max),
        us(first)
    );
}

/// Give up the console if this CPU holds it (a CPU about to park for good).
pub fn release_if_held() {
    STATE.release_if_held();
}

/// A lock owned by one CPU at a time; asking for it again on the CPU that holds
/// it (an exception while drawing) gets nothing instead of a deadlock.
struct Lock<T> {
    /// 0 = free, else the owning CPU's index + 1.
    owner: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: `value` is only reached by the CPU that holds `owner`.
unsafe impl<T: Send> Sync for Lock<T> {}

impl<T> Lock<T> {
    const fn new(value: T) -> Lock<T> {
        Lock { owner: AtomicU32::new(0), value: UnsafeCell::new(value) }
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let me = crate::pcb::this_cpu_index() + 1;
        if self.owner.load(Ordering::Acquire) == me {
            return None;
        }
        while self.owner.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        // SAFETY: this CPU took `owner` above and is not nested (checked), so no
        // other reference to the value exists until it is released below.
        let r = f(unsafe { &mut *self.value.get() });
        self.owner.store(0, Ordering::Release);
        Some(r)
    }

    fn release_if_held(&self) {
        let me = crate::pcb::this_cpu_index() + 1;
        let _ = self.owner.compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed);
    }
}
