//! The `log` backend: one `[cpuN] LEVEL message` line per record, put into an
//! in-memory ring (hvlogic::logring, like the Linux printk buffer) and drained
//! from there to the sinks: COM1 (serial.rs) and whatever `add_sink` added
//! (a screen console, say). Logging never waits for the UART or for another CPU.
//!
//! Who drains: any CPU that finds the drain token free after it logs a line
//! (`poll`), and the boot CPU whenever it waits for the others; each writes
//! only as much as the UART's FIFO takes without waiting, and gives the token
//! back. `flush` drains everything, waiting for the UART: before the SUMMARY,
//! before an OS gets the machine, and on every failure path. The token is
//! released by a CPU that parks; a holder that stops otherwise is overtaken by
//! `flush` after a while. Lines go out whole and in ring order; a line that
//! finds the ring full is counted, and the count is reported where it happened.

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};
use hvlogic::logring::{Consumer, LogRing, Losses, Next, MAX_LINE};
use log::{Level, LevelFilter, Log, Metadata, Record};

/// 2048 slots of 128 bytes: 256 KiB, room for the longest bursts of a run
/// (`vmxcap` on a slow UART) while COM1 catches up.
pub const RING_SLOTS: usize = 2048;
static RING: LogRing<RING_SLOTS> = LogRing::new();

/// The level byte of a line without prefix (the SUMMARY): always goes out.
const LEVEL_RAW: u8 = 0;

/// How long `flush` waits for a line whose writer reserved it but has not
/// finished it, before it skips it as abandoned.
const PENDING_PATIENCE_US: u64 = 50_000;
/// How long `flush` waits for the UART's FIFO to empty before giving up on COM1.
const UART_PATIENCE_US: u64 = 100_000;
/// How long `flush` waits for another CPU to give the drain token back.
const TOKEN_PATIENCE_US: u64 = 200_000;

struct SerialLogger;

static LOGGER: SerialLogger = SerialLogger;
static MAX: AtomicUsize = AtomicUsize::new(LevelFilter::Info as usize);

/// A sink for finished lines: called once per line, in order, with the level
/// (None for the SUMMARY) and the whole line without its line end, by
/// whichever CPU drains. It must not log, wait for other CPUs, or take locks.
pub type Sink = fn(Option<Level>, &str);
const MAX_SINKS: usize = 4;
static SINKS: [AtomicUsize; MAX_SINKS] = [const { AtomicUsize::new(0) }; MAX_SINKS];

/// The line being sent to COM1: filled from the ring, then written out in
/// FIFO-sized pieces. Only the drain token's holder touches it.
struct Stage {
    buf: UnsafeCell<[u8; MAX_LINE + 2]>,
    len: AtomicUsize,
    pos: AtomicUsize,
}

// SAFETY: `buf` is only accessed by the holder of RING's drain token.
unsafe impl Sync for Stage {}

static STAGE: Stage =
    Stage { buf: UnsafeCell::new([0; MAX_LINE + 2]), len: AtomicUsize::new(0), pos: AtomicUsize::new(0) };

impl Log for SerialLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() as usize <= MAX.load(Ordering::Relaxed)
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let cpu = crate::pcb::this_cpu_index();
            let mut line = LineBuf::new();
            let _ = write!(line, "[cpu{cpu}] {:<5} {}", record.level(), record.args());
            push(record.level() as u8, line.finish());
        }
    }

    fn flush(&self) {
        flush();
    }
}

/// A line being formatted: cut at MAX_LINE bytes (on a character boundary),
/// with ` [...]` at the end to show the cut.
struct LineBuf {
    buf: [u8; MAX_LINE],
    len: usize,
    cut: bool,
}

impl LineBuf {
    const MARK: &'static [u8] = b" [...]";

    fn new() -> LineBuf {
        LineBuf { buf: [0; MAX_LINE], len: 0, cut: false }
    }

    fn finish(&mut self) -> &[u8] {
        if self.cut {
            let mut end = self.len.min(MAX_LINE - Self::MARK.len());
            while end > 0 && (self.buf[end] & 0xc0) == 0x80 {
                end -= 1; // not inside a UTF-8 sequence
            }
            self.buf[end..end + Self::MARK.len()].copy_from_slice(Self::MARK);
            self.len = end + Self::MARK.len();
        }
        &self.buf[..self.len]
    }
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = MAX_LINE - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        self.cut |= take < s.len();
        Ok(())
    }
}

pub fn init() {
    // Only fails if a logger is already set, which nothing else does.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Trace);
}

