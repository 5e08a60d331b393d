//! `guest=fuzz`: the pure half of the guest fuzzer. A seeded generator fills
//! a small guest memory with a random program (random bytes mixed with
//! instructions that exit or touch privileged state), descriptor tables,
//! page tables and handler stubs, and chooses the start: a mode the CPU
//! supports, register values, with or without a guest IDT. The kernel
//! (`kernel/src/vmx/fuzz_guest.rs`) writes the VMCS from the plan, runs the
//! guest through the proof guest's exit handler, and tallies how each run
//! ended here (`Tally`, `classify`), printing the per-CPU line `line`.
//!
//! Run `k` of CPU `i` under seed `S` is generated from `run_seed(cpu_seed(S,
//! i), k)` alone, so `seed=S+i fuzz-runs=1 fuzz-skip=k` on one CPU replays it.

use crate::entry_fuzz::Rng;
use crate::exit_reason::{self, basic};
use crate::guest_plan::Ending;
use core::fmt;

/// Bytes of guest memory, at guest-physical (or, without EPT, guest-linear) 0.
pub const MEM_SIZE: u64 = 0x1_0000;
/// The real-mode interrupt vector table (256 far pointers).
pub const IVT: u64 = 0x0000;
/// The guest's GDT (`GDT_ENTRIES` descriptors) and its TSS.
pub const GDT: u64 = 0x0800;
pub const GDT_ENTRIES: u64 = 16;
pub const TSS: u64 = 0x0a00;
/// The protected-mode IDT (256 gates of 8 bytes, or 16 in IA-32e mode).
pub const IDT: u64 = 0x1000;
/// The guest's own page tables (used where EPT makes them the guest's):
/// 32-bit: PD, PT; PAE: PDPT, PD, PT; 4-level: PML4, PDPT, PD, PT.
pub const TABLES: u64 = 0x2000;
/// Data the program's memory operands point at (pseudo-descriptors, far
/// pointers, VMX regions, random bytes).
pub const SCRATCH: u64 = 0x6000;
/// The random program.
pub const CODE: u64 = 0x8000;
pub const CODE_END: u64 = 0xe000;
/// Interrupt-handler stubs (IRET, pop-error-code-and-IRET, HLT, VMCALL done, spin).
pub const STUBS: u64 = 0xe000;
pub const STUB_SIZE: u64 = 0x20;
/// Top of the stack (which grows down over 0xe100-0xefff).
pub const STACK_TOP: u64 = 0xf000;

/// Selectors of the guest's GDT.
pub const SEL_CODE32: u16 = 0x08;
pub const SEL_DATA: u16 = 0x10;
pub const SEL_CODE64: u16 = 0x18;
pub const SEL_CODE16: u16 = 0x20;
pub const SEL_DATA16: u16 = 0x28;
/// A 32-bit TSS (busy); in IA-32e mode its 16-byte descriptor spans 0x30-0x3f.
pub const SEL_TSS: u16 = 0x30;
/// 32-bit code whose base makes EIP wrap at 4 GiB onto the program (`Op::Wrap32`).
pub const SEL_WRAP: u16 = 0x40;
/// A call gate to `SEL_CODE32`.
pub const SEL_CALL_GATE: u16 = 0x48;
/// Ring-3 code and data.
pub const SEL_CODE32_R3: u16 = 0x50 | 3;
pub const SEL_DATA_R3: u16 = 0x58 | 3;
/// Descriptors 0x60-0x78 are random bytes.
pub const SEL_GARBAGE: u16 = 0x60;

/// What the CPU lets a guest start in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// "Unrestricted guest" (with EPT): CR0.PE and CR0.PG may be 0.
    pub unrestricted: bool,
    /// EPT: the guest's paging is its own.
    pub ept: bool,
    /// The "IA-32e mode guest" VM-entry control can be 1.
    pub ia32e: bool,
    /// IA32_EFER.NXE exists (CPUID.80000001H:EDX[20]); where it does not, the
    /// bit is reserved and VM entry refuses it (SDM Vol. 3C §27.3.1.1 "Checks
    /// on Guest Control Registers, Debug Registers, and MSRs").
    pub nx: bool,
    /// The host is SVM: the hypercall is VMMCALL, and the templates that
    /// try the host's own instructions and MSRs try SVM's (VMRUN, VMLOAD,
    /// VMSAVE, STGI, CLGI, SKINIT, INVLPGA; VM_CR, VM_HSAVE_PA, SVM_KEY)
    /// instead of VMX's. A VMX host's streams are unchanged by it.
    pub svm: bool,
}

impl Caps {
    /// What an SVM guest can start in: with nested paging every mode (SVM
    /// runs real mode and unpaged protected mode as they are), without it the
    /// paged modes on host-owned tables; the long modes where the CPU has
    /// long mode (V_INTR_MASKING keeps a 64-bit guest's CR8 to its V_TPR:
    /// APM Vol. 2 §15.21.1 "Physical (INTR) Interrupt Masking in EFLAGS").
    pub const fn svm(nested_paging: bool, long_mode: bool, nx: bool) -> Caps {
        Caps { unrestricted: nested_paging, ept: nested_paging, ia32e: long_mode, nx, svm: true }
    }
}

/// The mode a run starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real mode (unrestricted guest only).
    Real,
    /// 32-bit protected mode without paging (unrestricted guest only).
    Protected,
    /// 32-bit protected mode with 32-bit paging.
    Paged32,
    /// 32-bit protected mode with PAE paging.
    Pae,
    /// IA-32e mode, 64-bit code.
    Long64,
    /// IA-32e mode, 32-bit compatibility-mode code.
    Compat,
}

impl Mode {
    pub const ALL: [Mode; 6] = [Mode::Real, Mode::Protected, Mode::Paged32, Mode::Pae, Mode::Long64, Mode::Compat];

    pub const fn name(self) -> &'static str {
        match self {
            Mode::Real => "real",
            Mode::Protected => "protected",
            Mode::Paged32 => "paged32",
            Mode::Pae => "pae",
            Mode::Long64 => "long64",
            Mode::Compat => "compat",
        }
    }

    pub const fn supported(self, caps: Caps) -> bool {
        match self {
            // CR0.PE or CR0.PG 0 needs unrestricted guest (SDM Vol. 3C §27.3.1.1 "Checks
            // on Guest Control Registers, Debug Registers, and MSRs").
            Mode::Real | Mode::Protected => caps.unrestricted && caps.ept,
            Mode::Paged32 | Mode::Pae => true,
            Mode::Long64 | Mode::Compat => caps.ia32e,
        }
    }

    pub const fn protected(self) -> bool {
        !matches!(self, Mode::Real)
    }
    pub const fn paging(self) -> bool {
        !matches!(self, Mode::Real | Mode::Protected)
    }
    /// CR4.PAE (PAE paging or 4-level paging).
    pub const fn pae(self) -> bool {
        matches!(self, Mode::Pae | Mode::Long64 | Mode::Compat)
    }
    pub const fn ia32e(self) -> bool {
        matches!(self, Mode::Long64 | Mode::Compat)
    }
    /// The default operand and address size of the code it starts in.
    pub const fn bits(self) -> u32 {
        match self {
            Mode::Real => 16,
            Mode::Long64 => 64,
            _ => 32,
        }
    }
    /// Where the guest's own paging structures start (CR3), for modes with paging.
    pub const fn guest_cr3(self) -> u64 {
        TABLES
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// CR0 bits (SDM Vol. 3A §2.5 "Control Registers").
pub mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const MP: u64 = 1 << 1;
    pub const EM: u64 = 1 << 2;
    pub const TS: u64 = 1 << 3;
    pub const ET: u64 = 1 << 4;
    pub const NE: u64 = 1 << 5;
    pub const WP: u64 = 1 << 16;
    pub const AM: u64 = 1 << 18;
    pub const CD: u64 = 1 << 30;
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits (SDM Vol. 3A §2.5 "Control Registers").
pub mod cr4 {
    pub const TSD: u64 = 1 << 2;
    pub const DE: u64 = 1 << 3;
    pub const PSE: u64 = 1 << 4;
    pub const PAE: u64 = 1 << 5;
    pub const PGE: u64 = 1 << 7;
    pub const PCE: u64 = 1 << 8;
    pub const OSFXSR: u64 = 1 << 9;
    pub const OSXMMEXCPT: u64 = 1 << 10;
    /// XSETBV exits (SDM Vol. 3C §26.1.2 "Instructions That Cause VM Exits
    /// Unconditionally") only when CR4.OSXSAVE lets it run.
    pub const OSXSAVE: u64 = 1 << 18;
}

/// IA32_EFER bits (SDM Vol. 3A §2.2.1 "Extended Feature Enable Register").
pub mod efer {
    pub const SCE: u64 = 1 << 0;
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
    pub const NXE: u64 = 1 << 11;
}

/// How one run starts: what the kernel writes into the VMCS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub mode: Mode,
    /// RAX, RCX, RDX, RBX, RBP, RSI, RDI, R8-R15 (the order of the kernel's GuestRegs).
    pub regs: [u64; 15],
    pub rsp: u64,
    /// RIP (in real mode, the offset in CS).
    pub rip: u64,
    /// Real mode: the CS selector (its base is selector * 16).
    pub real_cs: u16,
    pub rflags: u64,
    /// CR0 bits beyond PE, PG, ET and NE (MP, EM, TS, WP, AM, CD), before the fixed bits.
    pub cr0_extra: u64,
    /// CR4 bits beyond PAE, before the fixed bits.
    pub cr4_extra: u64,
    /// IA32_EFER bits beyond LME and LMA (SCE, NXE).
    pub efer_extra: u64,
    /// The guest has an IDT (IVT) with gates into its stubs and program;
    /// otherwise IDTR limit 0 and any event triple-faults.
    pub idt: bool,
    pub idtr_limit: u16,
    /// DR7 at entry (bits 63:32 zero).
    pub dr7: u64,
    /// The four PDPTEs of the PAE mode (loaded from the VMCS under EPT).
    pub pdptes: [u64; 4],
    /// What the program's templates were, for the tests and the failure report.
    pub ops: u32,
}

