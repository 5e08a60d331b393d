//! The length of an intercepted instruction on a CPU without NRIP save
//! (QEMU's `-cpu max` among them): there the #VMEXIT gives no next RIP
//! (APM Vol. 2 §15.7.1 "State Saved on Exit": nRIP only with
//! CPUID Fn8000_000A_EDX[NRIPS]), and without decode assists no instruction
//! bytes either, so the hypervisor reads the instruction at the guest's RIP
//! and counts its prefixes. Only the instructions the exit handlers step
//! over are recognized; anything else is None (the handler then refuses to
//! guess).

/// Legacy prefixes (APM Vol. 3 §1.2 "Instruction Prefixes"): operand and
/// address size, the segment overrides, LOCK, REP/REPNE.
const fn is_legacy_prefix(b: u8) -> bool {
    matches!(b, 0x66 | 0x67 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 | 0xf0 | 0xf2 | 0xf3)
}

/// The longest instruction (APM Vol. 3 §1.1 "Instruction Encoding Overview").
pub const MAX_LENGTH: usize = 15;

/// The length of the instruction at the start of `code` if it is one of
/// those a handler steps over (CPUID, RDMSR, WRMSR, HLT, INVD, WBINVD,
/// VMMCALL, XSETBV, MONITOR, MWAIT, RDTSCP, IN, OUT); `code64`: 64-bit
/// code, where 40h-4Fh is a REX prefix.
pub fn length(code: &[u8], code64: bool) -> Option<usize> {
    let mut i = 0;
    while i < code.len() && i < MAX_LENGTH && is_legacy_prefix(code[i]) {
        i += 1;
    }
    if code64 && i < code.len() && code[i] & 0xf0 == 0x40 {
        i += 1;
    }
    let rest = code.get(i..)?;
    let opcode = match rest {
        // HLT; IN/OUT with DX (EC-EF), with an immediate port (E4-E7).
        [0xf4, ..] | [0xec..=0xef, ..] => 1,
        [0xe4..=0xe7, _, ..] => 2,
        // CPUID, RDMSR, WRMSR, INVD, WBINVD.
        [0x0f, 0xa2 | 0x32 | 0x30 | 0x08 | 0x09, ..] => 2,
        // VMMCALL, XSETBV, MONITOR, MWAIT, RDTSCP.
        [0x0f, 0x01, 0xd9 | 0xd1 | 0xc8 | 0xc9 | 0xf9, ..] => 3,
        _ => return None,
    };
    let len = i + opcode;
    (len <= MAX_LENGTH && len <= code.len()).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        assert_eq!(length(&[0x0f, 0xa2], false), Some(2), "CPUID");
        assert_eq!(length(&[0x66, 0x0f, 0xa2], false), Some(3), "with an operand-size prefix");
        assert_eq!(length(&[0x0f, 0x01, 0xd9], false), Some(3), "VMMCALL");
        assert_eq!(length(&[0x48, 0x0f, 0x32], true), Some(3), "REX.W RDMSR in 64-bit code");
        assert_eq!(length(&[0x48, 0x0f, 0x32], false), None, "DEC EAX outside 64-bit code");
        assert_eq!(length(&[0xee], false), Some(1), "OUT DX, AL");
        assert_eq!(length(&[0xe6, 0x80], false), Some(2), "OUT 80h, AL");
        assert_eq!(length(&[0xf4], false), Some(1), "HLT");
        assert_eq!(length(&[0x90], false), None, "not one the handlers step over");
        assert_eq!(length(&[0x0f], false), None, "cut short");
        assert_eq!(length(&[0x66; 15], false), None, "prefixes only");
        let mut long = [0x66u8; 15];
        long[13] = 0x0f;
        long[14] = 0xa2;
        assert_eq!(length(&long, false), Some(15));
    }
}
