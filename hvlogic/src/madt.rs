//! Which processors to start, from the ACPI MADT's processor entries (ACPI 6.5
//! 5.2.12.2 "Processor Local APIC Structure", 5.2.12.12 "Processor Local x2APIC
//! Structure"). The kernel reads the table with the `acpi` crate and hands the
//! entries here.

use alloc::vec::Vec;

/// MADT Local APIC / Local x2APIC flags (ACPI 6.5 Table 5.23).
pub const FLAG_ENABLED: u32 = 1 << 0;
pub const FLAG_ONLINE_CAPABLE: u32 = 1 << 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ProcessorEntry {
    pub apic_id: u32,
    pub flags: u32,
    /// From a Local x2APIC entry (type 9) rather than a Local APIC entry (type 0).
    pub x2apic_entry: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Plan {
    /// The processor running this code.
    Boot,
    /// Enabled: send it INIT-SIPI-SIPI.
    Start,
    /// Enabled, but beyond `maxcpus`: counted, not started.
    CappedByMaxcpus,
    /// Enabled, but beyond the most processors this kernel runs: counted, not started.
    BeyondLimit,
    /// Enabled, but its APIC ID does not fit xAPIC's 8-bit destination.
    Unreachable,
    /// Disabled but online-capable (can be brought up later): reported, not started.
    OnlineCapable,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Processor {
    pub apic_id: u32,
    pub plan: Plan,
}

/// The start plan: the boot CPU first, then every other enabled processor in
/// table order, each APIC ID once, at most `limit` in all. Entries neither
/// enabled nor online-capable are left out (firmware lists absent sockets that
/// way). The processor index of a started CPU is its place among `Boot` and
/// `Start` entries.
pub fn plan(
    entries: &[ProcessorEntry],
    bsp_apic_id: u32,
    x2apic_mode: bool,
    maxcpus: Option<u32>,
    limit: u32,
) -> Vec<Processor> {
    let mut out = Vec::new();
    out.push(Processor { apic_id: bsp_apic_id, plan: Plan::Boot });
    let mut started = 1u32;
    for e in entries {
        if out.iter().any(|p| p.apic_id == e.apic_id) {
            continue;
        }
        let plan = if e.flags & FLAG_ENABLED != 0 {
            if !x2apic_mode && e.apic_id > 0xfe {
                Plan::Unreachable
            } else if maxcpus.is_some_and(|m| started >= m) {
                Plan::CappedByMaxcpus
            } else if started >= limit {
                Plan::BeyondLimit
            } else {
                started += 1;
                Plan::Start
            }
        } else if e.flags & FLAG_ONLINE_CAPABLE != 0 {
            Plan::OnlineCapable
        } else {
            continue;
        };
        out.push(Processor { apic_id: e.apic_id, plan });
    }
    out
}

/// Processors counted in SUMMARY's `cpus`: the enabled ones.
pub fn enumerated(plan: &[Processor]) -> u32 {
    plan.iter().filter(|p| p.plan != Plan::OnlineCapable).count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn lapic(id: u32, flags: u32) -> ProcessorEntry {
        ProcessorEntry { apic_id: id, flags, x2apic_entry: false }
    }
    fn x2(id: u32, flags: u32) -> ProcessorEntry {
        ProcessorEntry { apic_id: id, flags, x2apic_entry: true }
    }

    #[test]
    fn boot_cpu_first_then_enabled_in_table_order() {
        let e = [lapic(0, 1), lapic(2, 1), lapic(1, 1), lapic(3, 0), lapic(4, 2)];
        let p = plan(&e, 0, false, None, 256);
        let got: Vec<_> = p.iter().map(|p| (p.apic_id, p.plan)).collect();
        assert_eq!(got, vec![(0, Plan::Boot), (2, Plan::Start), (1, Plan::Start), (4, Plan::OnlineCapable)]);
        assert_eq!(enumerated(&p), 3);
    }

    #[test]
    fn boot_cpu_need_not_be_first_in_the_table() {
        let p = plan(&[lapic(0, 1), lapic(1, 1)], 1, false, None, 256);
        assert_eq!(p[0], Processor { apic_id: 1, plan: Plan::Boot });
        assert_eq!(p[1], Processor { apic_id: 0, plan: Plan::Start });
    }

    #[test]
    fn maxcpus_counts_the_boot_cpu() {
        let e: Vec<_> = (0..4).map(|i| lapic(i, 1)).collect();
        let p = plan(&e, 0, false, Some(2), 256);
        let plans: Vec<_> = p.iter().map(|p| p.plan).collect();
        assert_eq!(plans, [Plan::Boot, Plan::Start, Plan::CappedByMaxcpus, Plan::CappedByMaxcpus]);
        assert_eq!(enumerated(&p), 4);
        let p = plan(&e, 0, false, Some(1), 256);
        assert!(p[1..].iter().all(|p| p.plan == Plan::CappedByMaxcpus));
    }

    #[test]
    fn x2apic_ids_need_x2apic_mode_and_duplicates_are_dropped() {
        let e = [lapic(0, 1), x2(0, 1), x2(300, 1), x2(301, 0)];
        let p = plan(&e, 0, false, None, 256);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1], Processor { apic_id: 300, plan: Plan::Unreachable });
        let p = plan(&e, 0, true, None, 256);
        assert_eq!(p[1], Processor { apic_id: 300, plan: Plan::Start });
    }

    #[test]
    fn at_most_limit_processors_are_started_the_rest_counted() {
        let e: Vec<_> = (0..300).map(|i| x2(i, 1)).collect();
        let p = plan(&e, 0, true, None, 256);
        assert_eq!(p.iter().filter(|p| matches!(p.plan, Plan::Boot | Plan::Start)).count(), 256);
        assert_eq!(p.iter().filter(|p| p.plan == Plan::BeyondLimit).count(), 44);
        assert_eq!(p[255], Processor { apic_id: 255, plan: Plan::Start });
        assert_eq!(p[256], Processor { apic_id: 256, plan: Plan::BeyondLimit });
        assert_eq!(enumerated(&p), 300);
        // maxcpus below the limit wins.
        let p = plan(&e, 0, true, Some(3), 256);
        assert_eq!(p.iter().filter(|p| p.plan == Plan::CappedByMaxcpus).count(), 297);
    }
}