impl Plan {
    /// The guest's CR0 at its start: ET and NE, PE in protected modes, PG in
    /// paged ones, and the plan's extra bits (both backends).
    pub fn cr0(&self) -> u64 {
        let mut cr0 = cr0::ET | cr0::NE | self.cr0_extra;
        if self.mode.protected() {
            cr0 |= cr0::PE;
        }
        if self.mode.paging() {
            cr0 |= cr0::PG;
        }
        cr0
    }
}

/// splitmix64's finaliser: a well-mixed value from two.
fn mix(a: u64, b: u64) -> u64 {
    Rng::new(a ^ b.wrapping_mul(0xd6e8_feb8_6659_fd93)).next_u64()
}

/// The seed of CPU `cpu`'s stream (seed + CPU index, as `entryfuzz`).
pub const fn cpu_seed(seed: u64, cpu: u32) -> u64 {
    seed.wrapping_add(cpu as u64)
}

/// The seed of run `run` of a CPU's stream.
pub fn run_seed(cpu_seed: u64, run: u64) -> u64 {
    mix(cpu_seed, run.wrapping_add(1))
}

/// The instruction templates the program mixes with random bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Cpuid,
    PortIo,
    StringIo,
    Rdmsr,
    Wrmsr,
    MovToCr,
    MovFromCr,
    Cr8,
    MovDr,
    Clts,
    Lmsw,
    Smsw,
    Invlpg,
    Invd,
    Wbinvd,
    Xsetbv,
    Rdrand,
    Rdtscp,
    Hlt,
    Pause,
    Vmcall,
    Vmx,
    IntN,
    Iret,
    FarJump,
    ModeSwitch,
    DescriptorTable,
    SegmentLoad,
    MovSsThenExit,
    StiThenExit,
    SingleStep,
    TaskRegister,
    SystemCall,
    Swapgs,
    Branch,
    Wrap32,
}

impl Op {
    pub const ALL: [Op; 36] = [
        Op::Cpuid,
        Op::PortIo,
        Op::StringIo,
        Op::Rdmsr,
        Op::Wrmsr,
        Op::MovToCr,
        Op::MovFromCr,
        Op::Cr8,
        Op::MovDr,
        Op::Clts,
        Op::Lmsw,
        Op::Smsw,
        Op::Invlpg,
        Op::Invd,
        Op::Wbinvd,
        Op::Xsetbv,
        Op::Rdrand,
        Op::Rdtscp,
        Op::Hlt,
        Op::Pause,
        Op::Vmcall,
        Op::Vmx,
        Op::IntN,
        Op::Iret,
        Op::FarJump,
        Op::ModeSwitch,
        Op::DescriptorTable,
        Op::SegmentLoad,
        Op::MovSsThenExit,
        Op::StiThenExit,
        Op::SingleStep,
        Op::TaskRegister,
        Op::SystemCall,
        Op::Swapgs,
        Op::Branch,
        Op::Wrap32,
    ];
}

/// Ports a program reads and writes: the guest's COM1, and ports that would
/// end or reset the machine if they reached it (Bochs's shutdown port, QEMU's
/// debug exit, the reset control register, the fast A20/reset port, the PICs,
/// the PIT, the keyboard controller, the CMOS, PCI configuration).
pub const PORTS: [u16; 22] = [
    0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff, 0x8900, 0xf4, 0xcf9, 0x92, 0x20, 0x21, 0x40, 0x43, 0x61,
    0x64, 0x70, 0xcf8, 0xcfc, 0x80,
];

/// MSRs a program reads and writes: the trapped IA32_FEATURE_CONTROL, the
/// passed-through IA32_TSC, and the ones whose change would hurt the host.
pub const MSRS: [u32; 28] = [
    0x3a,        // IA32_FEATURE_CONTROL
    0x10,        // IA32_TSC
    0x1b,        // IA32_APIC_BASE
    0xc000_0080, // IA32_EFER
    0xc000_0081, // IA32_STAR
    0xc000_0082, // IA32_LSTAR
    0xc000_0084, // IA32_FMASK
    0xc000_0100, // IA32_FS_BASE
    0xc000_0101, // IA32_GS_BASE
    0xc000_0102, // IA32_KERNEL_GS_BASE
    0xc000_0103, // IA32_TSC_AUX
    0x174,       // IA32_SYSENTER_CS
    0x175,       // IA32_SYSENTER_ESP
    0x176,       // IA32_SYSENTER_EIP
    0x277,       // IA32_PAT
    0x2ff,       // IA32_MTRR_DEF_TYPE
    0x200,       // IA32_MTRR_PHYSBASE0
    0x480,       // IA32_VMX_BASIC
    0x48b,       // IA32_VMX_PROCBASED_CTLS2
    0x808,       // x2APIC TPR
    0x80b,       // x2APIC EOI
    0x830,       // x2APIC ICR
    0x1d9,       // IA32_DEBUGCTL
    0x1a0,       // IA32_MISC_ENABLE
    0x9b,        // IA32_SMM_MONITOR_CTL
    0x6e0,       // IA32_TSC_DEADLINE
    0x3b,        // IA32_TSC_ADJUST
    0x4000_0000, // a hypervisor range MSR
];

/// `MSRS` on an SVM host: VMX's own (IA32_FEATURE_CONTROL, IA32_VMX_BASIC,
/// IA32_VMX_PROCBASED_CTLS2) give way to SVM's (VM_CR, VM_HSAVE_PA, SVM_KEY),
/// in the same places.
pub const MSRS_SVM: [u32; 28] = {
    let mut m = MSRS;
    m[0] = 0xc001_0114; // VM_CR
    m[17] = 0xc001_0117; // VM_HSAVE_PA
    m[18] = 0xc001_0118; // SVM_KEY
    m
};

/// CPUID leaves a program asks for.
pub const LEAVES: [u32; 12] =
    [0, 1, 7, 0xb, 0xd, 0x16, 0x4000_0000, 0x4000_0001, 0x4000_0002, 0x8000_0000, 0x8000_0001, 0x8000_0008];

/// `LEAVES` on an SVM host: 16h gives way to 8000_000Ah, SVM's (which the
/// hypervisor zeroes).
pub const LEAVES_SVM: [u32; 12] = {
    let mut l = LEAVES;
    l[5] = 0x8000_000a;
    l
};

/// Writes a program into guest memory, never past `end`.
struct Emitter<'a> {
    mem: &'a mut [u8],
    pos: usize,
    end: usize,
    bits: u32,
    /// SVM's instructions and MSRs (`Caps::svm`).
    svm: bool,
}

