//! Time from the TSC. Its frequency comes from CPUID leaf 0x15/0x16 where the
//! CPU gives it (checked against a ~1% PIT count, since emulators report a
//! real CPU's leaves); otherwise it is counted against PIT channel 2 (as
//! Linux does) only for as long as it takes to know it within 0.1%, and that
//! bound is logged.

use core::sync::atomic::{AtomicU64, Ordering};
use hvlogic::tsc_freq::{self, Calibration, PitSample, Source};
use x86_64::instructions::port::Port;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// Stop the PIT count once the error bound is this small (parts per million)...
const TARGET_PPM: u64 = 1000;
/// ... or, to check a CPUID frequency, this small.
const CHECK_PPM: u64 = 10_000;
/// ... or after this many PIT ticks (~50 ms), before the 16-bit counter wraps.
const MAX_PIT_TICKS: u16 = 60_000;
/// Give up on the PIT if it has not moved after this many TSC ticks (20 ms even at 10 GHz).
const NO_PIT_TICKS: u64 = 200_000_000;

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is always available in long mode on x86-64 CPUs (CR4.TSD=0 at CPL 0).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Find the TSC frequency once.
pub fn calibrate() -> Option<Calibration> {
    let cpuid = cpuid_frequency();
    let Some(mut pit) = PitCount::start() else {
        // No PIT answering: the CPUID value unchecked, if there is one.
        let (hz, source) = cpuid?;
        return Some(store(Calibration { hz, source, rejected: None, checked: false }));
    };
    let mut rejected = None;
    if let Some((hz, source)) = cpuid {
        // A coarse count is enough to tell whether CPUID names this TSC's rate.
        match pit.until(CHECK_PPM) {
            Some((pit_hz, Source::Pit { error_ppm, .. })) if !tsc_freq::cpuid_agrees(hz, pit_hz, error_ppm) => {
                rejected = Some((hz, source));
            }
            check => return Some(store(Calibration { hz, source, rejected, checked: check.is_some() })),
        }
    }
    // The same count goes on until it is precise enough.
    let (hz, source) = pit.until(TARGET_PPM)?;
    Some(store(Calibration { hz, source, rejected, checked: false }))
}

fn store(c: Calibration) -> Calibration {
    TSC_HZ.store(c.hz, Ordering::Release);
    c
}

fn cpuid_frequency() -> Option<(u64, Source)> {
    let max = raw_cpuid::cpuid!(0).eax;
    let leaf15 = (max >= 0x15).then(|| raw_cpuid::cpuid!(0x15)).map(|r| (r.eax, r.ebx, r.ecx));
    let leaf16 = (max >= 0x16).then(|| raw_cpuid::cpuid!(0x16).eax);
    tsc_freq::from_cpuid(leaf15, leaf16)
}

/// PIT channel 2 counting down from 0xFFFF in mode 0, compared with the TSC
/// by reading the counter directly (latch command) between two RDTSCs.
struct PitCount {
    mode: Port<u8>,
    ch2: Port<u8>,
    begin: u64,
    first: PitSample,
}

impl PitCount {
    /// Start the count; None if the PIT does not move (no PIT answering).
    fn start() -> Option<PitCount> {
        let mut port61 = Port::<u8>::new(0x61);
        let mut pit = PitCount { mode: Port::new(0x43), ch2: Port::new(0x42), begin: rdtsc(), first: EMPTY };
        // SAFETY: PC system control port and PIT channel 2 (the speaker timer); the
        // speaker output stays disabled (bit 1 clear), only the gate (bit 0) is raised.
        unsafe {
            let v = port61.read();
            port61.write((v & !0x02) | 0x01);
            pit.mode.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
            pit.ch2.write(0xff);
            pit.ch2.write(0xff);
        }
        // The count loads on the next PIT clock: start from the first change seen.
        let before = pit.sample();
        loop {
            let s = pit.sample();
            if s.count != before.count {
                pit.first = s;
                return Some(pit);
            }
            if rdtsc() - pit.begin > NO_PIT_TICKS {
                return None;
            }
        }
    }

    fn sample(&mut self) -> PitSample {
        let tsc_before = rdtsc();
        // SAFETY: the 8254 mode/command port and channel 2's data port: latch, then low and high byte.
        let count = unsafe {
            self.mode.write(0b1000_0000); // channel 2, counter latch
            let lo = self.ch2.read();
            let hi = self.ch2.read();
            u16::from_le_bytes([lo, hi])
        };
        PitSample { tsc_before, tsc_after: rdtsc(), count }
    }

    /// Count on until the estimate is within `target_ppm` (or the counter is
    /// about to wrap); the best estimate so far.
    fn until(&mut self, target_ppm: u64) -> Option<(u64, Source)> {
        let mut best = None;
        loop {
            let now = self.sample();
            let pit_ticks = self.first.count.wrapping_sub(now.count);
            if let Some((hz, ppm)) = tsc_freq::pit_estimate(self.first, now) {
                best = Some((hz, Source::Pit { pit_ticks: pit_ticks as u64, error_ppm: ppm }));
                if ppm <= target_ppm {
                    break;
                }
            }
            if pit_ticks >= MAX_PIT_TICKS || rdtsc() - self.begin > NO_PIT_TICKS {
                break;
            }
        }
        best.filter(|(hz, _)| *hz > 1_000_000)
    }
}

const EMPTY: PitSample = PitSample { tsc_before: 0, tsc_after: 0, count: 0 };

pub fn hz() -> u64 {
    TSC_HZ.load(Ordering::Acquire)
}

pub fn micros_to_ticks(us: u64) -> u64 {
    hz() / 1_000_000 * us + hz() % 1_000_000 * us / 1_000_000
}

/// TSC ticks for a timeout of `us`: before calibration, assume 10 GHz, so a
/// timeout is never shorter than asked.
pub fn timeout_ticks(us: u64) -> u64 {
    match hz() {
        0 => us.saturating_mul(10_000),
        _ => micros_to_ticks(us),
    }
}

pub fn ticks_to_micros(ticks: u64) -> u64 {
    match hz() {
        0 => 0,
        hz => (ticks as u128 * 1_000_000 / hz as u128) as u64,
    }
}

/// Spin until `done()` or `us` microseconds pass; true if done.
pub fn wait_until(us: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = rdtsc() + timeout_ticks(us);
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
