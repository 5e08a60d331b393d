//! The `log` backend: one `[cpuN] LEVEL message` line per record on COM1
//! and on the screen console.

use core::sync::atomic::{AtomicUsize, Ordering};
use log::{Level, LevelFilter, Log, Metadata, Record};

struct SerialLogger;

static LOGGER: SerialLogger = SerialLogger;
static MAX: AtomicUsize = AtomicUsize::new(LevelFilter::Info as usize);

impl Log for SerialLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() as usize <= MAX.load(Ordering::Relaxed)
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let cpu = crate::pcb::this_cpu_index();
            if crate::console::serial_enabled() {
                crate::serial::write_line(format_args!("[cpu{cpu}] {:<5} {}", record.level(), record.args()));
            }
            let style = hvlogic::screen::Style::Log;
            crate::console::line(style, format_args!("[cpu{cpu}] {:<5} {}", record.level(), record.args()));
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