impl Emitter<'_> {
    fn room(&self) -> usize {
        self.end - self.pos
    }
    fn byte(&mut self, b: u8) {
        if self.pos < self.end {
            self.mem[self.pos] = b;
            self.pos += 1;
        }
    }
    fn bytes(&mut self, bs: &[u8]) {
        for &b in bs {
            self.byte(b);
        }
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    /// The guest address of the next byte.
    fn here(&self) -> u64 {
        self.pos as u64
    }
    /// MOV r32, imm32 (r 0-7): B8+r, with the operand-size prefix in 16-bit code.
    fn mov32(&mut self, reg: u8, imm: u32) {
        if self.bits == 16 {
            self.byte(0x66);
        }
        self.byte(0xb8 + (reg & 7));
        self.u32(imm);
    }
    /// MOV r64, imm64 in 64-bit code (REX.W B8+r), MOV r32, imm32 elsewhere.
    fn mov64(&mut self, reg: u8, imm: u64) {
        if self.bits == 64 {
            self.bytes(&[0x48 | ((reg >> 3) & 1), 0xb8 + (reg & 7)]);
            self.bytes(&imm.to_le_bytes());
        } else {
            self.mov32(reg, imm as u32);
        }
    }
    /// MOV DX, imm16.
    fn mov_dx(&mut self, port: u16) {
        if self.bits != 16 {
            self.byte(0x66);
        }
        self.byte(0xba);
        self.u16(port);
    }
    /// A ModR/M memory operand at absolute guest address `addr` with `reg`
    /// in bits 5:3: [disp16] in 16-bit code, [disp32] in 32-bit code, and
    /// [disp32] through a SIB byte (no RIP-relative) in 64-bit code.
    fn mem(&mut self, reg: u8, addr: u32) {
        match self.bits {
            16 => {
                self.byte((reg & 7) << 3 | 0b110);
                self.u16(addr as u16);
            }
            32 => {
                self.byte((reg & 7) << 3 | 0b101);
                self.u32(addr);
            }
            _ => {
                self.bytes(&[(reg & 7) << 3 | 0b100, 0x25]);
                self.u32(addr);
            }
        }
    }
    /// The hypercall: VMCALL (0F 01 C1), or VMMCALL (0F 01 D9) on SVM.
    fn hypercall(&mut self) {
        self.bytes(&[0x0f, 0x01, if self.svm { 0xd9 } else { 0xc1 }]);
    }
    /// IRET of the code size (IRETQ in 64-bit code).
    fn iret(&mut self) {
        if self.bits == 64 {
            self.byte(0x48);
        }
        self.byte(0xcf);
    }
}

/// Interesting 32-bit values: boundaries, bits of the control registers,
/// addresses inside and just outside guest memory.
fn value32(rng: &mut Rng) -> u32 {
    match rng.below(8) {
        0 => 0,
        1 => u32::MAX,
        2 => 1 << rng.below(32),
        3 => rng.below(MEM_SIZE) as u32,
        4 => (MEM_SIZE as u32).wrapping_add(rng.below(0x1000) as u32),
        5 => rng.pick(&[0x8000_0011u32, 0x8000_0001, 0x11, 0x10, 0x60000010, 0x20, 0x2000, 0x400, 0xff]),
        _ => rng.next_u64() as u32,
    }
}

fn value64(rng: &mut Rng) -> u64 {
    match rng.below(6) {
        0 => value32(rng) as u64,
        1 => u64::MAX,
        2 => 1 << rng.below(64),
        3 => 0x0000_7fff_ffff_f000 + rng.below(0x1000),
        4 => 0xffff_8000_0000_0000 + rng.below(0x1000),
        _ => rng.next_u64(),
    }
}

/// An address in scratch memory, aligned to 8.
fn scratch(rng: &mut Rng) -> u32 {
    (SCRATCH + rng.below(0x1f0) * 8) as u32
}

/// A general register for an operand: RAX-RDI (RSP too), R8-R15 in 64-bit code.
fn gpr(rng: &mut Rng, bits: u32) -> u8 {
    if bits == 64 {
        rng.below(16) as u8
    } else {
        rng.below(8) as u8
    }
}

/// An instruction that always exits (or is #UD), for the end of a two-instruction template.
fn exiting(e: &mut Emitter, rng: &mut Rng) {
    match rng.below(4) {
        0 => e.bytes(&[0x0f, 0xa2]), // CPUID
        1 => e.hypercall(),
        2 => e.byte(0xec),           // IN AL, DX
        _ => e.bytes(&[0x0f, 0x32]), // RDMSR
    }
}

/// A 0F 20/22/21/23 move between a control or debug register and a general register.
fn mov_cr_dr(e: &mut Emitter, opcode: u8, cr: u8, reg: u8) {
    let rex = ((cr >> 3) & 1) << 2 | ((reg >> 3) & 1);
    if rex != 0 {
        e.byte(0x40 | rex);
    }
    e.bytes(&[0x0f, opcode, 0xc0 | (cr & 7) << 3 | (reg & 7)]);
}