pub fn set_level(level: hvlogic::cmdline::LogLevel) {
    use hvlogic::cmdline::LogLevel as L;
    let filter = match level {
        L::Error => Level::Error,
        L::Warn => Level::Warn,
        L::Info => Level::Info,
        L::Debug => Level::Debug,
        L::Trace => Level::Trace,
    };
    MAX.store(filter as usize, Ordering::Relaxed);
}

/// Add a sink for finished lines (the screen console). False when all slots
/// are taken.
pub fn add_sink(sink: Sink) -> bool {
    SINKS.iter().any(|s| s.compare_exchange(0, sink as usize, Ordering::AcqRel, Ordering::Relaxed).is_ok())
}

/// Lines lost to a full ring over the whole run.
pub fn lost_total() -> u64 {
    RING.lost_total()
}

/// A line without prefix (the SUMMARY), behind every line already logged.
pub fn raw_line(args: fmt::Arguments) {
    let mut line = LineBuf::new();
    let _ = line.write_fmt(args);
    push(LEVEL_RAW, line.finish());
}

/// Into the ring, then drain what COM1 takes now. A full ring is drained
/// first if this CPU can (without waiting); only then is the line lost.
fn push(level: u8, line: &[u8]) {
    if !RING.try_push(level, line) {
        poll();
        RING.push(level, line);
    }
    poll();
}

fn my_id() -> u32 {
    crate::pcb::this_cpu_index() + 1
}

/// Move what COM1 takes right now, if no other CPU is draining; never waits,
/// and does at most POLL_BUDGET FIFO loads (a fast UART, as emulators have,
/// must not keep one CPU writing everybody's backlog).
pub fn poll() {
    if let Some(c) = RING.try_consume(my_id()) {
        let _ = drain(&c, POLL_BUDGET);
    }
}

/// FIFO loads (up to 16 bytes each) one `poll` may do.
const POLL_BUDGET: u32 = 64;

/// `tsc::wait_until`, draining the log meanwhile: how the boot CPU waits.
pub fn wait_until(us: u64, mut done: impl FnMut() -> bool) -> bool {
    crate::tsc::wait_until(us, || {
        poll();
        done()
    })
}

/// Wait `us` microseconds, draining the log meanwhile.
pub fn delay_us(us: u64) {
    wait_until(us, || false);
}

/// Give the drain token back if this CPU holds it (a CPU about to park).
pub fn release_if_held() {
    RING.release_if_held(my_id());
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The ring is empty and the staged line is out.
    Idle,
    /// COM1's FIFO is not empty yet.
    UartBusy,
    /// The next line is reserved but not finished by its writer.
    Pending,
    /// This call's budget of FIFO loads is used up.
    Budget,
}

/// Drain until the ring is empty, the UART is busy or the next line is not
/// finished; also says whether anything moved.
fn drain(c: &Consumer<'_, RING_SLOTS>, mut budget: u32) -> (Stop, bool) {
    let mut moved = false;
    loop {
        let (len, pos) = (STAGE.len.load(Ordering::Acquire), STAGE.pos.load(Ordering::Acquire));
        if pos >= len {
            if let Err(stop) = stage_next(c) {
                return (stop, moved);
            }
            moved = true;
            continue;
        }
        if !crate::serial::present() {
            STAGE.pos.store(len, Ordering::Release);
            continue;
        }
        if budget == 0 {
            return (Stop::Budget, moved);
        }
        budget -= 1;
        // SAFETY: the drain token is held (`c`), so this CPU alone uses the UART and the stage.
        let sent = unsafe { crate::serial::try_send(&(&*STAGE.buf.get())[pos..len]) };
        if sent == 0 {
            return (Stop::UartBusy, moved);
        }
        moved = true;
        STAGE.pos.store(pos + sent, Ordering::Release);
    }
}

