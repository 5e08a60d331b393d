//! COM1, the console of every run: a 16550 driven through the `uart_16550`
//! crate, which polls LSR before each byte (Bochs models the FIFO, so a driver
//! that does not poll loses bytes).
//!
//! One lock serialises whole lines across CPUs. It is re-entrant per CPU, so an
//! exception raised while this CPU is in the middle of a line can still report.

use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use uart_16550::backend::PioBackend;
use uart_16550::spec::registers::LSR;
use uart_16550::{BaudRate, Config, Uart16550};

const COM1: u16 = 0x3f8;

struct Com1 {
    /// 0 = free, else the owning CPU's index + 1.
    owner: AtomicU32,
    present: AtomicBool,
    uart: UnsafeCell<Uart16550<PioBackend>>,
}

// SAFETY: `uart` is only touched by the CPU that holds `owner`.
unsafe impl Sync for Com1 {}

static PORT: Com1 = Com1 {
    owner: AtomicU32::new(0),
    present: AtomicBool::new(false),
    // SAFETY: 0x3f8..0x3ff are COM1's registers on every PC; only this module uses them.
    uart: UnsafeCell::new(match unsafe { Uart16550::new_port(COM1) } {
        Ok(uart) => uart,
        Err(_) => panic!("COM1 base port"),
    }),
};

/// Program COM1 for 115200 8N1 with the FIFO on and no interrupts.
pub fn init() {
    with(|uart| {
        let config = Config { baud_rate: BaudRate::Baud115200, ..Config::DEFAULT };
        let present = uart.init(config).is_ok();
        PORT.present.store(present, Ordering::Relaxed);
    });
}

/// Run `f` with COM1 held by this CPU.
fn with<R>(f: impl FnOnce(&mut Uart16550<PioBackend>) -> R) -> R {
    let me = crate::pcb::this_cpu_index() + 1;
    let nested = PORT.owner.load(Ordering::Acquire) == me;
    if !nested {
        while PORT.owner.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
    }
    // SAFETY: this CPU owns the port (taken above, or held further up this CPU's stack,
    // in which case the outer user is suspended by the exception that brought us here).
    let r = f(unsafe { &mut *PORT.uart.get() });
    if !nested {
        PORT.owner.store(0, Ordering::Release);
    }
    r
}

/// Give up COM1 if this CPU holds it (a CPU about to park for good).
pub fn release_if_held() {
    let me = crate::pcb::this_cpu_index() + 1;
    let _ = PORT.owner.compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed);
}

/// Wait until the last byte has left the transmitter (LSR.TEMT), so an
/// emulator shut down right after sees the whole log.
pub fn flush() {
    with(|uart| {
        if PORT.present.load(Ordering::Relaxed) {
            while !uart.lsr().contains(LSR::TRANSMITTER_EMPTY) {
                core::hint::spin_loop();
            }
        }
    });
}

struct Writer<'a>(&'a mut Uart16550<PioBackend>);

impl fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if PORT.present.load(Ordering::Relaxed) {
            self.0.send_bytes_exact(s.as_bytes());
        }
        Ok(())
    }
}

/// Write one line (CR LF appended) while holding the port.
pub fn write_line(args: fmt::Arguments) {
    with(|uart| {
        let mut w = Writer(uart);
        let _ = fmt::write(&mut w, args);
        let _ = fmt::Write::write_str(&mut w, "\r\n");
    });
}