impl Op {
    /// Emit this template.
    fn emit(self, e: &mut Emitter, rng: &mut Rng, wrap_base: &mut Option<u32>) {
        let bits = e.bits;
        match self {
            Op::Cpuid => {
                let leaves = if e.svm { &LEAVES_SVM } else { &LEAVES };
                let leaf = if rng.chance(70) { rng.pick(leaves) } else { value32(rng) };
                e.mov32(0, leaf);
                e.mov32(1, rng.below(4) as u32);
                e.bytes(&[0x0f, 0xa2]);
            }
            Op::PortIo => {
                let port = if rng.chance(80) { rng.pick(&PORTS) } else { rng.next_u64() as u16 };
                e.mov32(0, value32(rng));
                e.mov_dx(port);
                let wide = if bits == 16 { 0x66 } else { 0x90 };
                match rng.below(6) {
                    0 => e.byte(0xec),                 // IN AL, DX
                    1 => e.bytes(&[wide, 0xed]),       // IN EAX, DX
                    2 => e.byte(0xee),                 // OUT DX, AL
                    3 => e.bytes(&[wide, 0xef]),       // OUT DX, EAX
                    4 => e.bytes(&[0xe4, port as u8]), // IN AL, imm8
                    _ => e.bytes(&[0xe6, port as u8]), // OUT imm8, AL
                }
            }
            Op::StringIo => {
                e.mov_dx(rng.pick(&PORTS));
                e.mov32(1, rng.below(4) as u32);
                e.mov32(6, scratch(rng));
                e.mov32(7, scratch(rng));
                if rng.chance(50) {
                    e.byte(0xf3); // REP
                }
                e.byte(rng.pick(&[0x6c, 0x6d, 0x6e, 0x6f])); // INSB INSD OUTSB OUTSD
            }
            Op::Rdmsr | Op::Wrmsr => {
                let msrs = if e.svm { &MSRS_SVM } else { &MSRS };
                let msr = if rng.chance(80) { rng.pick(msrs) } else { value32(rng) };
                e.mov32(1, msr);
                e.mov32(0, value32(rng));
                e.mov32(2, value32(rng));
                e.bytes(if self == Op::Rdmsr { &[0x0f, 0x32] } else { &[0x0f, 0x30] });
            }
            Op::MovToCr => {
                let reg = gpr(rng, bits);
                let cr = rng.pick(&[0u8, 0, 3, 3, 4, 4, 2]);
                // Often the register's value with one bit flipped.
                if rng.chance(60) {
                    mov_cr_dr(e, 0x20, cr.min(4), 0);
                    e.mov32(1, 1 << rng.below(32));
                    if bits == 16 {
                        e.byte(0x66);
                    }
                    e.bytes(&[0x31, 0xc8]); // XOR EAX, ECX
                    mov_cr_dr(e, 0x22, cr, 0);
                } else {
                    e.mov64(reg, value64(rng));
                    mov_cr_dr(e, 0x22, cr, reg);
                }
            }
            Op::MovFromCr => {
                let cr = rng.pick(&[0u8, 2, 3, 4]);
                mov_cr_dr(e, 0x20, cr, gpr(rng, bits));
            }
            Op::Cr8 => {
                let reg = gpr(rng, bits);
                let to = rng.chance(60);
                if to {
                    let v = if rng.chance(70) { rng.below(16) } else { value64(rng) };
                    e.mov64(reg, v);
                }
                let opcode = if to { 0x22 } else { 0x20 };
                if bits == 64 {
                    mov_cr_dr(e, opcode, 8, reg);
                } else {
                    // LOCK MOV CR0 is CR8 on CPUs with CR8 legacy (AMD), #UD on Intel.
                    e.byte(0xf0);
                    mov_cr_dr(e, opcode, 0, reg);
                }
            }
            Op::MovDr => {
                let dr = rng.below(8) as u8;
                let reg = gpr(rng, bits);
                if rng.chance(60) {
                    let v = if dr == 7 { 0x400 | (rng.next_u64() & 0xffff_03ff) } else { value64(rng) };
                    e.mov64(reg, v);
                    mov_cr_dr(e, 0x23, dr, reg);
                } else {
                    mov_cr_dr(e, 0x21, dr, reg);
                }
            }
            Op::Clts => e.bytes(&[0x0f, 0x06]),
            Op::Lmsw => {
                e.mov32(0, value32(rng) & 0xffff);
                e.bytes(&[0x0f, 0x01, 0xf0]); // LMSW AX
            }
            Op::Smsw => e.bytes(&[0x0f, 0x01, 0xe0 | rng.below(8) as u8]),
            Op::Invlpg => {
                e.bytes(&[0x0f, 0x01]);
                e.mem(7, value32(rng));
            }
            Op::Invd => e.bytes(&[0x0f, 0x08]),
            Op::Wbinvd => e.bytes(&[0x0f, 0x09]),
            Op::Xsetbv => {
                e.mov32(1, rng.pick(&[0, 0, 1, 0xffff_ffff]));
                e.mov32(0, rng.pick(&[1, 3, 7, 0xffff_ffff, 0]));
                e.mov32(2, rng.pick(&[0, 0, 1]));
                e.bytes(&[0x0f, 0x01, if rng.chance(80) { 0xd1 } else { 0xd0 }]);
                // XSETBV / XGETBV
            }
            Op::Rdrand => e.bytes(&[0x0f, 0xc7, if rng.chance(50) { 0xf0 } else { 0xf8 } | rng.below(8) as u8]),
            Op::Rdtscp => e.bytes(rng.pick(&[&[0x0f, 0x01, 0xf9][..], &[0x0f, 0x31], &[0x0f, 0x33]])),
            Op::Hlt => e.byte(0xf4),
            Op::Pause => e.bytes(&[0xf3, 0x90]),
            Op::Vmcall => {
                e.mov32(0, rng.pick(&[1, 1, 2, 2, 0, 3, 0xdead_beef]));
                e.mov32(3, if rng.chance(50) { rng.below(MEM_SIZE + 0x100) as u32 } else { value32(rng) });
                e.mov32(1, value32(rng));
                e.mov32(2, value32(rng));
                e.hypercall();
            }
            Op::Vmx if e.svm => {
                // SVM's instructions, which the guest must not reach (#UD
                // injected): VMRUN, VMLOAD, VMSAVE with a VMCB address in
                // RAX, STGI, CLGI, SKINIT, INVLPGA.
                e.mov64(0, if rng.chance(50) { scratch(rng) as u64 & !0xfff } else { value64(rng) });
                e.bytes(&[0x0f, 0x01, rng.pick(&[0xd8, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf])]);
            }
            Op::Vmx => {
                let at = scratch(rng);
                match rng.below(12) {
                    0 => {
                        e.bytes(&[0xf3, 0x0f, 0xc7]); // VMXON m64
                        e.mem(6, at);
                    }
                    1 => e.bytes(&[0x0f, 0x01, 0xc4]), // VMXOFF
                    2 => {
                        e.bytes(&[0x66, 0x0f, 0xc7]); // VMCLEAR m64
                        e.mem(6, at);
                    }
                    3 => {
                        e.bytes(&[0x0f, 0xc7]); // VMPTRLD m64
                        e.mem(6, at);
                    }
                    4 => {
                        e.bytes(&[0x0f, 0xc7]); // VMPTRST m64
                        e.mem(7, at);
                    }
                    5 => {
                        e.mov32(0, value32(rng));
                        e.bytes(&[0x0f, 0x78, 0xc1]); // VMREAD ECX, EAX
                    }
                    6 => {
                        e.mov32(0, value32(rng));
                        e.bytes(&[0x0f, 0x79, 0xc1]); // VMWRITE EAX, ECX
                    }
                    7 => e.bytes(&[0x0f, 0x01, 0xc2]), // VMLAUNCH
                    8 => e.bytes(&[0x0f, 0x01, 0xc3]), // VMRESUME
                    9 => {
                        e.bytes(&[0x66, 0x0f, 0x38, 0x80]); // INVEPT r, m128
                        e.mem(0, at);
                    }
                    10 => {
                        e.bytes(&[0x66, 0x0f, 0x38, 0x81]); // INVVPID r, m128
                        e.mem(0, at);
                    }
                    _ => e.bytes(&[0x0f, 0x01, 0xd4]), // VMFUNC
                }
            }
            Op::IntN => match rng.below(5) {
                0 => e.byte(0xcc),
                1 => e.byte(0xf1),
                2 => e.byte(0xce),
                3 => e.bytes(&[0xcd, rng.below(32) as u8]),
                _ => e.bytes(&[0xcd, rng.next_u64() as u8]),
            },
            Op::Iret => {
                if rng.chance(20) {
                    e.byte(0x66);
                }
                e.iret();
            }
            Op::FarJump => {
                let garbage = SEL_GARBAGE + 8 * rng.below(4) as u16;
                let any = rng.next_u64() as u16;
                let sel = rng.pick(&[
                    SEL_CODE32,
                    SEL_CODE32,
                    SEL_CODE64,
                    SEL_CODE16,
                    SEL_DATA,
                    SEL_TSS,
                    SEL_CALL_GATE,
                    SEL_CODE32_R3,
                    garbage,
                    any,
                ]);
                let target = CODE as u32 + rng.below(CODE_END - CODE) as u32;
                far_jump(e, rng, sel, target);
            }
            Op::ModeSwitch => {
                // Flip CR0.PE or CR0.PG, then a far jump to code of another size.
                mov_cr_dr(e, 0x20, 0, 0);
                if bits == 16 {
                    e.byte(0x66);
                }
                e.byte(0x35); // XOR EAX, imm32
                e.u32(rng.pick(&[cr0::PE as u32, cr0::PG as u32, (cr0::PE | cr0::PG) as u32]));
                mov_cr_dr(e, 0x22, 0, 0);
                let sel = rng.pick(&[SEL_CODE32, SEL_CODE16, SEL_CODE64, 0x0800]);
                let target = (e.here() + 16) as u32;
                far_jump(e, rng, sel, target);
            }
            Op::DescriptorTable => {
                let at = scratch(rng);
                e.bytes(&[0x0f, 0x01]);
                e.mem(rng.pick(&[0, 1, 2, 3]), at); // SGDT SIDT LGDT LIDT
            }
            Op::SegmentLoad => {
                let sel = rng.pick(&[0, SEL_DATA, SEL_DATA16, SEL_CODE32, SEL_DATA_R3, SEL_TSS, 0x7fff, 3]);
                e.mov32(0, sel as u32);
                e.bytes(&[0x8e, 0xc0 | (rng.pick(&[0u8, 2, 3, 4, 5]) << 3)]); // MOV Sreg, AX
            }
            Op::MovSsThenExit => {
                e.mov32(0, rng.pick(&[SEL_DATA as u32, SEL_DATA16 as u32, 0]));
                e.bytes(&[0x8e, 0xd0]); // MOV SS, AX
                exiting(e, rng);
            }
            Op::StiThenExit => {
                e.byte(0xfb);
                exiting(e, rng);
            }
            Op::SingleStep => {
                // PUSH imm32 with TF (and maybe more), POPF, then an exiting instruction.
                if bits == 16 {
                    e.byte(0x66);
                }
                e.byte(0x68);
                e.u32(0x102 | (rng.next_u64() as u32 & 0x0004_0cd5));
                if bits == 16 {
                    e.byte(0x66);
                }
                e.byte(0x9d);
                exiting(e, rng);
            }
            Op::TaskRegister => {
                e.mov32(0, rng.pick(&[SEL_TSS as u32, SEL_DATA as u32, 0, 0x38]));
                e.bytes(&[0x0f, 0x00, if rng.chance(50) { 0xd8 } else { 0xd0 }]);
                // LTR AX / LLDT AX
            }
            Op::SystemCall => e.bytes(rng.pick(&[&[0x0f, 0x05][..], &[0x0f, 0x07], &[0x0f, 0x34], &[0x0f, 0x35]])),
            Op::Swapgs => e.bytes(&[0x0f, 0x01, 0xf8]),
            Op::Branch => match rng.below(4) {
                0 => e.bytes(&[0xeb, rng.next_u64() as u8]),
                1 => e.bytes(&[0xe2, rng.next_u64() as u8]), // LOOP
                2 => {
                    // JMP to a stub.
                    let stub = STUBS + STUB_SIZE * rng.below(5);
                    e.mov32(0, stub as u32);
                    e.bytes(&[0xff, 0xe0]);
                }
                _ => e.bytes(&[0xe8, rng.next_u64() as u8, 0, 0, 0]), // CALL rel32 (short forward)
            },
            Op::Wrap32 => {
                // A far jump to SEL_WRAP:(4 GiB - n), whose base puts that EIP on
                // an n-byte exiting instruction right after the jump: it ends
                // exactly where EIP wraps to 0.
                if bits != 32 || wrap_base.is_some() || e.room() < 16 {
                    return;
                }
                let call: &[u8] = if e.svm { &[0x0f, 0x01, 0xd9] } else { &[0x0f, 0x01, 0xc1] };
                let insn: &[u8] = rng.pick(&[&[0x0f, 0xa2][..], call, &[0xec], &[0x0f, 0x32]]);
                let n = insn.len() as u32;
                let jump_len = 7;
                let at = e.here() as u32 + jump_len;
                *wrap_base = Some(at + n);
                e.byte(0xea);
                e.u32(0u32.wrapping_sub(n));
                e.u16(SEL_WRAP);
                e.bytes(insn);
            }
        }
    }
}

/// JMP FAR sel:offset: direct (EA) in 16- and 32-bit code, through a
/// far pointer in scratch memory (FF /5) in 64-bit code.
fn far_jump(e: &mut Emitter, rng: &mut Rng, sel: u16, offset: u32) {
    match e.bits {
        16 => {
            e.byte(0xea);
            e.u16(offset as u16);
            e.u16(sel);
        }
        32 => {
            e.byte(0xea);
            e.u32(offset);
            e.u16(sel);
        }
        _ => {
            let at = scratch(rng);
            // The pointer is written into scratch by the template itself: MOV
            // DWORD [at], offset; MOV WORD [at+4], sel; JMP FAR [at].
            e.bytes(&[0xc7, 0x04, 0x25]);
            e.u32(at);
            e.u32(offset);
            e.bytes(&[0x66, 0xc7, 0x04, 0x25]);
            e.u32(at + 4);
            e.u16(sel);
            e.bytes(&[0xff, 0x2c, 0x25]);
            e.u32(at);
        }
    }
}

