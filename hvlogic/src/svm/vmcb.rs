//! The virtual machine control block (VMCB): one 4 KiB page, the control
//! area at 000h-3FFh and the state save area from 400h (APM Vol. 2 Appendix B
//! "Layout of VMCB": Table B-1 "VMCB Layout, Control Area", Table B-2 "VMCB
//! Layout, State Save Area"). Offsets below are from the start of the VMCB.

/// Size of a VMCB, and its alignment (a 4 KiB-aligned page).
pub const SIZE: usize = 4096;

/// Control area (APM Vol. 2 Table B-1 "VMCB Layout, Control Area").
pub mod control {
    /// u32: bits 15:0 intercept reads of CR0-15, bits 31:16 writes.
    pub const INTERCEPT_CR: usize = 0x000;
    /// u32: bits 15:0 intercept reads of DR0-15, bits 31:16 writes.
    pub const INTERCEPT_DR: usize = 0x004;
    /// u32: intercept exception vectors 0-31.
    pub const INTERCEPT_EXCEPTIONS: usize = 0x008;
    /// u32: `intercept1::*`.
    pub const INTERCEPT1: usize = 0x00c;
    /// u32: `intercept2::*`.
    pub const INTERCEPT2: usize = 0x010;
    /// u32: `intercept3::*`.
    pub const INTERCEPT3: usize = 0x014;
    /// u16: PAUSE filter threshold; u16 at 03Eh: PAUSE filter count.
    pub const PAUSE_FILTER_THRESHOLD: usize = 0x03c;
    pub const PAUSE_FILTER_COUNT: usize = 0x03e;
    /// u64: physical base address of the I/O permissions map (12 KiB).
    pub const IOPM_BASE_PA: usize = 0x040;
    /// u64: physical base address of the MSR permissions map (8 KiB).
    pub const MSRPM_BASE_PA: usize = 0x048;
    pub const TSC_OFFSET: usize = 0x050;
    /// u32: the guest's ASID; u8 at 05Ch: TLB_CONTROL.
    pub const GUEST_ASID: usize = 0x058;
    pub const TLB_CONTROL: usize = 0x05c;
    /// u64: V_TPR (7:0), V_IRQ (8), VGIF (9), V_INTR_PRIO (19:16),
    /// V_IGN_TPR (20), V_INTR_MASKING (24), VGIF enable (25), AVIC enable
    /// (31), V_INTR_VECTOR (39:32).
    pub const VINTR: usize = 0x060;
    /// u64: bit 0 INTERRUPT_SHADOW, bit 1 GUEST_INTERRUPT_MASK.
    pub const INTERRUPT_SHADOW: usize = 0x068;
    /// u64: EXITCODE (`super::super::exit_code`).
    pub const EXITCODE: usize = 0x070;
    pub const EXITINFO1: usize = 0x078;
    pub const EXITINFO2: usize = 0x080;
    /// u64: EXITINTINFO, an event whose delivery the #VMEXIT interrupted
    /// (the EVENTINJ format).
    pub const EXITINTINFO: usize = 0x088;
    /// u64: bit 0 NP_ENABLE, bit 1 SEV, bit 2 SEV-ES, bit 3 GMET, ...
    pub const NP_CONTROL: usize = 0x090;
    pub const AVIC_APIC_BAR: usize = 0x098;
    pub const GHCB_PA: usize = 0x0a0;
    /// u64: an event to inject at VMRUN (APM Vol. 2 §15.20 "Event Injection").
    pub const EVENTINJ: usize = 0x0a8;
    /// u64: the nested page tables' root (nCR3).
    pub const N_CR3: usize = 0x0b0;
    /// u64: bit 0 LBR virtualization, bit 1 virtualized VMSAVE/VMLOAD.
    pub const LBR_VIRT: usize = 0x0b8;
    /// u32: VMCB clean bits (APM Vol. 2 §15.15.3 "VMCB Clean Field").
    pub const CLEAN_BITS: usize = 0x0c0;
    /// u64: next sequential instruction pointer (with NRIP save).
    pub const NRIP: usize = 0x0c8;
    /// u8: bytes fetched; 0D1h-0DFh: the guest's instruction bytes (decode assists).
    pub const INSN_LEN: usize = 0x0d0;
    pub const INSN_BYTES: usize = 0x0d1;
    pub const AVIC_BACKING_PAGE: usize = 0x0e0;
    pub const AVIC_LOGICAL_TABLE: usize = 0x0f0;
    pub const AVIC_PHYSICAL_TABLE: usize = 0x0f8;
    pub const VMSA_PA: usize = 0x108;
}

