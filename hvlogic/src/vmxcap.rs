//! Human-readable dump of the VMX capability MSRs, in the spirit of QEMU's
//! `scripts/kvm/vmxcap`, for bring-up on real hardware.
//!
//! MSR layouts: SDM Vol. 3D Appendix A "VMX Capability Reporting Facility"
//! (§A.1 "Basic VMX Information", §A.3 "VM-Execution Controls" to §A.5
//! "VM-Entry Controls", §A.6 "Miscellaneous Data", §A.7 "VMX-Fixed Bits in
//! CR0", §A.8 "VMX-Fixed Bits in CR4", §A.9 "VMCS Enumeration", §A.10 "VPID
//! and EPT Capabilities", §A.11 "VM Functions"). CR bit names: SDM Vol. 3A
//! §2.5 "Control Registers".

use crate::controls::{self, Control};
use crate::vmx_msrs::basic;
use core::fmt::{self, Write};

/// Capability MSR numbers and the raw values (SDM Vol. 4 Table 2-2 "IA-32
/// Architectural MSRs" and SDM Vol. 3D Appendix A "VMX Capability Reporting
/// Facility").
pub use crate::vmx_msrs::{msr, VmxCapMsrs};

/// Architecturally named CR0 bits (SDM Vol. 3A §2.5 "Control Registers").
pub const CR0_BITS: &[(u8, &str)] = &[
    (0, "PE"),
    (1, "MP"),
    (2, "EM"),
    (3, "TS"),
    (4, "ET"),
    (5, "NE"),
    (16, "WP"),
    (18, "AM"),
    (29, "NW"),
    (30, "CD"),
    (31, "PG"),
];

/// Architecturally named CR4 bits (SDM Vol. 3A §2.5 "Control Registers").
/// LASS (27) and FRED (32) are in the newest editions only.
pub const CR4_BITS: &[(u8, &str)] = &[
    (0, "VME"),
    (1, "PVI"),
    (2, "TSD"),
    (3, "DE"),
    (4, "PSE"),
    (5, "PAE"),
    (6, "MCE"),
    (7, "PGE"),
    (8, "PCE"),
    (9, "OSFXSR"),
    (10, "OSXMMEXCPT"),
    (11, "UMIP"),
    (12, "LA57"),
    (13, "VMXE"),
    (14, "SMXE"),
    (16, "FSGSBASE"),
    (17, "PCIDE"),
    (18, "OSXSAVE"),
    (19, "KL"),
    (20, "SMEP"),
    (21, "SMAP"),
    (22, "PKE"),
    (23, "CET"),
    (24, "PKS"),
    (25, "UINTR"),
    (27, "LASS"),
    (28, "LAM_SUP"),
    (32, "FRED"),
];

fn lookup(table: &'static [(u8, &'static str)], bit: u8) -> &'static str {
    table.iter().find(|e| e.0 == bit).map_or("reserved", |e| e.1)
}

/// Name of CR0 bit `bit`, or "reserved".
pub fn cr0_bit_name(bit: u8) -> &'static str {
    lookup(CR0_BITS, bit)
}

/// Name of CR4 bit `bit`, or "reserved".
pub fn cr4_bit_name(bit: u8) -> &'static str {
    lookup(CR4_BITS, bit)
}

/// Width of the label column.
const W: usize = 52;

fn has(v: u64, bit: u32) -> bool {
    v >> bit & 1 != 0
}

fn bits(v: u64, lo: u32, hi: u32) -> u64 {
    (v >> lo) & ((1u64 << (hi - lo + 1)) - 1)
}

fn yn(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Counts what passes through, so formatted labels can be padded.
struct Counted<'a> {
    out: &'a mut dyn Write,
    n: usize,
}

impl Write for Counted<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.n += s.chars().count();
        self.out.write_str(s)
    }
}

/// One aligned line: `  {label:<W} {value}`.
fn line(out: &mut dyn Write, label: fmt::Arguments, value: impl fmt::Display) -> fmt::Result {
    out.write_str("  ")?;
    let mut c = Counted { out: &mut *out, n: 0 };
    c.write_fmt(label)?;
    let pad = W.saturating_sub(c.n);
    writeln!(out, "{:pad$} {}", "", value, pad = pad)
}