/// Fill `mem` (MEM_SIZE bytes of guest memory) with run `seed`'s program and
/// tables, and return how it starts.
pub fn generate(seed: u64, caps: Caps, mem: &mut [u8]) -> Plan {
    assert_eq!(mem.len() as u64, MEM_SIZE);
    let mut rng = Rng::new(seed);
    let modes: [Mode; 6] = Mode::ALL;
    let mut supported = [Mode::Paged32; 6];
    let mut n = 0;
    for m in modes {
        if m.supported(caps) {
            supported[n] = m;
            n += 1;
        }
    }
    let mode = supported[rng.below(n as u64) as usize];

    // Everything random first; the structures are written over it.
    for chunk in mem.chunks_mut(8) {
        let v = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }

    let bits = mode.bits();
    let real_cs = (CODE >> 4) as u16;
    let code_base = if mode == Mode::Real { CODE } else { 0 };

    // The program.
    let mut wrap_base = None;
    let mut ops = 0u32;
    let mut e = Emitter { mem, pos: CODE as usize, end: CODE_END as usize, bits, svm: caps.svm };
    while e.room() > 0 {
        if rng.chance(65) {
            let op = rng.pick(&Op::ALL);
            op.emit(&mut e, &mut rng, &mut wrap_base);
            ops += 1;
        } else {
            // Leave 1-6 random bytes in place.
            let skip = (1 + rng.below(6) as usize).min(e.room());
            e.pos += skip;
        }
    }
    let mem = e.mem;

    stubs(mem, bits, caps.svm);
    gdt(mem, &mut rng, wrap_base, mode.ia32e());
    tss(mem, &mut rng, mode.ia32e());
    let idt = rng.chance(60);
    let idtr_limit = if !idt {
        0
    } else if mode == Mode::Real {
        0x3ff
    } else if mode.ia32e() {
        if rng.chance(90) {
            0xfff
        } else {
            rng.below(0x1000) as u16
        }
    } else if rng.chance(90) {
        0x7ff
    } else {
        rng.below(0x800) as u16
    };
    if idt {
        interrupt_table(mem, &mut rng, mode);
    }
    let pdptes = page_tables(mem, &mut rng, mode);

    let mut regs = [0u64; 15];
    for r in regs.iter_mut() {
        *r = if bits == 64 { value64(&mut rng) } else { value32(&mut rng) as u64 };
    }
    let rsp = if rng.chance(90) { STACK_TOP - 16 * rng.below(8) } else { value32(&mut rng) as u64 };
    let rip = if rng.chance(50) { CODE } else { CODE + rng.below(CODE_END - CODE) } - code_base;
    // RFLAGS: bit 1, and any of CF PF AF ZF SF IF DF OF; rarely TF, AC, NT.
    let mut rflags = 0x2 | (rng.next_u64() & 0xcd5) | (rng.next_u64() & 0x200);
    if rng.chance(10) {
        rflags |= 0x100;
    }
    if rng.chance(10) {
        rflags |= 1 << 18;
    }
    if rng.chance(5) {
        rflags |= 1 << 14;
    }
    let cr0_choices = [cr0::MP, cr0::EM, cr0::TS, cr0::WP, cr0::AM, cr0::CD];
    let mut cr0_extra = 0;
    for bit in cr0_choices {
        if rng.chance(if bit == cr0::CD || bit == cr0::EM { 5 } else { 25 }) {
            cr0_extra |= bit;
        }
    }
    let mut cr4_extra = 0;
    for bit in [cr4::TSD, cr4::DE, cr4::PSE, cr4::PGE, cr4::PCE, cr4::OSFXSR, cr4::OSXMMEXCPT, cr4::OSXSAVE] {
        if rng.chance(25) {
            cr4_extra |= bit;
        }
    }
    let mut efer_extra = 0;
    // Drawn either way, so a stream is the same on CPUs with and without NX.
    if rng.chance(50) && caps.nx {
        efer_extra |= efer::NXE;
    }
    if rng.chance(50) {
        efer_extra |= efer::SCE;
    }
    let dr7 = if rng.chance(80) { 0x400 } else { 0x400 | (rng.next_u64() & 0xffff_03ff) };
    Plan { mode, regs, rsp, rip, real_cs, rflags, cr0_extra, cr4_extra, efer_extra, idt, idtr_limit, dr7, pdptes, ops }
}

/// Handler stubs, one per STUB_SIZE bytes: IRET; drop an error code and
/// IRET; HLT; VMCALL (VMMCALL on SVM) done; spin. They are written for the
/// start mode's code size.
fn stubs(mem: &mut [u8], bits: u32, svm: bool) {
    let mut put = |k: u64, f: &dyn Fn(&mut Emitter)| {
        let start = (STUBS + k * STUB_SIZE) as usize;
        let mut e = Emitter { mem, pos: start, end: start + STUB_SIZE as usize, bits, svm };
        f(&mut e);
    };
    put(0, &|e| e.iret());
    put(1, &|e| {
        match e.bits {
            16 => e.bytes(&[0x83, 0xc4, 0x02]),
            32 => e.bytes(&[0x83, 0xc4, 0x04]),
            _ => e.bytes(&[0x48, 0x83, 0xc4, 0x08]),
        }
        e.iret();
    });
    put(2, &|e| e.byte(0xf4));
    put(3, &|e| {
        e.mov32(0, 1);
        e.mov32(3, 0);
        e.hypercall();
    });
    put(4, &|e| e.bytes(&[0xeb, 0xfe]));
}

/// A code or data segment descriptor (SDM Vol. 3A §3.4.5 "Segment Descriptors"): base, limit (in
/// units the G flag picks), access byte, flags nibble (G, D/B, L, AVL).
const fn descriptor(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    (limit as u64 & 0xffff)
        | (base as u64 & 0xff_ffff) << 16
        | (access as u64) << 40
        | ((limit as u64 >> 16) & 0xf) << 48
        | ((flags as u64) & 0xf) << 52
        | ((base as u64 >> 24) & 0xff) << 56
}