/// INTERCEPT1 (control offset 00Ch) bits.
pub mod intercept1 {
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const SMI: u32 = 1 << 2;
    pub const INIT: u32 = 1 << 3;
    pub const VINTR: u32 = 1 << 4;
    /// Writes of CR0 that change bits other than TS and MP.
    pub const CR0_SEL_WRITE: u32 = 1 << 5;
    pub const IDTR_READ: u32 = 1 << 6;
    pub const GDTR_READ: u32 = 1 << 7;
    pub const LDTR_READ: u32 = 1 << 8;
    pub const TR_READ: u32 = 1 << 9;
    pub const IDTR_WRITE: u32 = 1 << 10;
    pub const GDTR_WRITE: u32 = 1 << 11;
    pub const LDTR_WRITE: u32 = 1 << 12;
    pub const TR_WRITE: u32 = 1 << 13;
    pub const RDTSC: u32 = 1 << 14;
    pub const RDPMC: u32 = 1 << 15;
    pub const PUSHF: u32 = 1 << 16;
    pub const POPF: u32 = 1 << 17;
    pub const CPUID: u32 = 1 << 18;
    pub const RSM: u32 = 1 << 19;
    pub const IRET: u32 = 1 << 20;
    pub const INTN: u32 = 1 << 21;
    pub const INVD: u32 = 1 << 22;
    pub const PAUSE: u32 = 1 << 23;
    pub const HLT: u32 = 1 << 24;
    pub const INVLPG: u32 = 1 << 25;
    pub const INVLPGA: u32 = 1 << 26;
    /// IN/OUT/INS/OUTS, through the I/O permissions map.
    pub const IOIO_PROT: u32 = 1 << 27;
    /// RDMSR/WRMSR, through the MSR permissions map.
    pub const MSR_PROT: u32 = 1 << 28;
    pub const TASK_SWITCH: u32 = 1 << 29;
    pub const FERR_FREEZE: u32 = 1 << 30;
    /// Shutdown events (a triple fault, among others).
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// INTERCEPT2 (control offset 010h) bits.
pub mod intercept2 {
    /// VMRUN must be intercepted (APM Vol. 2 §15.5.1 "Basic Operation").
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const RDTSCP: u32 = 1 << 7;
    pub const ICEBP: u32 = 1 << 8;
    pub const WBINVD: u32 = 1 << 9;
    pub const MONITOR: u32 = 1 << 10;
    pub const MWAIT: u32 = 1 << 11;
    pub const MWAIT_ARMED: u32 = 1 << 12;
    pub const XSETBV: u32 = 1 << 13;
    pub const RDPRU: u32 = 1 << 14;
    /// Writes of EFER, after the instruction completes (a trap).
    pub const EFER_WRITE_TRAP: u32 = 1 << 15;
}

/// INTERCEPT3 (control offset 014h) bits.
pub mod intercept3 {
    pub const INVLPGB: u32 = 1 << 0;
    pub const INVLPGB_ILLEGAL: u32 = 1 << 1;
    pub const INVPCID: u32 = 1 << 2;
    pub const MCOMMIT: u32 = 1 << 3;
    pub const TLBSYNC: u32 = 1 << 4;
}

/// VINTR (control offset 060h) bits.
pub mod vintr {
    pub const V_TPR_MASK: u64 = 0xff;
    pub const V_IRQ: u64 = 1 << 8;
    pub const V_GIF: u64 = 1 << 9;
    /// A virtual NMI is pending (with NMI virtualization).
    pub const V_NMI: u64 = 1 << 11;
    /// Virtual NMIs are masked (with NMI virtualization).
    pub const V_NMI_MASK: u64 = 1 << 12;
    pub const V_INTR_PRIO_SHIFT: u64 = 16;
    pub const V_IGN_TPR: u64 = 1 << 20;
    /// Virtual interrupt masking: the guest's RFLAGS.IF and CR8 govern
    /// virtual interrupts only; physical ones are masked by the host's
    /// RFLAGS.IF (APM Vol. 2 §15.21.1 "Physical (INTR) Interrupt Masking in
    /// EFLAGS").
    pub const V_INTR_MASKING: u64 = 1 << 24;
    pub const V_GIF_ENABLE: u64 = 1 << 25;
    /// NMI virtualization; requires the NMI intercept, or VMRUN exits with
    /// VMEXIT_INVALID (APM Vol. 2 §15.21.10 "NMI Virtualization").
    pub const V_NMI_ENABLE: u64 = 1 << 26;
    pub const AVIC_ENABLE: u64 = 1 << 31;
    pub const V_INTR_VECTOR_SHIFT: u64 = 32;
}

/// NP_CONTROL (control offset 090h) bits.
pub mod np {
    pub const ENABLE: u64 = 1 << 0;
    pub const SEV: u64 = 1 << 1;
    pub const SEV_ES: u64 = 1 << 2;
    pub const GMET: u64 = 1 << 3;
    /// Supervisor shadow stack check.
    pub const SSS_CHECK: u64 = 1 << 4;
    /// Virtual transparent encryption.
    pub const VTE: u64 = 1 << 5;
    /// Read-only guest page tables (APM Vol. 2 §15.25.5 "Nested Table Walk").
    pub const ROGPT: u64 = 1 << 6;
    /// INVLPGB/TLBSYNC enable.
    pub const INVLPGB_TLBSYNC: u64 = 1 << 7;
}

/// TLB_CONTROL values (APM Vol. 2 §15.16.2 "TLB Flush").
pub mod tlb {
    pub const DO_NOTHING: u8 = 0;
    /// Flush the whole TLB, every ASID (any CPU with SVM).
    pub const FLUSH_ALL: u8 = 1;
    /// Flush this guest's ASID (FlushByAsid).
    pub const FLUSH_ASID: u8 = 3;
    /// Flush this guest's non-global entries (FlushByAsid). Every other
    /// encoding is reserved (APM Vol. 2 Table 15-9 "TLB Control Byte Encodings").
    pub const FLUSH_ASID_NON_GLOBAL: u8 = 7;
}

/// State save area (APM Vol. 2 Table B-2 "VMCB Layout, State Save Area"),
/// from VMCB offset 400h. A segment is 16 bytes: selector (u16), attributes
/// (u16), limit (u32), base (u64).
pub mod save {
    pub const ES: usize = 0x400;
    pub const CS: usize = 0x410;
    pub const SS: usize = 0x420;
    pub const DS: usize = 0x430;
    pub const FS: usize = 0x440;
    pub const GS: usize = 0x450;
    pub const GDTR: usize = 0x460;
    pub const LDTR: usize = 0x470;
    pub const IDTR: usize = 0x480;
    pub const TR: usize = 0x490;
    /// u8: the guest's CPL (VMRUN takes it from here, not from SS.DPL).
    pub const CPL: usize = 0x4cb;
    pub const EFER: usize = 0x4d0;
    pub const CR4: usize = 0x548;
    pub const CR3: usize = 0x550;
    pub const CR0: usize = 0x558;
    pub const DR7: usize = 0x560;
    pub const DR6: usize = 0x568;
    pub const RFLAGS: usize = 0x570;
    pub const RIP: usize = 0x578;
    pub const RSP: usize = 0x5d8;
    pub const S_CET: usize = 0x5e0;
    pub const SSP: usize = 0x5e8;
    pub const ISST_ADDR: usize = 0x5f0;
    pub const RAX: usize = 0x5f8;
    pub const STAR: usize = 0x600;
    pub const LSTAR: usize = 0x608;
    pub const CSTAR: usize = 0x610;
    pub const SFMASK: usize = 0x618;
    pub const KERNEL_GS_BASE: usize = 0x620;
    pub const SYSENTER_CS: usize = 0x628;
    pub const SYSENTER_ESP: usize = 0x630;
    pub const SYSENTER_EIP: usize = 0x638;
    pub const CR2: usize = 0x640;
    pub const G_PAT: usize = 0x668;
    pub const DBGCTL: usize = 0x670;
    pub const BR_FROM: usize = 0x678;
    pub const BR_TO: usize = 0x680;
    pub const LAST_EXCP_FROM: usize = 0x688;
    pub const LAST_EXCP_TO: usize = 0x690;