fn item(out: &mut dyn Write, name: &str, value: impl fmt::Display) -> fmt::Result {
    line(out, format_args!("{name}"), value)
}

fn flag(out: &mut dyn Write, name: &str, v: u64, bit: u32) -> fmt::Result {
    item(out, name, yn(has(v, bit)))
}

fn header(out: &mut dyn Write, title: &str, msr: &str, addr: u32, value: Option<u64>, note: &str) -> fmt::Result {
    match value {
        Some(v) => writeln!(out, "{title} [{msr} 0x{addr:X}] = 0x{v:016x}{note}"),
        None => writeln!(out, "{title} [{msr} 0x{addr:X}]"),
    }
}

fn not_available(out: &mut dyn Write, why: &str) -> fmt::Result {
    writeln!(out, "  not available ({why})")
}

/// Setting of one control bit per its capability MSR (SDM Vol. 3D §A.3.1
/// "Pin-Based VM-Execution Controls").
fn control_setting(cap: u64, bit: u8) -> &'static str {
    let must1 = controls::allowed0(cap) >> bit & 1 != 0;
    let may1 = controls::allowed1(cap) >> bit & 1 != 0;
    match (must1, may1) {
        (false, true) => "yes",
        (true, true) => "default 1",
        (false, false) => "no",
        (true, false) => "inconsistent (must be 1 and 0)",
    }
}

/// Setting of one CR bit per its FIXED0/FIXED1 MSRs (SDM Vol. 3D §A.7
/// "VMX-Fixed Bits in CR0", §A.8 "VMX-Fixed Bits in CR4").
fn cr_setting(fixed0: u64, fixed1: u64, bit: u8) -> &'static str {
    match (has(fixed0, bit as u32), has(fixed1, bit as u32)) {
        (false, true) => "free",
        (true, true) => "must be 1",
        (false, false) => "must be 0",
        (true, false) => "inconsistent (must be 1 and 0)",
    }
}