fn put64(mem: &mut [u8], at: u64, v: u64) {
    mem[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
}

fn put32(mem: &mut [u8], at: u64, v: u32) {
    mem[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes());
}

fn gdt(mem: &mut [u8], rng: &mut Rng, wrap_base: Option<u32>, ia32e: bool) {
    let entries: [(u16, u64); 10] = [
        (0, 0),
        (SEL_CODE32, descriptor(0, 0xfffff, 0x9b, 0xc)),
        (SEL_DATA, descriptor(0, 0xfffff, 0x93, 0xc)),
        (SEL_CODE64, descriptor(0, 0xfffff, 0x9b, 0xa)),
        (SEL_CODE16, descriptor(0, 0xffff, 0x9b, 0)),
        (SEL_DATA16, descriptor(0, 0xffff, 0x93, 0)),
        (SEL_TSS, descriptor(TSS as u32, 0x67, 0x8b, 0)),
        (SEL_WRAP, descriptor(wrap_base.unwrap_or(0x1000), 0xfffff, 0x9b, 0xc)),
        // A 32-bit call gate (type 0xC) to SEL_CODE32:CODE (SDM Vol. 3A §5.8.3 "Call Gates").
        (SEL_CALL_GATE, (CODE & 0xffff) | (SEL_CODE32 as u64) << 16 | 0x8c << 40 | (CODE >> 16) << 48),
        (SEL_CODE32_R3 & !3, descriptor(0, 0xfffff, 0xfb, 0xc)),
    ];
    for (sel, d) in entries {
        put64(mem, GDT + sel as u64, d);
    }
    put64(mem, GDT + (SEL_DATA_R3 & !3) as u64, descriptor(0, 0xfffff, 0xf3, 0xc));
    // The TSS descriptor's upper half in IA-32e mode: base 63:32 = 0.
    if ia32e {
        put64(mem, GDT + SEL_TSS as u64 + 8, 0);
    }
    // SEL_GARBAGE..: random, but present half the time.
    for k in 0..4u64 {
        let mut d = rng.next_u64();
        if rng.chance(50) {
            d |= 1 << 47;
        }
        put64(mem, GDT + SEL_GARBAGE as u64 + 8 * k, d);
    }
}

/// The task-state segment (SDM Vol. 3A §8.2.1 "Task-State Segment (TSS)",
/// §8.7 "Task Management in 64-bit Mode"): 32-bit ESP0 at 4 and SS0 at 8, or
/// 64-bit RSP0 at 4 (eight bytes) and IST1-7 at 0x24; the I/O map base at
/// 0x66 points past the limit (0x67), so every port is refused to CPL 3.
fn tss(mem: &mut [u8], rng: &mut Rng, ia32e: bool) {
    for k in 0..0x68u64 / 4 {
        put32(mem, TSS + 4 * k, 0);
    }
    put32(mem, TSS + 4, (STACK_TOP - 0x100) as u32);
    if !ia32e {
        put32(mem, TSS + 8, SEL_DATA as u32);
    }
    for k in 0..7u64 {
        let v = if rng.chance(80) { STACK_TOP - 0x200 } else { value64(rng) };
        put64(mem, TSS + 0x24 + 8 * k, v);
    }
    put32(mem, TSS + 0x64, 0x68 << 16);
}

/// The IVT (real mode) or IDT: each vector to a stub or into the program.
fn interrupt_table(mem: &mut [u8], rng: &mut Rng, mode: Mode) {
    for v in 0..256u64 {
        let target = if rng.chance(60) { STUBS + STUB_SIZE * rng.below(5) } else { CODE + rng.below(CODE_END - CODE) };
        match mode {
            Mode::Real => put32(mem, IVT + 4 * v, target as u32 & 0xffff),
            m if m.ia32e() => {
                let present = if rng.chance(95) { 0x80 } else { 0 };
                let kind = if rng.chance(80) { 0xe } else { 0xf };
                let ist = if rng.chance(10) { rng.below(8) } else { 0 };
                let low = (target & 0xffff)
                    | (SEL_CODE64 as u64) << 16
                    | ist << 32
                    | ((present | kind) as u64) << 40
                    | ((target >> 16) & 0xffff) << 48;
                put64(mem, IDT + 16 * v, low);
                put64(mem, IDT + 16 * v + 8, target >> 32);
            }
            _ => {
                let present = if rng.chance(95) { 0x80 } else { 0 };
                let kind = if rng.chance(80) { 0xe } else { 0xf };
                let gate = (target & 0xffff)
                    | (SEL_CODE32 as u64) << 16
                    | ((present | kind) as u64) << 40
                    | ((target >> 16) & 0xffff) << 48;
                put64(mem, IDT + 8 * v, gate);
            }
        }
    }
}

/// The guest's own identity map of its memory for the mode's paging, with a
/// page now and then not present; returns the PDPTEs for PAE paging.
fn page_tables(mem: &mut [u8], rng: &mut Rng, mode: Mode) -> [u64; 4] {
    const P: u64 = 1;
    const RW_US: u64 = 0b110;
    let pages = MEM_SIZE / 4096;
    let mut pdptes = [0; 4];
    for k in 0..4 * 4096 / 8 {
        put64(mem, TABLES + 8 * k, 0);
    }
    let leaf = |rng: &mut Rng, page: u64| {
        let present = if rng.chance(97) { P } else { 0 };
        (page * 4096) | present | RW_US
    };
    match mode {
        Mode::Paged32 => {
            put32(mem, TABLES, (TABLES + 0x1000) as u32 | (P | RW_US) as u32);
            for page in 0..pages {
                let l = leaf(rng, page);
                put32(mem, TABLES + 0x1000 + 4 * page, l as u32);
            }
        }
        Mode::Pae => {
            pdptes[0] = (TABLES + 0x1000) | P;
            put64(mem, TABLES, pdptes[0]);
            put64(mem, TABLES + 0x1000, (TABLES + 0x2000) | P | RW_US);
            for page in 0..pages {
                let l = leaf(rng, page);
                put64(mem, TABLES + 0x2000 + 8 * page, l);
            }
        }
        Mode::Long64 | Mode::Compat => {
            put64(mem, TABLES, (TABLES + 0x1000) | P | RW_US);
            put64(mem, TABLES + 0x1000, (TABLES + 0x2000) | P | RW_US);
            put64(mem, TABLES + 0x2000, (TABLES + 0x3000) | P | RW_US);
            for page in 0..pages {
                let l = leaf(rng, page);
                put64(mem, TABLES + 0x3000 + 8 * page, l);
            }
        }
        Mode::Real | Mode::Protected => {}
    }
    pdptes
}

/// How a run ended, for the tally: a named ending, or a host failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Named(&'static str),
    HostFailure(&'static str),
}

/// The names of the endings the tally counts, in the order of the line.
/// `npf`, `rsm`, `ltr`, `insn-unreadable` and `not-resumed` are SVM's (a
/// nested page fault; RSM, which the SVM proof guest intercepts; LTR, which
/// the SVM guest fuzzer intercepts under QEMU; an exiting instruction the
/// handler cannot read to step over, without NRIP save; a guest the fuzzer
/// did not resume under Bochs 2.7, docs/fuzz.md); `vmcall` is VMMCALL under SVM.
pub const ENDING_NAMES: [&str; 27] = [
    "triple-fault",
    "ept-violation",
    "npf",
    "hlt",
    "vmcall",
    "cr-refused",
    "io-refused",
    "timer",
    "apic-timer",
    "exit-budget",
    "task-switch",
    "invd",
    "xsetbv",
    "getsec",
    "mwait",
    "monitor",
    "rdrand",
    "rdseed",
    "wbinvd",
    "invlpg",
    "mov-dr",
    "pause",
    "rsm",
    "ltr",
    "insn-unreadable",
    "not-resumed",
    "watchdog",
];

/// Exits a guest instruction causes by itself (with the proof guest's
/// controls), which end the run when the handler has nothing to emulate.
fn guest_caused(reason: u16) -> Option<&'static str> {
    Some(match reason {
        basic::IO_INSTRUCTION => "io-refused",
        basic::TASK_SWITCH => "task-switch",
        basic::INVD => "invd",
        basic::XSETBV => "xsetbv",
        basic::GETSEC => "getsec",
        basic::MWAIT => "mwait",
        basic::MONITOR => "monitor",
        basic::RDRAND => "rdrand",
        basic::RDSEED => "rdseed",
        basic::WBINVD => "wbinvd",
        basic::INVLPG => "invlpg",
        basic::MOV_DR => "mov-dr",
        basic::PAUSE => "pause",
        _ => return None,
    })
}

/// #VMEXITs a guest instruction causes by itself (with the SVM proof
/// guest's intercepts), which end the run when the handler has nothing to
/// emulate.
fn svm_guest_caused(code: u64) -> Option<&'static str> {
    use crate::svm::exit_code as c;
    Some(match code {
        c::IOIO => "io-refused",
        c::TASK_SWITCH => "task-switch",
        c::INVD => "invd",
        c::XSETBV => "xsetbv",
        c::MWAIT | c::MWAIT_CONDITIONAL => "mwait",
        c::MONITOR => "monitor",
        c::RSM => "rsm",
        c::TR_WRITE => "ltr",
        c::DR0_READ..=0x3f => "mov-dr",
        _ => return None,
    })
}

/// Sort a guest's ending into the tally, or name the host failure it is.
/// A failed VM entry is the host's fault (its state or its handler broke a
/// rule), and so is an exit the handler ended without knowing it (an NMI,
/// an EPT misconfiguration, an exit the controls do not ask for).
pub fn classify(ending: Ending) -> Class {
    match ending {
        Ending::Success | Ending::GuestReportedFailure(_) => Class::Named("vmcall"),
        Ending::Hlt => Class::Named("hlt"),
        Ending::TripleFault => Class::Named("triple-fault"),
        Ending::EptViolation => Class::Named("ept-violation"),
        Ending::NestedPageFault => Class::Named("npf"),
        Ending::CrWriteRefused => Class::Named("cr-refused"),
        Ending::PreemptionTimer => Class::Named("timer"),
        Ending::HostTimer => Class::Named("apic-timer"),
        Ending::ExitBudget => Class::Named("exit-budget"),
        Ending::Unexpected(r) => match guest_caused(r) {
            Some(name) => Class::Named(name),
            None => Class::HostFailure("an exit the handler cannot name"),
        },
        Ending::UnexpectedSvm(c) => match svm_guest_caused(c as u64) {
            Some(name) => Class::Named(name),
            None => Class::HostFailure("a #VMEXIT the handler cannot name"),
        },
        Ending::EntryFailed => Class::HostFailure("VM entry (VMRUN) failed"),
        Ending::InsnUnreadable => Class::Named("insn-unreadable"),
        Ending::NotResumed => Class::Named("not-resumed"),
    }
}

/// Counts per ending, exits and host failures of one CPU's runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub runs: u64,
    pub exits: u64,
    pub endings: [u64; ENDING_NAMES.len()],
    pub host_failures: u64,
    /// Runs per start mode (Mode::ALL order).
    pub modes: [u64; 6],
}

impl Tally {
    /// Count one run; returns its class.
    pub fn count(&mut self, mode: Mode, ending: Ending, exits: u64) -> Class {
        self.runs += 1;
        self.exits += exits;
        self.modes[Mode::ALL.iter().position(|m| *m == mode).unwrap_or(0)] += 1;
        let class = classify(ending);
        match class {
            Class::Named(name) => {
                if let Some(i) = ENDING_NAMES.iter().position(|n| *n == name) {
                    self.endings[i] += 1;
                }
            }
            Class::HostFailure(_) => self.host_failures += 1,
        }
        class
    }