    /// Offsets inside a segment.
    pub const SEL: usize = 0;
    pub const ATTRIB: usize = 2;
    pub const LIMIT: usize = 4;
    pub const BASE: usize = 8;

    /// The segments in save-area order, with their names.
    pub const SEGMENTS: [(usize, &str); 10] = [
        (ES, "ES"),
        (CS, "CS"),
        (SS, "SS"),
        (DS, "DS"),
        (FS, "FS"),
        (GS, "GS"),
        (GDTR, "GDTR"),
        (LDTR, "LDTR"),
        (IDTR, "IDTR"),
        (TR, "TR"),
    ];
}

/// A segment's attributes in the VMCB's 12-bit form: bits 7:0 are the
/// descriptor's bits 47:40 (type, S, DPL, P), bits 11:8 its bits 55:52 (AVL,
/// L, D/B, G) (APM Vol. 2 Table B-2 "VMCB Layout, State Save Area", note on
/// segment attributes). VMX's access rights put the second group at 15:12.
pub const fn attrib_from_access_rights(ar: u32) -> u16 {
    ((ar & 0xff) | ((ar >> 4) & 0xf00)) as u16
}

pub const fn access_rights_from_attrib(attrib: u16) -> u32 {
    (attrib as u32 & 0xff) | ((attrib as u32 & 0xf00) << 4)
}

/// Attribute bits, by name.
pub mod attrib {
    pub const TYPE_MASK: u16 = 0xf;
    pub const S: u16 = 1 << 4;
    pub const DPL_SHIFT: u16 = 5;
    pub const P: u16 = 1 << 7;
    pub const AVL: u16 = 1 << 8;
    pub const L: u16 = 1 << 9;
    pub const DB: u16 = 1 << 10;
    pub const G: u16 = 1 << 11;
}

/// EVENTINJ and EXITINTINFO (APM Vol. 2 §15.20 "Event Injection"): vector
/// 7:0, type 10:8, EV (error code valid) 11, V (valid) 31, error code 63:32.
pub mod event {
    pub const VALID: u64 = 1 << 31;
    pub const ERROR_CODE_VALID: u64 = 1 << 11;
    pub const TYPE_SHIFT: u64 = 8;
    /// External or virtual interrupt.
    pub const TYPE_INTR: u64 = 0;
    pub const TYPE_NMI: u64 = 2;
    pub const TYPE_EXCEPTION: u64 = 3;
    /// Software interrupt (INTn).
    pub const TYPE_SOFT_INT: u64 = 4;

