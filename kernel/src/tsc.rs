//! Time from the TSC, calibrated against the PIT (channel 2, as Linux does),
//! or from CPUID leaf 0x15/0x16 on machines without a working PIT.

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::Port;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// The 8254 PIT input clock (Hz).
const PIT_HZ: u64 = 1_193_182;
/// 10 ms of PIT ticks: the calibration window.
const PIT_COUNT: u64 = PIT_HZ / 100;
/// Give up on the PIT after this many TSC ticks: 20 ms even at 10 GHz.
const NO_PIT_TICKS: u64 = 200_000_000;

#[derive(Clone, Copy, Debug)]
pub enum Source {
    Pit,
    Cpuid15,
    Cpuid16,
}

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is always available in long mode on x86-64 CPUs (CR4.TSD=0 at CPL 0).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Measure the TSC frequency once; returns (Hz, source).
pub fn calibrate() -> Option<(u64, Source)> {
    let (hz, src) = pit_calibrate().map(|hz| (hz, Source::Pit)).or_else(cpuid_frequency)?;
    TSC_HZ.store(hz, Ordering::Release);
    Some((hz, src))
}

/// Count TSC ticks across 10 ms of PIT channel 2 in mode 0 (interrupt on
/// terminal count); its OUT line shows in port 0x61 bit 5.
fn pit_calibrate() -> Option<u64> {
    let mut port61 = Port::<u8>::new(0x61);
    let mut mode = Port::<u8>::new(0x43);
    let mut ch2 = Port::<u8>::new(0x42);
    // SAFETY: PC system control port and PIT channel 2 (the speaker timer); the
    // speaker output stays disabled (bit 1 clear), only the gate (bit 0) is raised.
    let ticks = unsafe {
        let v = port61.read();
        port61.write((v & !0x02) | 0x01);
        mode.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        ch2.write(PIT_COUNT as u8);
        ch2.write((PIT_COUNT >> 8) as u8);
        let start = rdtsc();
        while port61.read() & 0x20 == 0 {
            if rdtsc() - start > NO_PIT_TICKS {
                return None; // no PIT answering
            }
        }
        rdtsc() - start
    };
    (ticks > 1000).then(|| ticks * PIT_HZ / PIT_COUNT)
}

/// CPUID.15H: TSC = crystal * EBX / EAX, when all three are given;
/// else CPUID.16H:EAX, the processor base frequency in MHz.
fn cpuid_frequency() -> Option<(u64, Source)> {
    let max = raw_cpuid::cpuid!(0).eax;
    if max >= 0x15 {
        let r = raw_cpuid::cpuid!(0x15);
        if r.eax != 0 && r.ebx != 0 && r.ecx != 0 {
            return Some((r.ecx as u64 * r.ebx as u64 / r.eax as u64, Source::Cpuid15));
        }
    }
    if max >= 0x16 {
        let mhz = raw_cpuid::cpuid!(0x16).eax & 0xffff;
        if mhz != 0 {
            return Some((mhz as u64 * 1_000_000, Source::Cpuid16));
        }
    }
    None
}

pub fn hz() -> u64 {
    TSC_HZ.load(Ordering::Acquire)
}

pub fn micros_to_ticks(us: u64) -> u64 {
    hz() / 1_000_000 * us + hz() % 1_000_000 * us / 1_000_000
}

pub fn ticks_to_micros(ticks: u64) -> u64 {
    match hz() {
        0 => 0,
        hz => (ticks as u128 * 1_000_000 / hz as u128) as u64,
    }
}

pub fn delay_us(us: u64) {
    let end = rdtsc() + micros_to_ticks(us);
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// Spin until `done()` or `us` microseconds pass; true if done.
pub fn wait_until(us: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = rdtsc() + micros_to_ticks(us);
    loop {
        if done() {
            return true;
        }
        if rdtsc() >= end {
            return done();
        }
        core::hint::spin_loop();
    }
}
