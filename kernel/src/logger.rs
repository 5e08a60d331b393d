//! The `log` backend: one `[cpuN] LEVEL message` line per record on COM1.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use log::{Level, LevelFilter, Log, Metadata, Record};

struct SerialLogger;

static LOGGER: SerialLogger = SerialLogger;
static MAX: AtomicUsize = AtomicUsize::new(LevelFilter::Info as usize);
/// Once an OS owns COM1, only errors are written.
static QUIET: AtomicBool = AtomicBool::new(false);
/// COM1 was taken back from the OS (reprogrammed) for a line after the handoff.
static RECLAIMED: AtomicBool = AtomicBool::new(false);

impl Log for SerialLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        let max = if QUIET.load(Ordering::Relaxed) { Level::Error as usize } else { MAX.load(Ordering::Relaxed) };
        metadata.level() as usize <= max
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            if QUIET.load(Ordering::Relaxed) {
                reclaim_com1();
            }
            let cpu = crate::pcb::this_cpu_index();
            crate::serial::write_line(format_args!("[cpu{cpu}] {:<5} {}", record.level(), record.args()));
        }
    }

    fn flush(&self) {}
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

/// Quiet: only ERROR lines go out (after a handoff, COM1 belongs to the OS).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// After a handoff the OS has programmed COM1 its own way (FIFO, divisor,
/// interrupts); the first line the hypervisor writes after that (a fatal
/// error, GUEST-END) programs it back, once: the OS is ending by then.
pub fn reclaim_com1() {
    if !RECLAIMED.swap(true, Ordering::AcqRel) {
        crate::serial::init();
    }
}