    /// An exception, with its error code if it has one.
    pub const fn exception(vector: u8, error_code: Option<u32>) -> u64 {
        let base = VALID | TYPE_EXCEPTION << TYPE_SHIFT | vector as u64;
        match error_code {
            Some(e) => base | ERROR_CODE_VALID | (e as u64) << 32,
            None => base,
        }
    }

    pub const NMI: u64 = VALID | TYPE_NMI << TYPE_SHIFT | 2;

    pub const fn vector(e: u64) -> u8 {
        e as u8
    }

    pub const fn kind(e: u64) -> u64 {
        (e >> TYPE_SHIFT) & 7
    }
}

/// The MSR permissions map: 8 KiB, two bits per MSR (read, then write), for
/// three ranges of 8,192 MSRs each (APM Vol. 2 §15.11 "MSR Intercepts").
pub mod msrpm {
    pub const SIZE: usize = 8192;

    /// The bit index of `msr`'s read-intercept bit (its write bit is the next),
    /// or None for an MSR outside the three ranges (always intercepted).
    pub const fn read_bit(msr: u32) -> Option<usize> {
        let (base, offset) = match msr {
            0x0000_0000..=0x0000_1fff => (0, msr),
            0xc000_0000..=0xc000_1fff => (0x800 * 8, msr - 0xc000_0000),
            0xc001_0000..=0xc001_1fff => (0x1000 * 8, msr - 0xc001_0000),
            _ => return None,
        };
        Some(base + 2 * offset as usize)
    }
}

/// The I/O permissions map: 12 KiB, one bit per port (APM Vol. 2 §15.10.1
/// "I/O Permissions Map"); the bits past port FFFFh cover accesses that
/// wrap around.
pub mod iopm {
    pub const SIZE: usize = 12 * 1024;
}

/// One segment of the state save area: selector, 12-bit attributes, limit, base.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

impl Segment {
    pub const fn new(selector: u16, attrib: u16, limit: u32, base: u64) -> Segment {
        Segment { selector, attrib, limit, base }
    }
}

/// A VMCB image: the 4 KiB page as bytes, every field little-endian at the
/// offsets of `control` and `save`. The kernel can keep its VMCB page as one
/// (`#[repr(transparent)]` over the bytes) or copy one in with `from_bytes`;
/// the VMRUN checker, the entry fuzzer and the tests read and write it with
/// the same helpers.
#[derive(Clone, PartialEq, Eq)]
#[repr(transparent)]
pub struct Vmcb(pub [u8; SIZE]);

impl core::fmt::Debug for Vmcb {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // 4 KiB of bytes helps nobody: the fields the checker reads.
        f.debug_struct("Vmcb")
            .field("intercept2", &self.read_u32(control::INTERCEPT2))
            .field("asid", &self.read_u32(control::GUEST_ASID))
            .field("np_control", &self.read_u64(control::NP_CONTROL))
            .field("eventinj", &self.read_u64(control::EVENTINJ))
            .field("efer", &self.read_u64(save::EFER))
            .field("cr0", &self.read_u64(save::CR0))
            .field("cr3", &self.read_u64(save::CR3))
            .field("cr4", &self.read_u64(save::CR4))
            .field("cs", &self.segment(save::CS))
            .field("rip", &self.read_u64(save::RIP))
            .finish()
    }
}

