//! VM_CR (MSR C001_0114h), the AMD counterpart of IA32_FEATURE_CONTROL
//! (APM Vol. 2 §15.30.1 "VM_CR MSR"): bit 3 LOCK, bit 4 SVMDIS. With SVMDIS
//! set, setting EFER.SVME raises #GP; with LOCK set, writes to LOCK and
//! SVMDIS are ignored until reset, or until SVM_KEY unlocks it where the CPU
//! has SVM-Lock (APM Vol. 2 §15.31 "SVM-Lock").
//!
//! The seed locks IA32_FEATURE_CONTROL because VMXON requires the lock. SVM
//! requires no lock: EFER.SVME only needs SVMDIS clear. So this hypervisor
//! clears SVMDIS where firmware left it set but unlocked (as the seed sets
//! the VMX enable bit where the MSR is unlocked), and never sets LOCK: a lock
//! is firmware's policy (it can only be undone by reset or by the key
//! firmware chose), and an OS that later runs natively keeps the choice the
//! firmware gave it.

pub const VM_CR: u32 = 0xc001_0114;
/// DPD: debug port disable (bit 0).
pub const DPD: u64 = 1 << 0;
/// R_INIT: INIT is translated to #SX (bit 1).
pub const R_INIT: u64 = 1 << 1;
/// DIS_A20M: A20 masking disabled (bit 2).
pub const DIS_A20M: u64 = 1 << 2;
pub const LOCK: u64 = 1 << 3;
pub const SVMDIS: u64 = 1 << 4;

/// What to do with VM_CR holding `value`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Decision {
    /// SVMDIS clear: EFER.SVME may be set (locked or not).
    Enabled { locked: bool },
    /// SVMDIS set but unlocked: write this value (SVMDIS cleared), then enable.
    Write(u64),
    /// SVMDIS set and locked by firmware: EFER.SVME would raise #GP. `key`:
    /// the CPU has SVM-Lock, so an SVM_KEY could unlock it (the hypervisor
    /// does not know the key firmware chose).
    LockedOff { key: bool },
}

/// The decision for VM_CR `value`; `svm_lock` is CPUID Fn8000_000A_EDX.SVML.
pub fn decide(value: u64, svm_lock: bool) -> Decision {
    match (value & SVMDIS != 0, value & LOCK != 0) {
        (false, locked) => Decision::Enabled { locked },
        (true, false) => Decision::Write(value & !SVMDIS),
        (true, true) => Decision::LockedOff { key: svm_lock },
    }
}

/// What a guest reads as VM_CR: SVM disabled and locked, as on a machine
/// whose firmware turned SVM off (SVM is hidden from guests).
pub const GUEST_VIEW: u64 = LOCK | SVMDIS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_combination() {
        assert_eq!(decide(0, false), Decision::Enabled { locked: false });
        assert_eq!(decide(LOCK, false), Decision::Enabled { locked: true });
        assert_eq!(decide(SVMDIS | DPD, true), Decision::Write(DPD));
        assert_eq!(decide(SVMDIS | LOCK, false), Decision::LockedOff { key: false });
        assert_eq!(decide(SVMDIS | LOCK | R_INIT, true), Decision::LockedOff { key: true });
    }
}