struct ControlMsrs {
    control: Control,
    title: &'static str,
    msr: (&'static str, u32),
    true_msr: Option<(&'static str, u32)>,
    absent_why: &'static str,
}

const CONTROL_MSRS: [ControlMsrs; 5] = [
    ControlMsrs {
        control: Control::PinBased,
        title: "Pin-based VM-execution controls (SDM Vol. 3D §A.3.1 \"Pin-Based VM-Execution Controls\")",
        msr: ("IA32_VMX_PINBASED_CTLS", msr::IA32_VMX_PINBASED_CTLS),
        true_msr: Some(("IA32_VMX_TRUE_PINBASED_CTLS", msr::IA32_VMX_TRUE_PINBASED_CTLS)),
        absent_why: "",
    },
    ControlMsrs {
        control: Control::PrimaryProcBased,
        title: "Primary processor-based VM-execution controls \
                (SDM Vol. 3D §A.3.2 \"Primary Processor-Based VM-Execution Controls\")",
        msr: ("IA32_VMX_PROCBASED_CTLS", msr::IA32_VMX_PROCBASED_CTLS),
        true_msr: Some(("IA32_VMX_TRUE_PROCBASED_CTLS", msr::IA32_VMX_TRUE_PROCBASED_CTLS)),
        absent_why: "",
    },
    ControlMsrs {
        control: Control::SecondaryProcBased,
        title: "Secondary processor-based VM-execution controls \
                (SDM Vol. 3D §A.3.3 \"Secondary Processor-Based VM-Execution Controls\")",
        msr: ("IA32_VMX_PROCBASED_CTLS2", msr::IA32_VMX_PROCBASED_CTLS2),
        true_msr: None,
        absent_why: "MSR absent: \"activate secondary controls\" cannot be set",
    },
    ControlMsrs {
        control: Control::Exit,
        title: "VM-exit controls (SDM Vol. 3D §A.4 \"VM-Exit Controls\")",
        msr: ("IA32_VMX_EXIT_CTLS", msr::IA32_VMX_EXIT_CTLS),
        true_msr: Some(("IA32_VMX_TRUE_EXIT_CTLS", msr::IA32_VMX_TRUE_EXIT_CTLS)),
        absent_why: "",
    },
    ControlMsrs {
        control: Control::Entry,
        title: "VM-entry controls (SDM Vol. 3D §A.5 \"VM-Entry Controls\")",
        msr: ("IA32_VMX_ENTRY_CTLS", msr::IA32_VMX_ENTRY_CTLS),
        true_msr: Some(("IA32_VMX_TRUE_ENTRY_CTLS", msr::IA32_VMX_TRUE_ENTRY_CTLS)),
        absent_why: "",
    },
];

fn write_control(out: &mut dyn Write, c: &ControlMsrs, plain: Option<u64>, true_v: Option<u64>) -> fmt::Result {
    match (true_v, c.true_msr, plain) {
        (Some(v), Some((name, addr)), _) => {
            header(out, c.title, name, addr, Some(v), " (TRUE MSR used)")?;
            let p = plain.unwrap_or(0);
            line(out, format_args!("({} 0x{:X}, not used)", c.msr.0, c.msr.1), format_args!("0x{p:016x}"))?;
            write_control_bits(out, c.control, v)
        }
        (_, _, Some(v)) => {
            header(out, c.title, c.msr.0, c.msr.1, Some(v), "")?;
            write_control_bits(out, c.control, v)
        }
        (_, _, None) => {
            header(out, c.title, c.msr.0, c.msr.1, None, "")?;
            not_available(out, c.absent_why)
        }
    }
}

fn write_control_bits(out: &mut dyn Write, control: Control, cap: u64) -> fmt::Result {
    for b in control.table() {
        item(out, b.name, control_setting(cap, b.bit))?;
    }
    Ok(())
}

struct CrMsrs {
    cr: &'static str,
    section: &'static str,
    names: &'static [(u8, &'static str)],
    fixed0: (&'static str, u32),
    fixed1: (&'static str, u32),
}

const CR0_MSRS: CrMsrs = CrMsrs {
    cr: "CR0",
    section: "Vol. 3D §A.7 \"VMX-Fixed Bits in CR0\"",
    names: CR0_BITS,
    fixed0: ("IA32_VMX_CR0_FIXED0", msr::IA32_VMX_CR0_FIXED0),
    fixed1: ("IA32_VMX_CR0_FIXED1", msr::IA32_VMX_CR0_FIXED1),
};

const CR4_MSRS: CrMsrs = CrMsrs {
    cr: "CR4",
    section: "Vol. 3D §A.8 \"VMX-Fixed Bits in CR4\"",
    names: CR4_BITS,
    fixed0: ("IA32_VMX_CR4_FIXED0", msr::IA32_VMX_CR4_FIXED0),
    fixed1: ("IA32_VMX_CR4_FIXED1", msr::IA32_VMX_CR4_FIXED1),
};

fn write_cr(out: &mut dyn Write, c: &CrMsrs, fixed0: u64, fixed1: u64) -> fmt::Result {
    writeln!(out, "{} bits fixed in VMX operation (SDM {})", c.cr, c.section)?;
    for ((name, addr), v) in [(c.fixed0, fixed0), (c.fixed1, fixed1)] {
        line(out, format_args!("{name} [0x{addr:X}]"), format_args!("0x{v:016x}"))?;
    }
    for &(bit, name) in c.names {
        line(out, format_args!("{}.{} (bit {})", c.cr, name, bit), cr_setting(fixed0, fixed1, bit))?;
    }
    let named = c.names.iter().fold(0u64, |m, &(bit, _)| m | 1 << bit);
    if fixed0 & !named != 0 {
        line(out, format_args!("unnamed {} bits that must be 1", c.cr), format_args!("0x{:x}", fixed0 & !named))?;
    }
    Ok(())
}

/// Write the whole decoded report.
pub fn write_vmxcap(out: &mut dyn Write, m: &VmxCapMsrs) -> fmt::Result {
    let b = m.basic;
    header(
        out,
        "Basic VMX information (SDM Vol. 3D §A.1 \"Basic VMX Information\")",
        "IA32_VMX_BASIC",
        msr::IA32_VMX_BASIC,
        Some(b),
        "",
    )?;
    item(out, "VMCS revision identifier", basic::revision_id(b))?;
    item(out, "VMCS region size (bytes)", basic::region_size(b))?;
    flag(out, "physical addresses limited to 32 bits", b, 48)?;
    flag(out, "dual-monitor treatment of SMIs and SMM", b, 49)?;
    let mt = basic::memory_type(b);
    let mt_name = match mt {
        0 => "uncacheable (UC)",
        6 => "write-back (WB)",
        _ => "not used by the SDM",
    };
    item(out, "VMCS memory type", format_args!("{mt} = {mt_name}"))?;
    flag(out, "INS/OUTS VM-exit instruction information", b, 54)?;
    flag(out, "TRUE capability MSRs (IA32_VMX_TRUE_*_CTLS)", b, 55)?;
    flag(out, "VM entry: HW exception with or without error code", b, 56)?;

    // The five control fields, SDM Vol. 3D §A.3 "VM-Execution Controls" to
    // §A.5 "VM-Entry Controls".
    let vals = [
        (Some(m.pin), m.true_pin),
        (Some(m.proc1), m.true_proc1),
        (m.proc2, None),
        (Some(m.exit), m.true_exit),
        (Some(m.entry), m.true_entry),
    ];
    for (c, (plain, true_v)) in CONTROL_MSRS.iter().zip(vals) {
        write_control(out, c, plain, true_v)?;
    }

    let v = m.misc;
    header(
        out,
        "Miscellaneous data (SDM Vol. 3D §A.6 \"Miscellaneous Data\")",
        "IA32_VMX_MISC",
        msr::IA32_VMX_MISC,
        Some(v),
        "",
    )?;
    item(out, "VMX-preemption timer rate", format_args!("TSC >> {}", bits(v, 0, 4)))?;
    flag(out, "store EFER.LMA into \"IA-32e mode guest\" on exit", v, 5)?;
    flag(out, "activity state: HLT", v, 6)?;
    flag(out, "activity state: shutdown", v, 7)?;
    flag(out, "activity state: wait-for-SIPI", v, 8)?;
    flag(out, "Intel PT usable in VMX operation", v, 14)?;
    flag(out, "RDMSR in SMM can read IA32_SMBASE", v, 15)?;
    item(out, "number of CR3-target values", bits(v, 16, 24))?;
    item(out, "max MSR-list entries (recommended)", 512 * (bits(v, 25, 27) + 1))?;
    flag(out, "IA32_SMM_MONITOR_CTL bit 2 can be set", v, 28)?;
    flag(out, "VMWRITE to VM-exit information fields", v, 29)?;
    flag(out, "inject event with instruction length 0", v, 30)?;
    item(out, "MSEG revision identifier", bits(v, 32, 63))?;

    header(
        out,
        "VPID and EPT capabilities (SDM Vol. 3D §A.10 \"VPID and EPT Capabilities\")",
        "IA32_VMX_EPT_VPID_CAP",
        msr::IA32_VMX_EPT_VPID_CAP,
        m.ept_vpid,
        "",
    )?;
    match m.ept_vpid {
        None => not_available(out, "MSR absent: neither \"enable EPT\" nor \"enable VPID\" can be set")?,
        Some(v) => {
            for (bit, name) in [
                (0, "execute-only EPT translations"),
                (6, "page-walk length 4"),
                (7, "page-walk length 5"),
                (8, "EPT paging-structure memory type UC"),
                (14, "EPT paging-structure memory type WB"),
                (16, "2-MByte EPT pages"),
                (17, "1-GByte EPT pages"),
                (20, "INVEPT"),
                (21, "EPT accessed and dirty flags"),
                (22, "advanced VM-exit information for EPT violations"),
                (23, "supervisor shadow-stack control"),
                (25, "single-context INVEPT"),
                (26, "all-context INVEPT"),
                (32, "INVVPID"),
                (40, "individual-address INVVPID"),
                (41, "single-context INVVPID"),
                (42, "all-context INVVPID"),
                (43, "single-context-retaining-globals INVVPID"),
            ] {
                flag(out, name, v, bit)?;
            }
            item(out, "maximum HLAT prefix size", bits(v, 48, 53))?;
        }
    }

    header(
        out,
        "VM functions (SDM Vol. 3D §A.11 \"VM Functions\")",
        "IA32_VMX_VMFUNC",
        msr::IA32_VMX_VMFUNC,
        m.vmfunc,
        "",
    )?;
    match m.vmfunc {
        None => not_available(out, "MSR absent: \"enable VM functions\" cannot be set")?,
        Some(v) => flag(out, "EPTP switching", v, 0)?,
    }

    write_cr(out, &CR0_MSRS, m.cr0_fixed0, m.cr0_fixed1)?;
    writeln!(
        out,
        "  note: with \"unrestricted guest\" = 1, guest CR0.PE and CR0.PG may be 0 (SDM Vol. 3C §27.3.1.1 \
         \"Checks on Guest Control Registers, Debug Registers, and MSRs\")"
    )?;
    write_cr(out, &CR4_MSRS, m.cr4_fixed0, m.cr4_fixed1)?;

    header(
        out,
        "VMCS enumeration (SDM Vol. 3D §A.9 \"VMCS Enumeration\")",
        "IA32_VMX_VMCS_ENUM",
        msr::IA32_VMX_VMCS_ENUM,
        Some(m.vmcs_enum),
        "",
    )?;
    item(out, "highest index in VMCS field encodings", bits(m.vmcs_enum, 1, 9))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    /// Skylake-class values.
    fn skylake() -> VmxCapMsrs {
        VmxCapMsrs {
            basic: 0x00da_0400_0000_0004,
            pin: 0x0000_007f_0000_0016,
            proc1: 0xfff9_fffe_0401_e172,
            exit: 0x01ff_ffff_0003_6dff,
            entry: 0x0003_ffff_0000_11ff,
            misc: 0x0000_0000_3004_81e5,
            cr0_fixed0: 0x8000_0021,
            cr0_fixed1: 0xffff_ffff,
            cr4_fixed0: 0x2000,
            cr4_fixed1: 0x0037_67ff,
            vmcs_enum: 0x2e,
            proc2: Some(0x0055_3cfe_0000_0000),
            ept_vpid: Some(0x0000_0f01_0673_4141),
            vmfunc: Some(1),
            true_pin: Some(0x0000_007f_0000_0016),
            true_proc1: Some(0xfff9_fffe_0400_6172),
            true_exit: Some(0x01ff_ffff_0003_6dfb),
            true_entry: Some(0x0003_ffff_0000_11fb),
        }
    }

    fn render(m: &VmxCapMsrs) -> String {
        let mut s = String::new();
        write_vmxcap(&mut s, m).unwrap();
        s
    }

    /// Value printed for `label` in the section whose header starts with `section`.
    fn value<'a>(out: &'a str, section: &str, label: &str) -> &'a str {
        let mut in_section = false;
        for l in out.lines() {
            if !l.starts_with(' ') {
                in_section = l.starts_with(section);
                continue;
            }
            if in_section && l.len() > 2 + W && l[2..2 + W].trim_end() == label {
                return &l[3 + W..];
            }
        }
        panic!("no line {label:?} in section {section:?}:\n{out}");
    }