impl Default for Vmcb {
    fn default() -> Vmcb {
        Vmcb::zeroed()
    }
}

impl Vmcb {
    pub const fn zeroed() -> Vmcb {
        Vmcb([0; SIZE])
    }

    /// A copy of a VMCB page read as bytes.
    pub fn from_bytes(bytes: &[u8; SIZE]) -> Vmcb {
        Vmcb(*bytes)
    }

    pub fn bytes(&self) -> &[u8; SIZE] {
        &self.0
    }

    /// The `width` bytes (1, 2, 4 or 8) at `offset`, little-endian, zero-extended.
    pub fn read(&self, offset: usize, width: usize) -> u64 {
        let mut v = [0u8; 8];
        v[..width].copy_from_slice(&self.0[offset..offset + width]);
        u64::from_le_bytes(v)
    }

    /// Write the low `width` bytes (1, 2, 4 or 8) of `value` at `offset`.
    pub fn write(&mut self, offset: usize, width: usize, value: u64) {
        self.0[offset..offset + width].copy_from_slice(&value.to_le_bytes()[..width]);
    }

    pub fn read_u8(&self, offset: usize) -> u8 {
        self.0[offset]
    }
    pub fn read_u16(&self, offset: usize) -> u16 {
        self.read(offset, 2) as u16
    }
    pub fn read_u32(&self, offset: usize) -> u32 {
        self.read(offset, 4) as u32
    }
    pub fn read_u64(&self, offset: usize) -> u64 {
        self.read(offset, 8)
    }
    pub fn write_u8(&mut self, offset: usize, value: u8) {
        self.0[offset] = value;
    }
    pub fn write_u16(&mut self, offset: usize, value: u16) {
        self.write(offset, 2, value as u64);
    }
    pub fn write_u32(&mut self, offset: usize, value: u32) {
        self.write(offset, 4, value as u64);
    }
    pub fn write_u64(&mut self, offset: usize, value: u64) {
        self.write(offset, 8, value);
    }

    /// The segment at `at` (one of `save::ES` .. `save::TR`).
    pub fn segment(&self, at: usize) -> Segment {
        Segment {
            selector: self.read_u16(at + save::SEL),
            attrib: self.read_u16(at + save::ATTRIB),
            limit: self.read_u32(at + save::LIMIT),
            base: self.read_u64(at + save::BASE),
        }
    }

    pub fn set_segment(&mut self, at: usize, s: Segment) {
        self.write_u16(at + save::SEL, s.selector);
        self.write_u16(at + save::ATTRIB, s.attrib);
        self.write_u32(at + save::LIMIT, s.limit);
        self.write_u64(at + save::BASE, s.base);
    }

