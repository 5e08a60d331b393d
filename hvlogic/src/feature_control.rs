//! IA32_FEATURE_CONTROL (MSR 0x3A), as the seed describes it (SDM Vol. 3C
//! §24.7 "Enabling and Entering VMX Operation"):
//! bit 0 lock, bit 1 "enable VMX inside SMX", bit 2 "enable VMX outside SMX".
//! VMXON raises #GP if the lock bit is 0, or if the bit for the current mode
//! (inside or outside SMX) is 0; writing the MSR once locked raises #GP.

pub const IA32_FEATURE_CONTROL: u32 = 0x3a;
pub const LOCK: u64 = 1 << 0;
pub const VMX_INSIDE_SMX: u64 = 1 << 1;
pub const VMX_OUTSIDE_SMX: u64 = 1 << 2;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Decision {
    /// Unlocked: write this value (lock, bit 2, and bit 1 when the CPU has SMX).
    Write(u64),
    /// Locked, with VMX enabled for the mode the CPU is in.
    LockedOn,
    /// Locked by firmware with VMX off for the mode the CPU is in; VMXON would
    /// raise #GP. `missing` is the bit that would have to be set.
    LockedOff { missing: u64 },
}

/// What to do with IA32_FEATURE_CONTROL holding `value`.
///
/// `smx` is CPUID.01H:ECX[6] (bit 1 may be set only when CPUID.01H:ECX[6:5]
/// = 11b; the caller only asks when bit 5 is set). `inside_smx`: the CPU runs
/// in SMX operation (after GETSEC[SENTER]), so bit 1 governs VMXON, not bit 2.
pub fn decide(value: u64, smx: bool, inside_smx: bool) -> Decision {
    let needed = if inside_smx && smx { VMX_INSIDE_SMX } else { VMX_OUTSIDE_SMX };
    if value & LOCK == 0 {
        let mut new = value | LOCK | VMX_OUTSIDE_SMX;
        if smx {
            new |= VMX_INSIDE_SMX;
        }
        Decision::Write(new)
    } else if value & needed != 0 {
        Decision::LockedOn
    } else {
        Decision::LockedOff { missing: needed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every combination of (locked, bit 1, bit 2, SMX supported, inside SMX),
    /// with the outcome written out by hand.
    #[test]
    fn every_combination() {
        use Decision::*;
        const OFF_OUT: Decision = LockedOff { missing: VMX_OUTSIDE_SMX };
        const OFF_IN: Decision = LockedOff { missing: VMX_INSIDE_SMX };
        #[rustfmt::skip]
        let table: [(bool, bool, bool, bool, bool, Decision); 32] = [
            // locked bit1  bit2   smx    inside
            (false, false, false, false, false, Write(0b101)),
            (false, false, false, false, true,  Write(0b101)),
            (false, false, false, true,  false, Write(0b111)),
            (false, false, false, true,  true,  Write(0b111)),
            (false, false, true,  false, false, Write(0b101)),
            (false, false, true,  false, true,  Write(0b101)),
            (false, false, true,  true,  false, Write(0b111)),
            (false, false, true,  true,  true,  Write(0b111)),
            (false, true,  false, false, false, Write(0b111)),
            (false, true,  false, false, true,  Write(0b111)),
            (false, true,  false, true,  false, Write(0b111)),
            (false, true,  false, true,  true,  Write(0b111)),
            (false, true,  true,  false, false, Write(0b111)),
            (false, true,  true,  false, true,  Write(0b111)),
            (false, true,  true,  true,  false, Write(0b111)),
            (false, true,  true,  true,  true,  Write(0b111)),
            (true,  false, false, false, false, OFF_OUT),
            (true,  false, false, false, true,  OFF_OUT),
            (true,  false, false, true,  false, OFF_OUT),
            (true,  false, false, true,  true,  OFF_IN),
            (true,  false, true,  false, false, LockedOn),
            (true,  false, true,  false, true,  LockedOn),
            (true,  false, true,  true,  false, LockedOn),
            (true,  false, true,  true,  true,  OFF_IN),
            (true,  true,  false, false, false, OFF_OUT),
            (true,  true,  false, false, true,  OFF_OUT),
            (true,  true,  false, true,  false, OFF_OUT),
            (true,  true,  false, true,  true,  LockedOn),
            (true,  true,  true,  false, false, LockedOn),
            (true,  true,  true,  false, true,  LockedOn),
            (true,  true,  true,  true,  false, LockedOn),
            (true,  true,  true,  true,  true,  LockedOn),
        ];
        for (locked, b1, b2, smx, inside, expected) in table {
            let value = (locked as u64) | (b1 as u64) << 1 | (b2 as u64) << 2;
            assert_eq!(decide(value, smx, inside), expected, "value={value:#b} smx={smx} inside={inside}");
        }
    }

    #[test]
    fn other_bits_are_kept_when_writing() {
        // SGX and SENTER bits set by firmware that did not lock: keep them.
        assert_eq!(decide(0x4_0000 | 0x7f00, false, false), Decision::Write(0x4_0000 | 0x7f00 | 0b101));
    }
}