    #[test]
    fn basic_info() {
        let out = render(&skylake());
        assert!(out.contains(
            "Basic VMX information (SDM Vol. 3D §A.1 \"Basic VMX Information\") \
             [IA32_VMX_BASIC 0x480] = 0x00da040000000004\n"
        ));
        let v = |l| value(&out, "Basic VMX", l);
        assert_eq!(v("VMCS revision identifier"), "4");
        assert_eq!(v("VMCS region size (bytes)"), "1024");
        assert_eq!(v("physical addresses limited to 32 bits"), "no");
        assert_eq!(v("dual-monitor treatment of SMIs and SMM"), "yes");
        assert_eq!(v("VMCS memory type"), "6 = write-back (WB)");
        assert_eq!(v("INS/OUTS VM-exit instruction information"), "yes");
        assert_eq!(v("TRUE capability MSRs (IA32_VMX_TRUE_*_CTLS)"), "yes");
        assert_eq!(v("VM entry: HW exception with or without error code"), "no");
    }

    #[test]
    fn controls_use_true_msrs() {
        let out = render(&skylake());
        assert!(out.contains("[IA32_VMX_TRUE_PINBASED_CTLS 0x48D] = 0x0000007f00000016 (TRUE MSR used)"));
        let pin = |l| value(&out, "Pin-based", l);
        assert_eq!(pin("activate VMX-preemption timer"), "yes");
        assert_eq!(pin("process posted interrupts"), "no");
        let p1 = |l| value(&out, "Primary processor-based", l);
        // Default1 in the plain MSR, but clearable per the TRUE MSR.
        assert_eq!(p1("CR3-load exiting"), "yes");
        assert_eq!(p1("activate tertiary controls"), "no");
        assert_eq!(p1("activate secondary controls"), "yes");
        assert_eq!(p1("(IA32_VMX_PROCBASED_CTLS 0x482, not used)"), "0xfff9fffe0401e172");
        let p2 = |l| value(&out, "Secondary processor-based", l);
        assert_eq!(p2("unrestricted guest"), "yes");
        assert_eq!(p2("enable EPT"), "yes");
        assert_eq!(p2("virtualize APIC accesses"), "no");
        assert_eq!(p2("enable PML"), "no");
        let ex = |l| value(&out, "VM-exit controls", l);
        assert_eq!(ex("save debug controls"), "yes");
        assert_eq!(ex("host address-space size"), "yes");
        assert_eq!(ex("clear IA32_RTIT_CTL"), "no");
        let en = |l| value(&out, "VM-entry controls", l);
        assert_eq!(en("IA-32e mode guest"), "yes");
        assert_eq!(en("load IA32_RTIT_CTL"), "no");
    }

