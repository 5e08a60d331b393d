//! How an OS ends the machine, as seen from the I/O ports a pass-through
//! hypervisor traps: ACPI sleep through the PM1 control blocks (ACPI 6.5
//! §4.8.3.2.1 "PM1 Control Registers": SLP_TYP in bits 12:10, SLP_EN bit 13),
//! and reset through the reset control register 0xCF9, the keyboard
//! controller's pulse command 0xFE, or the FADT's reset register (ACPI 6.5
//! §4.8.3.6 "Reset Register").

use core::fmt;

pub const RESET_CONTROL_PORT: u16 = 0xcf9;
/// 0xCF9 bit 2, RST_CPU: a 0-to-1 write starts the reset (bits 1 and 3 pick its kind).
const RST_CPU: u64 = 1 << 2;
pub const KBC_COMMAND_PORT: u16 = 0x64;
/// 8042 "pulse output port" commands F0H-FFH pulse the output-port bits whose
/// command bits are 0; bit 0 is the CPU reset line (FEH is the usual one).
const KBC_PULSE_MASK: u64 = 0xf1;
const KBC_PULSE_RESET: u64 = 0xf0;
/// System control port A: bit 0, "fast reset", also resets the processors only.
const PORT_92: u16 = 0x92;
const SLP_EN: u64 = 1 << 13;

/// A PM1 control block: its I/O port and length in bytes (FADT PM1_CNT_LEN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub port: u16,
    pub len: u8,
}

/// The machine's power and reset ports, from the FADT and the DSDT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ports {
    pub pm1a_cnt: Option<Block>,
    pub pm1b_cnt: Option<Block>,
    /// The FADT reset register when it is in I/O space: port and value.
    pub reset: Option<(u16, u8)>,
    /// SLP_TYPa and SLP_TYPb of \_S5, when the DSDT defines it plainly.
    pub s5: Option<(u8, u8)>,
}

/// What a write to a trapped port asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    PowerOff,
    /// A sleep state other than S5 (SLP_TYP given): not supported here.
    Sleep(u8),
    Reset,
    /// Nothing that ends the machine.
    None,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::PowerOff => f.write_str("poweroff"),
            Request::Sleep(t) => write!(f, "sleep (SLP_TYP={t})"),
            Request::Reset => f.write_str("reset"),
            Request::None => f.write_str("none"),
        }
    }
}

impl Ports {
    /// Every port to trap (each byte of each block).
    pub fn trapped(&self) -> impl Iterator<Item = u16> + '_ {
        let block = |b: Option<Block>| b.into_iter().flat_map(|b| (0..b.len.max(1) as u16).map(move |i| b.port + i));
        block(self.pm1a_cnt)
            .chain(block(self.pm1b_cnt))
            .chain([RESET_CONTROL_PORT, KBC_COMMAND_PORT])
            .chain(self.reset.map(|(p, _)| p))
    }

    /// Classify an OUT of `size` bytes of `value` to `port`.
    pub fn classify(&self, port: u16, size: u8, value: u64) -> Request {
        let value = value & (u64::MAX >> (64 - 8 * size as u32));
        for b in [self.pm1a_cnt, self.pm1b_cnt].into_iter().flatten() {
            if port >= b.port && port < b.port + b.len.max(1) as u16 {
                // A write at byte k of the block carries bits 8k and up.
                let cnt = value << (8 * (port - b.port));
                if cnt & SLP_EN == 0 {
                    return Request::None;
                }
                let typ = ((cnt >> 10) & 7) as u8;
                let is_a = Some(b) == self.pm1a_cnt;
                return match self.s5 {
                    Some((a, bb)) if typ != if is_a { a } else { bb } => Request::Sleep(typ),
                    _ => Request::PowerOff,
                };
            }
        }
        if let Some((p, v)) = self.reset {
            if port == p && value == v as u64 {
                return Request::Reset;
            }
        }
        match port {
            RESET_CONTROL_PORT if value & RST_CPU != 0 => Request::Reset,
            KBC_COMMAND_PORT if value & KBC_PULSE_MASK == KBC_PULSE_RESET => Request::Reset,
            _ => Request::None,
        }
    }
}

/// Whether a reset write resets the platform (cold): 0xCF9 with SYS_RST
/// (bit 1) and RST_CPU, or an FADT reset register elsewhere than the
/// warm-reset ports. The keyboard controller's pulse, port 92H and 0xCF9
/// without SYS_RST reset the processors only (warm: the chipset signals INIT).
pub fn is_cold_reset(ports: &Ports, port: u16, value: u64) -> bool {
    const SYS_RST: u64 = 1 << 1;
    match port {
        RESET_CONTROL_PORT => value & (SYS_RST | RST_CPU) == SYS_RST | RST_CPU,
        KBC_COMMAND_PORT | PORT_92 => false,
        p => ports.reset.is_some_and(|(reset, _)| reset == p),
    }
}

