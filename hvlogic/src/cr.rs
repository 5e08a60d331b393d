//! MOV to CR0 and CR4 for a guest whose writes exit (a bit the host owns
//! through the guest/host mask changed): the checks the CPU would make, and
//! the new register, read shadow and IA-32e state (SDM Vol. 3C §26.3 "Changes
//! to Instruction Behavior in VMX Non-Root Operation"; the checks: SDM Vol. 2B
//! "MOV—Move to/from Control Registers", SDM Vol. 3A §2.5 "Control
//! Registers", §10.8.5 "Initializing IA-32e Mode").

use crate::fixed::{cr0, cr4, Fixed};

pub const CR0_ET: u64 = 1 << 4;
const CR0_NW: u64 = cr0::NW;
const CR0_CD: u64 = cr0::CD;
const CR4_PAE: u64 = cr4::PAE;
pub const CR4_PCIDE: u64 = 1 << 17;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;

/// The guest's control-register state when the write exited.
#[derive(Clone, Copy, Debug)]
pub struct State {
    /// CR0 as the CPU holds it, and as the guest sees it (read shadow).
    pub cr0: u64,
    pub cr4: u64,
    pub efer: u64,
    /// CS.L: the guest runs 64-bit code.
    pub cs_l: bool,
}

/// What to do with a MOV to CR0 or CR4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The CPU would raise #GP(0).
    Fault,
    /// Write these: the register, its read shadow, IA32_EFER and the
    /// "IA-32e mode guest" entry control; `load_pdptes` when PAE paging is (re)loaded.
    Write { value: u64, shadow: u64, efer: u64, ia32e: bool, load_pdptes: bool },
}

/// MOV to CR0 of `new`. `fixed` are the VMX fixed bits the real CR0 must
/// keep (with PE and PG already freed under unrestricted guest).
pub fn mov_to_cr0(s: &State, new: u64, fixed: Fixed) -> Outcome {
    let new = new | CR0_ET; // ET is hardwired to 1 (SDM Vol. 3A §2.5 "Control Registers")
    let pg = new & cr0::PG != 0;
    let was_pg = s.cr0 & cr0::PG != 0;
    let lma = s.efer & EFER_LMA != 0;
    if new >> 32 != 0
        || (new & CR0_NW != 0 && new & CR0_CD == 0)
        || (pg && new & cr0::PE == 0)
        || (pg && !was_pg && s.efer & EFER_LME != 0 && s.cr4 & CR4_PAE == 0)
        || (!pg && was_pg && lma && s.cs_l)
        || (!pg && was_pg && s.cr4 & CR4_PCIDE != 0)
    {
        return Outcome::Fault;
    }
    let mut efer = s.efer;
    if pg && !was_pg && efer & EFER_LME != 0 {
        efer |= EFER_LMA;
    } else if !pg && was_pg {
        efer &= !EFER_LMA;
    }
    let ia32e = efer & EFER_LMA != 0;
    // PAE paging (not IA-32e) loads the PDPTEs when PG, CD or NW change.
    let pae_paging = pg && s.cr4 & CR4_PAE != 0 && !ia32e;
    let changed = (new ^ s.cr0) & (cr0::PG | CR0_CD | CR0_NW) != 0;
    Outcome::Write { value: fixed.apply(new).value, shadow: new, efer, ia32e, load_pdptes: pae_paging && changed }
}