    #[test]
    fn default1_without_true_msrs() {
        let mut m = skylake();
        m.basic &= !(1 << 55);
        m.true_pin = None;
        m.true_proc1 = None;
        m.true_exit = None;
        m.true_entry = None;
        let out = render(&m);
        assert!(out.contains("[IA32_VMX_PROCBASED_CTLS 0x482] = 0xfff9fffe0401e172\n"));
        assert_eq!(value(&out, "Primary processor-based", "CR3-load exiting"), "default 1");
        assert_eq!(value(&out, "VM-exit controls", "save debug controls"), "default 1");
        assert_eq!(value(&out, "VM-entry controls", "load debug controls"), "default 1");
        assert!(!out.contains("TRUE MSR used"));
    }

    #[test]
    fn misc_ept_vmfunc_enum() {
        let out = render(&skylake());
        let mi = |l| value(&out, "Miscellaneous data", l);
        assert_eq!(mi("VMX-preemption timer rate"), "TSC >> 5");
        assert_eq!(mi("store EFER.LMA into \"IA-32e mode guest\" on exit"), "yes");
        assert_eq!(mi("activity state: wait-for-SIPI"), "yes");
        assert_eq!(mi("Intel PT usable in VMX operation"), "no");
        assert_eq!(mi("RDMSR in SMM can read IA32_SMBASE"), "yes");
        assert_eq!(mi("number of CR3-target values"), "4");
        assert_eq!(mi("max MSR-list entries (recommended)"), "512");
        assert_eq!(mi("VMWRITE to VM-exit information fields"), "yes");
        assert_eq!(mi("inject event with instruction length 0"), "no");
        assert_eq!(mi("MSEG revision identifier"), "0");
        let ept = |l| value(&out, "VPID and EPT", l);
        assert_eq!(ept("execute-only EPT translations"), "yes");
        assert_eq!(ept("page-walk length 4"), "yes");
        assert_eq!(ept("page-walk length 5"), "no");
        assert_eq!(ept("1-GByte EPT pages"), "yes");
        assert_eq!(ept("EPT accessed and dirty flags"), "yes");
        assert_eq!(ept("supervisor shadow-stack control"), "no");
        assert_eq!(ept("single-context-retaining-globals INVVPID"), "yes");
        assert_eq!(ept("maximum HLAT prefix size"), "0");
        assert_eq!(value(&out, "VM functions", "EPTP switching"), "yes");
        assert_eq!(value(&out, "VMCS enumeration", "highest index in VMCS field encodings"), "23");
    }