    /// INTERCEPT1 (offset 00Ch) has `bit` (`intercept1::*`).
    pub fn has_intercept1(&self, bit: u32) -> bool {
        self.read_u32(control::INTERCEPT1) & bit != 0
    }
    /// INTERCEPT2 (offset 010h) has `bit` (`intercept2::*`).
    pub fn has_intercept2(&self, bit: u32) -> bool {
        self.read_u32(control::INTERCEPT2) & bit != 0
    }

    /// Real mode at the reset vector, F000:FFF0 (CS base FFFF0000h), as the
    /// proof guest starts: CR0 = ET, EFER = SVME, nested paging on, the
    /// intercepts VMRUN, VMMCALL, HLT, CPUID, SHUTDOWN, IOIO and MSR, real-mode
    /// segment attributes, G_PAT at its reset value, RFLAGS = 2, DR6 and DR7
    /// at their reset values. It passes every VMRUN check (on a CPU with
    /// nested paging and `at`'s addresses within its physical-address width).
    pub fn proof_guest_real_mode(at: &ProofAddresses) -> Vmcb {
        let mut v = Vmcb::zeroed();
        v.proof_controls(at);
        // Real-mode attributes: present, S, accessed read/write data (93h) or
        // accessed execute/read code (9Bh); LDTR an LDT (82h) and TR a busy
        // 16-bit TSS (83h), as at reset.
        v.set_segment(save::CS, Segment::new(0xf000, 0x9b, 0xffff, 0xffff_0000));
        for seg in [save::ES, save::SS, save::DS, save::FS, save::GS] {
            v.set_segment(seg, Segment::new(0, 0x93, 0xffff, 0));
        }
        v.set_segment(save::GDTR, Segment::new(0, 0, 0xffff, 0));
        v.set_segment(save::IDTR, Segment::new(0, 0, 0xffff, 0));
        v.set_segment(save::LDTR, Segment::new(0, 0x82, 0xffff, 0));
        v.set_segment(save::TR, Segment::new(0, 0x83, 0xffff, 0));
        v.write_u8(save::CPL, 0);
        v.write_u64(save::EFER, super::EFER_SVME);
        v.write_u64(save::CR0, 0x10);
        v.write_u64(save::CR3, 0);
        v.write_u64(save::CR4, 0);
        v.write_u64(save::RIP, 0xfff0);
        v
    }

    /// 64-bit mode: CR0 = PG, WP, NE, ET, MP, PE; CR4 = PAE; EFER = SVME,
    /// LMA, LME; a 64-bit code segment (L=1, D=0) and flat data segments from
    /// a GDT at `at.gdt`; a busy 64-bit TSS; CR3 at `at.guest_cr3` (guest
    /// physical, under nested paging). Controls as the real-mode image.
    pub fn proof_guest_long_mode(at: &ProofAddresses) -> Vmcb {
        let mut v = Vmcb::zeroed();
        v.proof_controls(at);
        v.set_segment(save::CS, Segment::new(0x08, 0xa9b, 0xffff_ffff, 0));
        for seg in [save::ES, save::SS, save::DS, save::FS, save::GS] {
            v.set_segment(seg, Segment::new(0x10, 0xc93, 0xffff_ffff, 0));
        }
        v.set_segment(save::GDTR, Segment::new(0, 0, 0x1f, at.gdt));
        v.set_segment(save::IDTR, Segment::new(0, 0, 0, 0));
        v.set_segment(save::LDTR, Segment::new(0, 0, 0, 0));
        v.set_segment(save::TR, Segment::new(0x18, 0x8b, 0x67, 0));
        v.write_u8(save::CPL, 0);
        v.write_u64(save::EFER, super::EFER_SVME | (1 << 10) | (1 << 8));
        v.write_u64(save::CR0, 0x8001_0033);
        v.write_u64(save::CR3, at.guest_cr3);
        v.write_u64(save::CR4, 0x20);
        v.write_u64(save::RIP, at.entry);
        v.write_u64(save::RSP, at.entry + 0x1000);
        v
    }

