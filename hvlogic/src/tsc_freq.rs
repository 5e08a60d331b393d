//! The TSC frequency: from CPUID leaf 0x15 (the TSC/crystal ratio and the
//! crystal frequency) or leaf 0x16 (the processor base frequency) where the CPU
//! gives them (SDM Vol. 2A "CPUID—CPU Identification"; SDM Vol. 3B §20.7.3
//! "Determining the Processor Base Frequency"), else measured against the
//! 8254 PIT, with an error bound computed from what the measurement could
//! not see.

/// The 8254 PIT input clock, Hz.
pub const PIT_HZ: u64 = 1_193_182;

/// Where the frequency came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Source {
    /// CPUID.15H: crystal Hz * EBX / EAX.
    Cpuid15 { crystal_hz: u64, numerator: u32, denominator: u32 },
    /// CPUID.16H:EAX, the processor base frequency in MHz.
    Cpuid16 { base_mhz: u32 },
    /// Counted against the PIT over `pit_ticks` PIT ticks, within `error_ppm`.
    Pit { pit_ticks: u64, error_ppm: u64 },
}

impl core::fmt::Display for Source {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Source::Cpuid15 { crystal_hz, numerator, denominator } => {
                write!(f, "CPUID leaf 0x15: crystal {} kHz x {numerator}/{denominator}", crystal_hz / 1000)
            }
            Source::Cpuid16 { base_mhz } => write!(f, "CPUID leaf 0x16: base frequency {base_mhz} MHz"),
            Source::Pit { pit_ticks, error_ppm } => write!(
                f,
                "PIT channel 2 over {} us, error within +-{}.{:02}%",
                pit_ticks * 1_000_000 / PIT_HZ,
                error_ppm / 10_000,
                error_ppm % 10_000 / 100
            ),
        }
    }
}

/// CPUID.15H (EAX = denominator, EBX = numerator, ECX = crystal Hz) and
/// CPUID.16H:EAX (base MHz; `None` when the leaf is beyond the maximum).
/// Leaf 0x15 counts only with all three values; leaf 0x16 only when non-zero.
pub fn from_cpuid(leaf15: Option<(u32, u32, u32)>, leaf16_eax: Option<u32>) -> Option<(u64, Source)> {
    if let Some((denominator, numerator, crystal)) = leaf15 {
        if denominator != 0 && numerator != 0 && crystal != 0 {
            let hz = crystal as u64 * numerator as u64 / denominator as u64;
            return Some((hz, Source::Cpuid15 { crystal_hz: crystal as u64, numerator, denominator }));
        }
    }
    let base_mhz = leaf16_eax? & 0xffff;
    (base_mhz != 0).then_some((base_mhz as u64 * 1_000_000, Source::Cpuid16 { base_mhz }))
}

/// Whether a CPUID frequency is this TSC's rate, as a short PIT count sees it:
/// within 2% plus the count's own error bound. Emulators report a real CPU's
/// leaf 0x16 while their TSC runs at the emulation speed (Bochs: its `ips`).
pub fn cpuid_agrees(cpuid_hz: u64, pit_hz: u64, pit_ppm: u64) -> bool {
    let tolerance_ppm = 20_000 + pit_ppm;
    let diff = cpuid_hz.abs_diff(pit_hz) as u128;
    diff * 1_000_000 <= pit_hz as u128 * tolerance_ppm as u128
}

/// The outcome of calibration, as the `tsc:` line tells it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Calibration {
    pub hz: u64,
    pub source: Source,
    /// A CPUID frequency the PIT contradicted.
    pub rejected: Option<(u64, Source)>,
    /// The CPUID frequency was compared with a short PIT count.
    pub checked: bool,
}

impl core::fmt::Display for Calibration {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} kHz from {}", self.hz / 1000, self.source)?;
        if self.checked {
            f.write_str(" (the PIT agrees)")?;
        }
        if let Some((hz, source)) = self.rejected {
            write!(f, "; not from {source} ({} kHz), which the PIT contradicts", hz / 1000)?;
        }
        Ok(())
    }
}

/// One reading of the PIT counter, taken between two TSC reads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PitSample {
    pub tsc_before: u64,
    pub tsc_after: u64,
    /// The counter (counts down).
    pub count: u16,
}