/// MOV to CR4 of `new`, where `hidden` are bits the guest may not set (VMX
/// and SMX are hidden from it; reserved bits are in `fixed.fixed1`'s zeros).
pub fn mov_to_cr4(s: &State, new: u64, fixed: Fixed, hidden: u64) -> Outcome {
    let lma = s.efer & EFER_LMA != 0;
    if new & hidden != 0
        || new & !fixed.fixed1 != 0
        || (lma && new & CR4_PAE == 0)
        || (new & CR4_PCIDE != 0 && s.cr4 & CR4_PCIDE == 0 && !lma)
    {
        return Outcome::Fault;
    }
    let pg = s.cr0 & cr0::PG != 0;
    let pae_paging = pg && new & CR4_PAE != 0 && !lma;
    let load_pdptes = pae_paging && (new ^ s.cr4) & (CR4_PAE | 1 << 4 | 1 << 7) != 0; // PAE, PSE, PGE
    Outcome::Write { value: fixed.apply(new).value, shadow: new, efer: s.efer, ia32e: lma, load_pdptes }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NE: u64 = 1 << 5;
    const VMXE: u64 = 1 << 13;
    /// Unrestricted guest: NE must stay 1; PE and PG are free.
    const CR0_FIXED: Fixed = Fixed { fixed0: NE, fixed1: 0xffff_ffff };
    const CR4_FIXED: Fixed = Fixed { fixed0: VMXE, fixed1: 0x3f_77ff };

    fn real_mode_after_init() -> State {
        State { cr0: 0x6000_0010 | NE, cr4: VMXE, efer: 0, cs_l: false }
    }

    #[test]
    fn entering_long_mode_sets_lma_and_the_entry_control() {
        // Linux's trampoline: CR4.PAE, EFER.LME, then CR0 = PE|MP|ET|NE|WP|AM|PG.
        let s = State { cr0: 0x11 | NE, cr4: VMXE | CR4_PAE, efer: EFER_LME, cs_l: false };
        let new = 0x8005_0033;
        assert_eq!(
            mov_to_cr0(&s, new, CR0_FIXED),
            Outcome::Write { value: new, shadow: new, efer: EFER_LME | EFER_LMA, ia32e: true, load_pdptes: false }
        );
    }

    #[test]
    fn the_host_keeps_ne_and_the_guest_sees_its_own_value() {
        let s = real_mode_after_init();
        match mov_to_cr0(&s, 0x11, CR0_FIXED) {
            Outcome::Write { value, shadow, ia32e: false, .. } => {
                assert_eq!(value, 0x11 | NE);
                assert_eq!(shadow, 0x11);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cr0_writes_the_cpu_refuses() {
        let s = real_mode_after_init();
        assert_eq!(mov_to_cr0(&s, 1 << 32 | 0x11, CR0_FIXED), Outcome::Fault, "reserved bits 63:32");
        assert_eq!(mov_to_cr0(&s, CR0_NW | 0x11, CR0_FIXED), Outcome::Fault, "NW without CD");
        assert_eq!(mov_to_cr0(&s, cr0::PG | 0x10, CR0_FIXED), Outcome::Fault, "PG without PE");
        let lme = State { efer: EFER_LME, cr0: 0x11 | NE, ..s };
        assert_eq!(mov_to_cr0(&lme, 0x8000_0011, CR0_FIXED), Outcome::Fault, "long mode without PAE");
        let long = State { cr0: 0x8000_0031, cr4: VMXE | CR4_PAE, efer: EFER_LME | EFER_LMA, cs_l: true };
        assert_eq!(mov_to_cr0(&long, 0x11, CR0_FIXED), Outcome::Fault, "paging off in 64-bit code");
        // From compatibility mode it is how IA-32e mode is left.
        let compat = State { cs_l: false, ..long };
        assert_eq!(
            mov_to_cr0(&compat, 0x11, CR0_FIXED),
            Outcome::Write { value: 0x31, shadow: 0x11, efer: EFER_LME, ia32e: false, load_pdptes: false }
        );
    }

    #[test]
    fn pae_paging_loads_the_pdptes() {
        let s = State { cr0: 0x11 | NE, cr4: VMXE | CR4_PAE, efer: 0, cs_l: false };
        assert!(matches!(mov_to_cr0(&s, 0x8000_0011, CR0_FIXED), Outcome::Write { load_pdptes: true, .. }));
        let paged = State { cr0: 0x8000_0011 | NE, cr4: VMXE, ..s };
        assert!(matches!(
            mov_to_cr4(&paged, CR4_PAE, CR4_FIXED, VMXE | 1 << 14),
            Outcome::Write { load_pdptes: true, .. }
        ));
    }

    #[test]
    fn cr4_hidden_and_reserved_bits_fault() {
        let s = real_mode_after_init();
        assert_eq!(mov_to_cr4(&s, VMXE, CR4_FIXED, VMXE | 1 << 14), Outcome::Fault);
        assert_eq!(mov_to_cr4(&s, 1 << 14, CR4_FIXED, VMXE | 1 << 14), Outcome::Fault);
        assert_eq!(mov_to_cr4(&s, 1 << 30, CR4_FIXED, VMXE | 1 << 14), Outcome::Fault);
        assert_eq!(
            mov_to_cr4(&s, CR4_PAE, CR4_FIXED, VMXE | 1 << 14),
            Outcome::Write { value: CR4_PAE | VMXE, shadow: CR4_PAE, efer: 0, ia32e: false, load_pdptes: false }
        );
    }
}