    /// Count one run that ended by `name` (one of ENDING_NAMES) outside
    /// `classify`: the watchdog's ending.
    pub fn count_named(&mut self, mode: Mode, name: &'static str, exits: u64) {
        self.runs += 1;
        self.exits += exits;
        self.modes[Mode::ALL.iter().position(|m| *m == mode).unwrap_or(0)] += 1;
        if let Some(i) = ENDING_NAMES.iter().position(|n| *n == name) {
            self.endings[i] += 1;
        }
    }

    /// A host failure found outside the ending (host state changed, a run over time).
    pub fn host_failure(&mut self) {
        self.host_failures += 1;
    }
}

/// `fuzz: cpu=<i> runs=<N> exits=<total> endings=<reason:count,...> host_failures=<F> seed=<S>`
pub struct Line<'a> {
    pub cpu: u32,
    pub tally: &'a Tally,
    pub seed: u64,
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.tally;
        write!(f, "fuzz: cpu={} runs={} exits={} endings=", self.cpu, t.runs, t.exits)?;
        let mut first = true;
        for (name, count) in ENDING_NAMES.iter().zip(t.endings) {
            if count > 0 {
                write!(f, "{}{name}:{count}", if first { "" } else { "," })?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        write!(f, " host_failures={} seed={}", t.host_failures, self.seed)
    }
}

/// The modes a CPU's runs start in, as the set-up line lists them:
/// `real,protected,paged32,pae,long64,compat`.
pub struct StartModes(pub Caps);

impl fmt::Display for StartModes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for m in Mode::ALL.iter().filter(|m| m.supported(self.0)) {
            write!(f, "{}{}", if first { "" } else { "," }, m.name())?;
            first = false;
        }
        Ok(())
    }
}

/// `fuzz: cpu=<i> modes=real:<n>,...`: how many runs started in each mode.
pub struct ModesLine<'a>(pub u32, pub &'a Tally);

impl fmt::Display for ModesLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fuzz: cpu={} modes=", self.0)?;
        let mut first = true;
        for (m, n) in Mode::ALL.iter().zip(self.1.modes) {
            if n > 0 {
                write!(f, "{}{}:{n}", if first { "" } else { "," }, m.name())?;
                first = false;
            }
        }
        Ok(())
    }
}