/// Stage the next line: a loss report that is due, else the line at the tail.
fn stage_next(c: &Consumer<'_, RING_SLOTS>) -> Result<(), Stop> {
    // SAFETY: the drain token is held (`c`): this CPU alone touches the stage.
    let buf = unsafe { &mut *STAGE.buf.get() };
    let losses = c.take_losses();
    let (level, len) = if losses != Losses::default() {
        (Level::Warn as u8, loss_report(losses, buf))
    } else {
        match c.next() {
            Next::Empty => return Err(Stop::Idle),
            Next::Pending => return Err(Stop::Pending),
            Next::Line { level, len, slots } => {
                let len = c.read(len, &mut buf[..MAX_LINE]);
                c.release(slots);
                (level, len)
            }
        }
    };
    let level = match level {
        LEVEL_RAW => None,
        l => Level::iter().find(|x| *x as u8 == l),
    };
    let text = core::str::from_utf8(&buf[..len]).unwrap_or("(log line not UTF-8)");
    for sink in &SINKS {
        let f = sink.load(Ordering::Acquire);
        if f != 0 {
            // SAFETY: only `add_sink` stores non-zero values, each a `Sink` fn pointer.
            let f = unsafe { core::mem::transmute::<usize, Sink>(f) };
            f(level, text);
        }
    }
    let to_com1 =
        crate::console::serial_enabled() && (!crate::serial::is_quiet() || matches!(level, None | Some(Level::Error)));
    if to_com1 {
        // SAFETY: the drain token is held (`c`).
        unsafe { crate::serial::reclaim_after_handoff() };
    }
    buf[len..len + 2].copy_from_slice(b"\r\n");
    STAGE.pos.store(0, Ordering::Release);
    STAGE.len.store(if to_com1 { len + 2 } else { 0 }, Ordering::Release);
    Ok(())
}

/// `[cpuN] WARN  log: ...` for lines the ring could not take or whose writer stopped.
fn loss_report(losses: Losses, buf: &mut [u8; MAX_LINE + 2]) -> usize {
    let mut line = LineBuf::new();
    let _ = write!(line, "[cpu{}] {:<5} log:", crate::pcb::this_cpu_index(), Level::Warn);
    if losses.full > 0 {
        let _ = write!(line, " {} lines lost (the ring of {RING_SLOTS} slots was full)", losses.full);
    }
    if losses.abandoned > 0 {
        let sep = if losses.full > 0 { ";" } else { "" };
        let _ = write!(line, "{sep} {} slots skipped (their writer stopped mid-line)", losses.abandoned);
    }
    let bytes = line.finish();
    buf[..bytes.len()].copy_from_slice(bytes);
    bytes.len()
}

/// Drain everything to COM1 now, waiting for the UART: before the SUMMARY,
/// before handing the machine to an OS, and on every failure path. Bounded: a
/// CPU that stopped while holding the drain token is overtaken, a line its
/// writer never finished is skipped (and counted), and a UART that stops
/// taking bytes is given up on.
pub fn flush() {
    let me = my_id();
    let begin = crate::tsc::rdtsc();
    let c = loop {
        let holder = RING.consumer_id();
        let stopped = crate::tsc::rdtsc() - begin > crate::tsc::timeout_ticks(TOKEN_PATIENCE_US);
        if let Some(c) = RING.consume_final(me, stopped.then_some(holder)) {
            break c;
        }
        core::hint::spin_loop();
    };
    // Since when nothing moved, and why.
    let mut waiting_since: Option<(Stop, u64)> = None;
    loop {
        let (stop, moved) = drain(&c, u32::MAX);
        if stop == Stop::Idle {
            break;
        }
        let now = crate::tsc::rdtsc();
        let since = match waiting_since {
            Some((s, t)) if s == stop && !moved => t,
            _ => {
                waiting_since = Some((stop, now));
                now
            }
        };
        match stop {
            Stop::Pending if now - since > crate::tsc::timeout_ticks(PENDING_PATIENCE_US) => {
                c.skip_pending();
                waiting_since = None;
            }
            Stop::UartBusy if now - since > crate::tsc::timeout_ticks(UART_PATIENCE_US) => crate::serial::give_up(),
            _ => core::hint::spin_loop(),
        }
    }
    // The last bytes leave the shift register before an emulator is shut down.
    let begin = crate::tsc::rdtsc();
    // SAFETY: the drain token is held (`c`).
    while crate::serial::present() && !unsafe { crate::serial::transmitter_empty() } {
        if crate::tsc::rdtsc() - begin > crate::tsc::timeout_ticks(UART_PATIENCE_US) {
            crate::serial::give_up();
        }
        core::hint::spin_loop();
    }
}

/// inject=log-flood: from an empty ring, write twice its size in lines without
/// draining in between (as when COM1 falls behind a burst), then carry on. The
/// ring keeps the first RING_SLOTS lines; the drain reports the rest as lost
/// where they were lost.
pub fn inject_flood() {
    let lines = 2 * RING_SLOTS;
    log::info!("inject: {lines} lines into a ring of {RING_SLOTS} slots, without draining");
    flush();
    for i in 0..lines {
        let mut line = LineBuf::new();
        let _ = write!(line, "[cpu{}] {:<5} inject: flood line {i}", crate::pcb::this_cpu_index(), Level::Info);
        RING.push(Level::Info as u8, line.finish());
    }
}
