//! COM1, the console of every run: a 16550 driven through the `uart_16550`
//! crate, used through its 16-byte transmit FIFO (up to 16 bytes each time
//! LSR.THRE says the FIFO is empty).
//!
//! Nothing here waits for another CPU and nothing holds a lock: CPUs never
//! write to COM1 themselves. They put lines into the log ring (logger.rs), and
//! the one CPU holding the ring's drain token moves them here; that token is
//! what serialises access to the UART.
//!
//! `set_quiet(true)` (for the time an OS owns the machine) keeps only ERROR
//! lines (and the SUMMARY) going to COM1; every line still reaches the other
//! sinks, and `set_quiet(false)` restores the full log.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};
use uart_16550::backend::PioBackend;
use uart_16550::spec::registers::LSR;
use uart_16550::{BaudRate, Config, Uart16550};

/// The first serial port of a PC, the console unless the firmware names another.
pub const COM1: u16 = 0x3f8;

struct Com1(UnsafeCell<Uart16550<PioBackend>>);

// SAFETY: the UART is only touched by `init` (the boot CPU, before any other CPU
// runs) and by the holder of the log ring's drain token (see the unsafe fns).
unsafe impl Sync for Com1 {}

static PORT: Com1 = Com1(UnsafeCell::new(
    // SAFETY: 0x3f8..0x3ff are COM1's registers on every PC; only this module uses them.
    match unsafe { Uart16550::new_port(COM1) } {
        Ok(uart) => uart,
        Err(_) => panic!("COM1 base port"),
    },
));
static PRESENT: AtomicBool = AtomicBool::new(false);
static QUIET: AtomicBool = AtomicBool::new(false);
/// COM1 was programmed again for a line after the handoff.
static RECLAIMED: AtomicBool = AtomicBool::new(false);

/// Program COM1 for 115200 8N1 with the FIFO on and no interrupts. The boot
/// CPU calls it once, before any other CPU runs.
pub fn init() {
    // SAFETY: only the boot CPU runs yet, and nothing drains the log before this.
    let uart = unsafe { &mut *PORT.0.get() };
    let config = Config { baud_rate: BaudRate::Baud115200, ..Config::DEFAULT };
    PRESENT.store(uart.init(config).is_ok(), Ordering::Release);
}

/// Use the 16550 at I/O port `base` instead of COM1 (coreboot's console
/// is elsewhere), programmed as `init` programs COM1. The boot CPU calls it
/// before any other CPU runs; lines still in the log ring go out there.
pub fn move_to(base: u16) {
    // SAFETY: the firmware names `base` as its console UART; only the boot CPU runs yet.
    let Ok(uart) = (unsafe { Uart16550::new_port(base) }) else { return };
    // SAFETY: only the boot CPU runs yet, and nothing drains the log meanwhile.
    let port = unsafe { &mut *PORT.0.get() };
    *port = uart;
    let config = Config { baud_rate: BaudRate::Baud115200, ..Config::DEFAULT };
    PRESENT.store(port.init(config).is_ok(), Ordering::Release);
}

/// Only ERROR lines (and the SUMMARY) go to COM1 while quiet: for the time an
/// OS owns the machine and its serial port. Lines still reach the other sinks.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Release);
}

pub fn is_quiet() -> bool {
    QUIET.load(Ordering::Acquire)
}

/// Whether COM1 answered at `init` and has not been given up on.
pub fn present() -> bool {
    PRESENT.load(Ordering::Acquire)
}

/// Stop writing to a COM1 that stopped taking bytes (its FIFO never emptied
/// in time): the log must never hang the machine.
pub fn give_up() {
    PRESENT.store(false, Ordering::Release);
}

/// After a handoff the OS has programmed COM1 its own way (FIFO off, another
/// divisor, interrupts on), and this driver's 16-byte writes would overrun
/// it: the first line that goes out while quiet (a fatal error, GUEST-END)
/// programs it back, once. The OS is ending by then.
///
/// # Safety
/// Only the holder of the log ring's drain token may call this.
pub unsafe fn reclaim_after_handoff() {
    if is_quiet() && !RECLAIMED.swap(true, Ordering::AcqRel) {
        // SAFETY: the caller holds the drain token, which serialises the UART.
        let uart = unsafe { &mut *PORT.0.get() };
        let config = Config { baud_rate: BaudRate::Baud115200, ..Config::DEFAULT };
        PRESENT.store(uart.init(config).is_ok(), Ordering::Release);
    }
}

/// Write up to 16 bytes of `bytes` if the transmit FIFO is empty; never waits.
/// Returns how many were written (0: the FIFO is still busy).
///
/// # Safety
/// Only the holder of the log ring's drain token may call this.
pub unsafe fn try_send(bytes: &[u8]) -> usize {
    // SAFETY: the caller holds the drain token, which serialises the UART.
    unsafe { (*PORT.0.get()).send_bytes(bytes) }
}

/// Whether the last byte has left the transmitter (LSR.TEMT).
///
/// # Safety
/// As for `try_send`.
pub unsafe fn transmitter_empty() -> bool {
    // SAFETY: as in `try_send`.
    unsafe { (*PORT.0.get()).lsr().contains(LSR::TRANSMITTER_EMPTY) }
}
