//! The local APIC's interrupt command register, as a hypervisor that starts
//! application processors for its guest must read it (SDM Vol. 3A §11.6.1
//! "Interrupt Command Register (ICR)", Figure 11-12 "Interrupt Command
//! Register (ICR)"; x2APIC: §11.12.9 "ICR Operation in x2APIC Mode", the
//! destination in bits 63:32 of one 64-bit write).

/// Offsets of the xAPIC ICR's two halves in the APIC page.
pub const XAPIC_ICR_LOW: u64 = 0x300;
pub const XAPIC_ICR_HIGH: u64 = 0x310;
/// The x2APIC ICR.
pub const X2APIC_ICR_MSR: u32 = 0x830;

const DELIVERY_MODE: u32 = 0b111 << 8;
const DELIVERY_INIT: u32 = 0b101 << 8;
const DELIVERY_STARTUP: u32 = 0b110 << 8;
const DEST_MODE_LOGICAL: u32 = 1 << 11;
const LEVEL_ASSERT: u32 = 1 << 14;
const TRIGGER_LEVEL: u32 = 1 << 15;
const SHORTHAND: u32 = 0b11 << 18;

/// What an ICR write (low half `low`, destination APIC ID `dest`) sends, as
/// far as starting processors goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipi {
    /// INIT (asserted) to the one processor with APIC ID `dest`.
    Init { dest: u32 },
    /// Start-up IPI to one processor.
    Startup { dest: u32, vector: u8 },
    /// INIT or a start-up IPI to several processors at once (a shorthand or a
    /// logical destination): it could reach processors the hypervisor does
    /// not run, which would then run the OS outside it. Linux sends none.
    Many,
    /// Anything else (other modes, INIT de-assert).
    Other,
}

/// Decode an ICR write. Only physical-destination IPIs without a shorthand
/// name one processor.
pub fn decode(low: u32, dest: u32) -> Ipi {
    let targeted = low & SHORTHAND == 0 && low & DEST_MODE_LOGICAL == 0;
    // INIT level de-assert (level 0, trigger level) only resyncs arbitration IDs.
    let deassert = low & LEVEL_ASSERT == 0 && low & TRIGGER_LEVEL != 0;
    match low & DELIVERY_MODE {
        DELIVERY_INIT if deassert => Ipi::Other,
        DELIVERY_INIT if targeted => Ipi::Init { dest },
        DELIVERY_STARTUP if targeted => Ipi::Startup { dest, vector: low as u8 },
        DELIVERY_INIT | DELIVERY_STARTUP => Ipi::Many,
        _ => Ipi::Other,
    }
}

/// `low` with its start-up vector replaced by `vector`.
pub const fn with_vector(low: u32, vector: u8) -> u32 {
    (low & !0xff) | vector as u32
}

/// The destination APIC ID of an xAPIC ICR high half (bits 31:24).
pub const fn xapic_destination(high: u32) -> u32 {
    high >> 24
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_init_sipi_sequence() {
        // apic_icr_write(APIC_INT_LEVELTRIG | APIC_INT_ASSERT | APIC_DM_INIT, id)
        assert_eq!(decode(0xc500, 1), Ipi::Init { dest: 1 });
        // INIT de-assert: APIC_INT_LEVELTRIG | APIC_DM_INIT
        assert_eq!(decode(0x8500, 1), Ipi::Other);
        // APIC_DM_STARTUP | (0x96000 >> 12)
        assert_eq!(decode(0x0696, 1), Ipi::Startup { dest: 1, vector: 0x96 });
        assert_eq!(xapic_destination(0x0100_0000), 1);
    }

    #[test]
    fn broadcast_logical_and_other_ipis_pass() {
        assert_eq!(decode(0xc500 | 0b11 << 18, 0), Ipi::Many, "INIT to all but self");
        assert_eq!(decode(0xc500 | 1 << 11, 1), Ipi::Many, "logical destination");
        assert_eq!(decode(0x0696 | 0b11 << 18, 0), Ipi::Many, "SIPI to all but self");
        assert_eq!(decode(0x8500 | 0b11 << 18, 0), Ipi::Other, "INIT de-assert to all");
        assert_eq!(with_vector(0x0696, 0x9e), 0x069e);
        assert_eq!(decode(0x00fd, 1), Ipi::Other, "a fixed interrupt");
        assert_eq!(decode(0x0400, 1), Ipi::Other, "an NMI");
    }
}