/// The name of a basic exit reason, for reports.
pub fn reason_name(reason: u16) -> &'static str {
    exit_reason::name(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    const ALL_CAPS: Caps = Caps { unrestricted: true, ept: true, ia32e: true, nx: true, svm: false };
    const LYNNFIELD: Caps = Caps { unrestricted: false, ept: true, ia32e: true, nx: true, svm: false };
    const PENRYN: Caps = Caps { unrestricted: false, ept: false, ia32e: true, nx: true, svm: false };

    fn gen(seed: u64, caps: Caps) -> (Vec<u8>, Plan) {
        let mut mem = vec![0u8; MEM_SIZE as usize];
        let plan = generate(seed, caps, &mut mem);
        (mem, plan)
    }

    #[test]
    fn a_seed_gives_one_program() {
        let (a, pa) = gen(42, ALL_CAPS);
        let (b, pb) = gen(42, ALL_CAPS);
        assert!(a == b && pa == pb);
        let (c, _) = gen(43, ALL_CAPS);
        assert!(a != c);
    }

    #[test]
    fn run_seeds_are_distinct_and_replayable() {
        let cpu = cpu_seed(7, 1);
        assert_eq!(cpu, 8);
        let seeds: Vec<u64> = (0..1000).map(|k| run_seed(cpu, k)).collect();
        let mut sorted = seeds.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 1000);
        assert_eq!(run_seed(cpu, 17), seeds[17], "run k depends on (seed, cpu, k) only");
        assert_ne!(run_seed(cpu_seed(7, 0), 0), run_seed(cpu_seed(7, 1), 0));
    }

    #[test]
    fn modes_follow_the_cpu() {
        for (caps, want) in [
            (ALL_CAPS, &Mode::ALL[..]),
            (LYNNFIELD, &[Mode::Paged32, Mode::Pae, Mode::Long64, Mode::Compat][..]),
            (PENRYN, &[Mode::Paged32, Mode::Pae, Mode::Long64, Mode::Compat][..]),
            (
                Caps { unrestricted: false, ept: false, ia32e: false, nx: true, svm: false },
                &[Mode::Paged32, Mode::Pae][..],
            ),
            (Caps::svm(true, true, true), &Mode::ALL[..]),
            (Caps::svm(false, true, true), &[Mode::Paged32, Mode::Pae, Mode::Long64, Mode::Compat][..]),
        ] {
            let mut seen = Vec::new();
            for s in 0..300 {
                let m = gen(s, caps).1.mode;
                if !seen.contains(&m) {
                    seen.push(m);
                }
            }
            seen.sort_by_key(|m| Mode::ALL.iter().position(|x| x == m));
            assert_eq!(seen, want, "{caps:?}");
        }
    }

    /// FNV-1a over 200 runs' memory and plan: a VMX host's streams must not
    /// change (the replay tests in boottests/tests/fuzz.rs name runs by number).
    fn digest(caps: Caps) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut fnv = |b: &[u8]| {
            for x in b {
                h ^= *x as u64;
                h = h.wrapping_mul(0x100_0000_01b3);
            }
        };
        for s in 0..200u64 {
            let (mem, plan) = gen(run_seed(1, s), caps);
            fnv(&mem);
            fnv(alloc::format!("{plan:?}").as_bytes());
        }
        h
    }

    #[test]
    fn vmx_streams_are_unchanged_by_the_svm_templates() {
        // Measured before the SVM variants were added (the generator of 1e4355e).
        assert_eq!(digest(ALL_CAPS), 0x1360_eb5d_1faa_8de5);
        assert_eq!(digest(PENRYN), 0xf222_84ac_e5aa_afe2);
    }

    #[test]
    fn svm_programs_call_with_vmmcall_and_try_svm_instructions() {
        let count = |mem: &[u8], pat: &[u8]| mem.windows(pat.len()).filter(|w| *w == pat).count();
        let (mut vmmcall, mut vmcall, mut svm_insns) = (0, 0, 0);
        for s in 0..50 {
            let (mem, _) = gen(s, Caps::svm(true, true, true));
            vmmcall += count(&mem[CODE as usize..], &[0x0f, 0x01, 0xd9]);
            vmcall += count(&mem[CODE as usize..], &[0x0f, 0x01, 0xc1]);
            svm_insns += (0xd8..=0xdf)
                .filter(|&b| b != 0xd9)
                .map(|b| count(&mem[CODE as usize..], &[0x0f, 0x01, b]))
                .sum::<usize>();
            let stub = &mem[(STUBS + 3 * STUB_SIZE) as usize..][..STUB_SIZE as usize];
            assert_eq!(count(stub, &[0x0f, 0x01, 0xd9]), 1, "the done stub");
        }
        assert!(vmmcall > 100 && svm_insns > 50, "{vmmcall} {svm_insns}");
        assert!(vmcall < vmmcall / 5, "VMCALL only from random bytes: {vmcall}");
        assert_eq!(MSRS_SVM[0], 0xc001_0114);
        assert!(!MSRS_SVM.contains(&0x3a) && MSRS_SVM.contains(&0x1b));
        assert!(LEAVES_SVM.contains(&0x8000_000a));
    }

    #[test]
    fn every_template_is_emitted_in_every_code_size() {
        for bits in [16, 32, 64] {
            for op in Op::ALL {
                let mut mem = vec![0u8; MEM_SIZE as usize];
                let mut rng = Rng::new(1);
                let mut wrap = None;
                let mut e = Emitter { mem: &mut mem, pos: CODE as usize, end: CODE_END as usize, bits, svm: false };
                for _ in 0..20 {
                    op.emit(&mut e, &mut rng, &mut wrap);
                }
                let wrote = e.pos > CODE as usize;
                assert!(wrote || (op == Op::Wrap32 && bits != 32), "{op:?} in {bits}-bit code");
            }
        }
    }

    #[test]
    fn templates_encode_as_the_sdm_says() {
        let mut mem = vec![0u8; 64];
        let mut e = Emitter { mem: &mut mem, pos: 0, end: 64, bits: 32, svm: false };
        e.mov32(1, 0x1234_5678);
        mov_cr_dr(&mut e, 0x22, 8, 9); // MOV CR8, R9: REX.R REX.B 0F 22 C1
        e.mem(6, 0x6008);
        assert_eq!(&mem[..15], &[0xb9, 0x78, 0x56, 0x34, 0x12, 0x45, 0x0f, 0x22, 0xc1, 0x35, 0x08, 0x60, 0, 0, 0]);
        let mut mem = vec![0u8; 64];
        let mut e = Emitter { mem: &mut mem, pos: 0, end: 64, bits: 16, svm: false };
        e.mov32(0, 1);
        e.mem(7, 0x6010);
        e.mov_dx(0x3f8);
        assert_eq!(&mem[..12], &[0x66, 0xb8, 1, 0, 0, 0, 0x3e, 0x10, 0x60, 0xba, 0xf8, 0x03]);
        let mut mem = vec![0u8; 64];
        let mut e = Emitter { mem: &mut mem, pos: 0, end: 64, bits: 64, svm: false };
        e.mov64(10, 0x1122_3344_5566_7788);
        e.mem(2, 0x6000);
        e.iret();
        assert_eq!(
            &mem[..19],
            &[0x49, 0xba, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x14, 0x25, 0, 0x60, 0, 0, 0x48, 0xcf, 0]
        );
    }

    #[test]
    fn the_emitter_never_writes_past_its_end() {
        let mut mem = vec![0u8; 32];
        let mut e = Emitter { mem: &mut mem, pos: 0, end: 10, bits: 64, svm: false };
        e.mov64(0, u64::MAX);
        e.mov64(0, u64::MAX);
        assert_eq!(e.pos, 10);
        assert!(mem[10..].iter().all(|&b| b == 0));
    }

    #[test]
    fn the_wrap_template_lands_on_its_instruction() {
        // Find a 32-bit program with the wrap jump and check the arithmetic.
        for s in 0..200 {
            let (mem, plan) = gen(s, LYNNFIELD);
            if plan.mode.bits() != 32 {
                continue;
            }
            let d = u64::from_le_bytes(mem[(GDT + SEL_WRAP as u64) as usize..][..8].try_into().unwrap());
            let base = ((d >> 16) & 0xff_ffff) | ((d >> 56) << 24);
            if base == 0x1000 {
                continue;
            }
            // The jump is 7 bytes before the instruction that ends at `base`.
            let jump = (0..MEM_SIZE as usize - 7)
                .find(|&i| mem[i] == 0xea && mem[i + 5..i + 7] == SEL_WRAP.to_le_bytes() && i as u64 + 7 < base)
                .expect("the jump");
            let offset = u32::from_le_bytes(mem[jump + 1..jump + 5].try_into().unwrap());
            let linear = (base as u32).wrapping_add(offset);
            assert_eq!(linear as usize, jump + 7, "seed {s}");
            return;
        }
        panic!("no program with a wrap jump");
    }

    #[test]
    fn structures_are_in_place() {
        let (mem, plan) = gen(5, ALL_CAPS);
        let at = |a: u64| u64::from_le_bytes(mem[a as usize..a as usize + 8].try_into().unwrap());
        assert_eq!(at(GDT + SEL_CODE32 as u64), 0x00cf_9b00_0000_ffff);
        assert_eq!(at(GDT + SEL_DATA as u64), 0x00cf_9300_0000_ffff);
        assert_eq!(at(GDT + SEL_CODE64 as u64), 0x00af_9b00_0000_ffff);
        assert_eq!(at(GDT + SEL_TSS as u64), 0x0000_8b00_0a00_0067);
        assert_eq!(mem[(STUBS + 2 * STUB_SIZE) as usize], 0xf4);
        assert!(plan.rflags & 0x2 != 0 && plan.rflags & !0x4_4fd7 == 0, "{:#x}", plan.rflags);
        assert!(plan.rip < MEM_SIZE);
        assert_eq!(plan.dr7 >> 32, 0);
        // The PAE PDPT's first entry is what the plan carries for the VMCS.
        for s in 0..100 {
            let (mem, plan) = gen(s, LYNNFIELD);
            if plan.mode == Mode::Pae {
                assert_eq!(plan.pdptes, [TABLES + 0x1000 + 1, 0, 0, 0]);
                assert_eq!(u64::from_le_bytes(mem[TABLES as usize..][..8].try_into().unwrap()), plan.pdptes[0]);
                return;
            }
        }
        panic!("no PAE run in 100 seeds");
    }

    #[test]
    fn a_plans_cr0_follows_its_mode() {
        let mem = &mut alloc::vec![0u8; MEM_SIZE as usize];
        for seed in 0..200 {
            let p = generate(seed, Caps::svm(true, true, true), mem);
            let c = p.cr0();
            assert_eq!(c & (cr0::ET | cr0::NE), cr0::ET | cr0::NE);
            assert_eq!(c & cr0::PE != 0, p.mode.protected() || p.cr0_extra & cr0::PE != 0, "{:?}", p.mode);
            assert_eq!(c & cr0::PG != 0, p.mode.paging() || p.cr0_extra & cr0::PG != 0, "{:?}", p.mode);
            assert_eq!(c & p.cr0_extra, p.cr0_extra);
        }
    }

    #[test]
    fn endings_are_named_or_host_failures() {
        assert_eq!(classify(Ending::TripleFault), Class::Named("triple-fault"));
        assert_eq!(classify(Ending::GuestReportedFailure(3)), Class::Named("vmcall"));
        assert_eq!(classify(Ending::Unexpected(basic::INVD)), Class::Named("invd"));
        assert_eq!(classify(Ending::Unexpected(basic::IO_INSTRUCTION)), Class::Named("io-refused"));
        assert_eq!(classify(Ending::EntryFailed), Class::HostFailure("VM entry (VMRUN) failed"));
        use crate::svm::exit_code as c;
        assert_eq!(classify(Ending::NestedPageFault), Class::Named("npf"));
        assert_eq!(classify(Ending::InsnUnreadable), Class::Named("insn-unreadable"));
        assert_eq!(classify(Ending::NotResumed), Class::Named("not-resumed"));
        assert_eq!(classify(Ending::UnexpectedSvm(c::IOIO as u16)), Class::Named("io-refused"));
        assert_eq!(classify(Ending::UnexpectedSvm(c::MWAIT_CONDITIONAL as u16)), Class::Named("mwait"));
        assert_eq!(classify(Ending::UnexpectedSvm(c::RSM as u16)), Class::Named("rsm"));
        assert_eq!(classify(Ending::UnexpectedSvm(c::TR_WRITE as u16)), Class::Named("ltr"));
        assert_eq!(classify(Ending::UnexpectedSvm(c::DR0_WRITE as u16 + 7)), Class::Named("mov-dr"));
        for code in [c::NMI, c::SMI, c::INIT, c::INTR, c::SHUTDOWN, c::NPF, c::VMRUN, c::CPUID] {
            assert_eq!(
                classify(Ending::UnexpectedSvm(code as u16)),
                Class::HostFailure("a #VMEXIT the handler cannot name"),
                "{code:#x}"
            );
        }
        for code in 0..0x100u16 {
            if let Class::Named(n) = classify(Ending::UnexpectedSvm(code)) {
                assert!(ENDING_NAMES.contains(&n), "{n}");
            }
        }
        for r in [basic::EXCEPTION_OR_NMI, basic::EPT_MISCONFIGURATION, basic::INIT_SIGNAL, 200] {
            assert_eq!(classify(Ending::Unexpected(r)), Class::HostFailure("an exit the handler cannot name"));
        }
        // Every named class is in the line's catalogue.
        for r in 0..100 {
            if let Class::Named(n) = classify(Ending::Unexpected(r)) {
                assert!(ENDING_NAMES.contains(&n), "{n}");
            }
        }
    }

    #[test]
    fn the_line_has_the_issue_format() {
        let mut t = Tally::default();
        let empty = alloc::format!("{}", Line { cpu: 0, tally: &t, seed: 9 });
        assert_eq!(empty, "fuzz: cpu=0 runs=0 exits=0 endings=none host_failures=0 seed=9");
        t.count(Mode::Real, Ending::Hlt, 3);
        t.count(Mode::Real, Ending::TripleFault, 10);
        t.count(Mode::Long64, Ending::TripleFault, 0);
        t.count(Mode::Long64, Ending::EntryFailed, 1);
        t.host_failure();
        let line = alloc::format!("{}", Line { cpu: 1, tally: &t, seed: 123 });
        assert_eq!(line, "fuzz: cpu=1 runs=4 exits=14 endings=triple-fault:2,hlt:1 host_failures=2 seed=123");
        assert_eq!(alloc::format!("{}", ModesLine(1, &t)), "fuzz: cpu=1 modes=real:2,long64:2");
        assert_eq!(alloc::format!("{}", StartModes(ALL_CAPS)), "real,protected,paged32,pae,long64,compat");
        assert_eq!(alloc::format!("{}", StartModes(PENRYN)), "paged32,pae,long64,compat");
        t.count_named(Mode::Pae, "watchdog", 1);
        let line = alloc::format!("{}", Line { cpu: 1, tally: &t, seed: 123 });
        assert_eq!(
            line,
            "fuzz: cpu=1 runs=5 exits=15 endings=triple-fault:2,hlt:1,watchdog:1 host_failures=2 seed=123"
        );
    }
}