/// SLP_TYPa and SLP_TYPb of the \_S5 object in AML (a DSDT's body): the
/// common form `Name (_S5, Package (n) { a, b, ... })`, elements as ZeroOp,
/// OneOp or BytePrefix constants (ACPI 6.5 §20.2 "AML Grammar Definition").
/// None when \_S5 is absent or not in that form.
pub fn s5_from_aml(aml: &[u8]) -> Option<(u8, u8)> {
    const NAME_OP: u8 = 0x08;
    const PACKAGE_OP: u8 = 0x12;
    let at = aml.windows(4).position(|w| w == b"_S5_")?;
    // NameOp, optionally a root prefix '\', then the name.
    let named = at >= 1 && (aml[at - 1] == NAME_OP || (at >= 2 && aml[at - 1] == b'\\' && aml[at - 2] == NAME_OP));
    let mut p = at + 4;
    if !named || *aml.get(p)? != PACKAGE_OP {
        return None;
    }
    p += 1;
    // PkgLength: bits 7:6 of the lead byte count the bytes that follow.
    p += 1 + (*aml.get(p)? >> 6) as usize;
    let count = *aml.get(p)?;
    p += 1;
    let mut element = || -> Option<u8> {
        let op = *aml.get(p)?;
        p += 1;
        match op {
            0x00 => Some(0),
            0x01 => Some(1),
            0x0a => {
                p += 1;
                aml.get(p - 1).copied()
            }
            _ => None,
        }
    };
    let a = element()?;
    let b = if count >= 2 { element()? } else { a };
    Some((a & 7, b & 7))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bochs() -> Ports {
        Ports { pm1a_cnt: Some(Block { port: 0xb004, len: 2 }), pm1b_cnt: None, reset: None, s5: Some((0, 0)) }
    }

    #[test]
    fn slp_en_with_the_s5_type_is_poweroff() {
        let p = bochs();
        assert_eq!(p.classify(0xb004, 2, 0x2000), Request::PowerOff);
        assert_eq!(p.classify(0xb004, 2, 0x0001), Request::None, "SCI_EN only");
        assert_eq!(p.classify(0xb004, 2, 0x2400), Request::Sleep(1), "S1");
        // The high byte written on its own: SLP_EN is its bit 5.
        assert_eq!(p.classify(0xb005, 1, 0x20), Request::PowerOff);
        // Without a known \_S5 any SLP_EN write counts as poweroff.
        assert_eq!(Ports { s5: None, ..p }.classify(0xb004, 2, 0x3400), Request::PowerOff);
    }

    #[test]
    fn the_reset_paths() {
        let p = Ports { reset: Some((0xcf9, 0x06)), ..bochs() };
        assert_eq!(p.classify(0xcf9, 1, 0x06), Request::Reset);
        assert_eq!(p.classify(0xcf9, 1, 0x02), Request::None, "SYS_RST alone arms, does not reset");
        assert_eq!(p.classify(0xcf9, 1, 0x0e), Request::Reset);
        assert_eq!(p.classify(0x64, 1, 0xfe), Request::Reset);
        assert_eq!(p.classify(0x64, 1, 0xf0), Request::Reset, "every pulse with bit 0 low");
        assert_eq!(p.classify(0x64, 1, 0xff), Request::None, "a pulse of no line");
        assert_eq!(p.classify(0x64, 1, 0xf1), Request::None, "bit 0 not pulsed");
        assert_eq!(p.classify(0x64, 1, 0xd1), Request::None);
        let q = Ports { reset: Some((0x92, 0x01)), ..bochs() };
        assert_eq!(q.classify(0x92, 1, 0x01), Request::Reset);
        assert!(is_cold_reset(&p, 0xcf9, 0x06) && is_cold_reset(&p, 0xcf9, 0x0e));
        assert!(!is_cold_reset(&p, 0xcf9, 0x04), "RST_CPU without SYS_RST is warm");
        assert!(!is_cold_reset(&p, 0x64, 0xfe));
        assert!(!is_cold_reset(&q, 0x92, 0x01), "port 92H resets the processors only");
        let r = Ports { reset: Some((0xb2, 0x0f)), ..bochs() };
        assert!(is_cold_reset(&r, 0xb2, 0x0f), "an FADT reset register elsewhere is the platform's");
        let trapped: alloc::vec::Vec<u16> = q.trapped().collect();
        assert_eq!(trapped, [0xb004, 0xb005, 0xcf9, 0x64, 0x92]);
    }

    #[test]
    fn s5_from_the_usual_aml() {
        // Name (\_S5, Package (0x04) { Zero, Zero, Zero, Zero })
        let aml = [0x10, 0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(s5_from_aml(&aml), Some((0, 0)));
        // Name (_S5, Package (0x02) { 0x07, 0x07 })
        let aml = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x02, 0x0a, 0x07, 0x0a, 0x07];
        assert_eq!(s5_from_aml(&aml), Some((7, 7)));
        // A method, not a package; and no \_S5 at all.
        let aml = [0x14, 0x08, b'_', b'S', b'5', b'_', 0x00];
        assert_eq!(s5_from_aml(&aml), None);
        assert_eq!(s5_from_aml(b"\x08_S4_\x12\x06\x02\x00\x00"), None);
    }
}