    #[test]
    fn cr_fixed_bits() {
        let out = render(&skylake());
        let cr0 = |l| value(&out, "CR0 bits fixed", l);
        assert_eq!(cr0("CR0.PE (bit 0)"), "must be 1");
        assert_eq!(cr0("CR0.NE (bit 5)"), "must be 1");
        assert_eq!(cr0("CR0.PG (bit 31)"), "must be 1");
        assert_eq!(cr0("CR0.CD (bit 30)"), "free");
        let cr4 = |l| value(&out, "CR4 bits fixed", l);
        assert_eq!(cr4("CR4.VMXE (bit 13)"), "must be 1");
        assert_eq!(cr4("CR4.PAE (bit 5)"), "free");
        assert_eq!(cr4("CR4.LA57 (bit 12)"), "must be 0");
        assert_eq!(cr4("CR4.PKE (bit 22)"), "must be 0");
        assert_eq!(cr4("IA32_VMX_CR4_FIXED1 [0x489]"), "0x00000000003767ff");
        assert!(!out.contains("unnamed CR"));
        assert_eq!(cr0_bit_name(31), "PG");
        assert_eq!(cr0_bit_name(6), "reserved");
        assert_eq!(cr4_bit_name(13), "VMXE");
        assert_eq!(cr4_bit_name(15), "reserved");
    }