    /// What both proof images share: intercepts, maps, ASID, nested paging,
    /// and the reset values of RFLAGS, DR6, DR7 and G_PAT.
    fn proof_controls(&mut self, at: &ProofAddresses) {
        use intercept1 as i1;
        use intercept2 as i2;
        let one = i1::HLT | i1::CPUID | i1::SHUTDOWN | i1::IOIO_PROT | i1::MSR_PROT;
        self.write_u32(control::INTERCEPT1, one);
        self.write_u32(control::INTERCEPT2, i2::VMRUN | i2::VMMCALL);
        self.write_u64(control::IOPM_BASE_PA, at.iopm);
        self.write_u64(control::MSRPM_BASE_PA, at.msrpm);
        self.write_u32(control::GUEST_ASID, at.asid);
        self.write_u64(control::NP_CONTROL, np::ENABLE);
        self.write_u64(control::N_CR3, at.n_cr3);
        self.write_u64(save::RFLAGS, 2);
        self.write_u64(save::DR6, 0xffff_0ff0);
        self.write_u64(save::DR7, 0x400);
        self.write_u64(save::G_PAT, PAT_RESET);
    }
}

/// The PAT's reset value: WB, WT, UC-, UC, WB, WT, UC-, UC (APM Vol. 2
/// §7.8.1 "PAT Register").
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;

/// Where a proof-guest VMCB points: the permission maps and the nested page
/// tables (system physical), the guest's page tables, GDT and entry point
/// (guest physical), and the ASID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProofAddresses {
    pub iopm: u64,
    pub msrpm: u64,
    pub n_cr3: u64,
    pub asid: u32,
    pub guest_cr3: u64,
    pub gdt: u64,
    pub entry: u64,
}

impl ProofAddresses {
    /// Addresses for tests: everything below 4 GiB, page aligned.
    pub const EXAMPLE: ProofAddresses = ProofAddresses {
        iopm: 0x0020_0000,
        msrpm: 0x0020_4000,
        n_cr3: 0x0030_0000,
        asid: 1,
        guest_cr3: 0x1000,
        gdt: 0x5000,
        entry: 0x8000,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_area_offsets_match_the_apm_table() {
        // Spot checks against APM Vol. 2 Table B-2 (offset from the VMCB start).
        assert_eq!(save::TR, 0x490);
        assert_eq!(save::EFER, 0x4d0);
        assert_eq!(save::CR4, 0x548);
        assert_eq!(save::RIP, 0x578);
        assert_eq!(save::RSP, 0x5d8);
        assert_eq!(save::RAX, 0x5f8);
        assert_eq!(save::CR2, 0x640);
        assert_eq!(save::G_PAT, 0x668);
        assert_eq!(save::LAST_EXCP_TO, 0x690);
        for w in save::SEGMENTS.windows(2) {
            assert_eq!(w[1].0 - w[0].0, 16);
        }
    }

    #[test]
    fn attributes_and_access_rights() {
        // A 64-bit code segment: VMX access rights 0xa09b, VMCB attributes 0xa9b.
        assert_eq!(attrib_from_access_rights(0xa09b), 0xa9b);
        assert_eq!(access_rights_from_attrib(0xa9b), 0xa09b);
        // A flat 32-bit data segment: 0xc093 <-> 0xc93.
        assert_eq!(attrib_from_access_rights(0xc093), 0xc93);
        // VMX's "unusable" bit 16 has no VMCB counterpart.
        assert_eq!(attrib_from_access_rights(0x1_0000), 0);
    }

    #[test]
    fn events() {
        assert_eq!(event::exception(13, Some(0)), 0x8000_0b0d);
        assert_eq!(event::exception(6, None), 0x8000_0306);
        assert_eq!(event::exception(14, Some(2)), 0x2_8000_0b0e);
        assert_eq!(event::NMI, 0x8000_0202);
        assert_eq!(event::kind(event::NMI), event::TYPE_NMI);
    }

    #[test]
    fn msr_permissions_map_bits() {
        assert_eq!(msrpm::read_bit(0), Some(0));
        assert_eq!(msrpm::read_bit(0x10), Some(0x20));
        assert_eq!(msrpm::read_bit(0xc000_0080), Some(0x800 * 8 + 0x100), "EFER");
        assert_eq!(msrpm::read_bit(0xc001_0114), Some(0x1000 * 8 + 0x228), "VM_CR");
        assert_eq!(msrpm::read_bit(0x4000_0000), None);
    }
}