/// The TSC rate between two samples and its error bound in parts per million.
/// The TSC time of each reading is known within its [before, after] window,
/// and each PIT count within one PIT tick; both ends add up in the bound.
/// None until the PIT has moved and the TSC has advanced.
pub fn pit_estimate(first: PitSample, now: PitSample) -> Option<(u64, u64)> {
    let pit_ticks = first.count.wrapping_sub(now.count) as u64;
    let mid = |s: PitSample| s.tsc_before / 2 + s.tsc_after / 2;
    let tsc = mid(now).checked_sub(mid(first))?;
    if pit_ticks == 0 || tsc == 0 {
        return None;
    }
    let hz = (tsc as u128 * PIT_HZ as u128 / pit_ticks as u128) as u64;
    let tsc_per_pit_tick = hz.div_ceil(PIT_HZ);
    let windows = (first.tsc_after - first.tsc_before) / 2 + (now.tsc_after - now.tsc_before) / 2;
    let uncertainty = windows + 2 * tsc_per_pit_tick;
    let ppm = (uncertainty as u128 * 1_000_000).div_ceil(tsc as u128) as u64;
    Some((hz, ppm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn leaf_15_needs_all_three_values() {
        // A 24 MHz crystal, TSC = crystal * 216 / 2 = 2.592 GHz.
        let (hz, src) = from_cpuid(Some((2, 216, 24_000_000)), Some(2600)).unwrap();
        assert_eq!(hz, 2_592_000_000);
        assert_eq!(format!("{src}"), "CPUID leaf 0x15: crystal 24000 kHz x 216/2");
        // No crystal frequency: leaf 0x16 instead.
        let (hz, src) = from_cpuid(Some((2, 216, 0)), Some(2600)).unwrap();
        assert_eq!((hz, src), (2_600_000_000, Source::Cpuid16 { base_mhz: 2600 }));
        assert_eq!(from_cpuid(Some((0, 0, 0)), Some(0)), None);
        assert_eq!(from_cpuid(None, None), None);
        // Only EAX[15:0] is the frequency.
        assert_eq!(from_cpuid(None, Some(0xdead_0000 | 3000)).unwrap().0, 3_000_000_000);
    }

    fn sample(tsc: u64, window: u64, count: u16) -> PitSample {
        PitSample { tsc_before: tsc, tsc_after: tsc + window, count }
    }

    #[test]
    fn pit_rate_and_bound() {
        // 200 MHz TSC: one PIT tick is ~167.6 TSC ticks; 2 ms is 2386 PIT ticks.
        let first = sample(1_000_000, 20, 0xffff);
        let now = sample(1_000_000 + 400_000, 20, 0xffff - 2386);
        let (hz, ppm) = pit_estimate(first, now).unwrap();
        assert!((199_900_000..200_100_000).contains(&hz), "{hz}");
        // (10 + 10 + 2 * 168) / 400000 = 890 ppm.
        assert_eq!(ppm, 890);
        assert_eq!(
            format!("{}", Source::Pit { pit_ticks: 2386, error_ppm: ppm }),
            "PIT channel 2 over 1999 us, error within +-0.08%"
        );
    }

    #[test]
    fn the_bound_shrinks_with_the_window_and_grows_with_slow_reads() {
        let first = sample(0, 10, 0xffff);
        let short = pit_estimate(first, sample(200_000, 10, 0xffff - 1193)).unwrap().1;
        let long = pit_estimate(first, sample(2_000_000, 10, 0xffff - 11932)).unwrap().1;
        assert!(long * 9 < short && long > 0);
        let slow = pit_estimate(sample(0, 5000, 0xffff), sample(200_000, 5000, 0xffff - 1193)).unwrap().1;
        assert!(slow > short + 20_000);
    }

    #[test]
    fn a_cpuid_rate_the_pit_contradicts_is_not_used() {
        // Bochs skylake_x: leaf 0x16 says 3.5 GHz, the TSC counts 50 M per second.
        assert!(!cpuid_agrees(3_500_000_000, 50_000_000, 5000));
        assert!(cpuid_agrees(2_600_000_000, 2_596_000_000, 5000));
        assert!(!cpuid_agrees(2_600_000_000, 2_500_000_000, 5000), "4% off");
        assert!(cpuid_agrees(2_600_000_000, 2_500_000_000, 30_000), "within a coarse count's bound");
        let c = Calibration {
            hz: 50_000_000,
            source: Source::Pit { pit_ticks: 2386, error_ppm: 900 },
            rejected: Some((3_500_000_000, Source::Cpuid16 { base_mhz: 3500 })),
            checked: false,
        };
        assert_eq!(
            format!("{c}"),
            "50000 kHz from PIT channel 2 over 1999 us, error within +-0.09%; not from CPUID leaf 0x16: base frequency 3500 MHz (3500000 kHz), which the PIT contradicts"
        );
    }

    #[test]
    fn nothing_to_say_before_the_pit_moves() {
        let first = sample(100, 10, 500);
        assert_eq!(pit_estimate(first, sample(5000, 10, 500)), None);
        assert_eq!(pit_estimate(first, first), None);
        // The counter wraps below zero in mode 0.
        assert!(pit_estimate(sample(0, 10, 5), sample(200_000, 10, 0xfffa)).is_some());
    }
}