    #[test]
    fn absent_optional_msrs() {
        let mut m = skylake();
        m.proc1 &= !(1 << 63);
        m.true_proc1 = m.true_proc1.map(|v| v & !(1 << 63));
        m.proc2 = None;
        m.ept_vpid = None;
        m.vmfunc = None;
        let out = render(&m);
        let sections: Vec<&str> = out.lines().filter(|l| l.contains("not available")).collect();
        assert_eq!(sections.len(), 3, "{out}");
        assert!(out.contains(
            "Secondary processor-based VM-execution controls \
             (SDM Vol. 3D §A.3.3 \"Secondary Processor-Based VM-Execution Controls\") \
             [IA32_VMX_PROCBASED_CTLS2 0x48B]\n  not available ("
        ));
        assert!(out.contains("[IA32_VMX_EPT_VPID_CAP 0x48C]\n  not available ("));
        assert!(out.contains("[IA32_VMX_VMFUNC 0x491]\n  not available ("));
        // Nothing decoded from a zero value.
        let labels: Vec<&str> = out.lines().filter(|l| l.len() > 2 + W).map(|l| l[2..2 + W].trim_end()).collect();
        for absent in ["enable EPT", "unrestricted guest", "INVEPT", "page-walk length 4", "EPTP switching"] {
            assert!(!labels.contains(&absent), "{absent} decoded:\n{out}");
        }
        assert!(labels.contains(&"HLT exiting"));
    }

    #[test]
    fn every_item_line_is_aligned() {
        let out = render(&skylake());
        for l in out
            .lines()
            .filter(|l| l.starts_with("  ") && !l.starts_with("  note:") && !l.starts_with("  not available"))
        {
            assert!(l.len() > W + 3, "short line {l:?}");
            let b = l.as_bytes();
            assert!(b[2 + W] == b' ' && b[3 + W] != b' ', "misaligned: {l:?}");
        }
        for c in Control::ALL {
            for b in c.table() {
                assert!(b.name.len() <= W, "{}", b.name);
            }
        }
    }

    #[test]
    fn read_follows_existence_rules() {
        let sky = skylake();
        let mut asked = Vec::new();
        let m = VmxCapMsrs::read(|i| {
            asked.push(i);
            match i {
                msr::IA32_VMX_BASIC => sky.basic,
                msr::IA32_VMX_PROCBASED_CTLS => sky.proc1,
                msr::IA32_VMX_PROCBASED_CTLS2 => sky.proc2.unwrap(),
                _ => 0x1234,
            }
        });
        assert_eq!(m.proc2, sky.proc2);
        assert!(m.ept_vpid.is_some() && m.vmfunc.is_some() && m.true_entry.is_some());

        // No secondary controls, no TRUE MSRs: those MSRs are never read.
        let mut asked = Vec::new();
        let m = VmxCapMsrs::read(|i| {
            asked.push(i);
            match i {
                msr::IA32_VMX_BASIC => sky.basic & !(1 << 55),
                msr::IA32_VMX_PROCBASED_CTLS => sky.proc1 & !(1 << 63),
                _ => u64::MAX,
            }
        });
        assert!(m.proc2.is_none() && m.ept_vpid.is_none() && m.vmfunc.is_none());
        assert!(m.true_pin.is_none() && m.true_proc1.is_none() && m.true_exit.is_none() && m.true_entry.is_none());
        assert!(asked.iter().all(|&i| i <= msr::IA32_VMX_VMCS_ENUM), "{asked:x?}");
    }

    #[test]
    #[ignore]
    fn print_skylake() {
        std::println!("{}", render(&skylake()));
    }
}
