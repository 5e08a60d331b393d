//! The 32 exception vectors: each reports the vector's name, error code, RIP,
//! CS, RFLAGS, RSP, CR2, CR3 and the general registers, then ends the run with
//! result=FAIL. No exception is survivable in this kernel: interrupts stay off
//! and nothing is expected to fault.

use crate::pcb::{self, IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI};
use core::sync::atomic::Ordering;
use log::error;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

core::arch::global_asm!(include_str!("exceptions.s"), options(att_syntax));

extern "C" {
    static EXCEPTION_STUBS: [u64; 32];
}

/// The stack as `exception_common` leaves it (lowest address first).
#[repr(C)]
pub struct ExceptionFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    // Pushed by the CPU (SDM Vol. 3A 7.14.2).
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Mnemonic and name of each architectural vector (SDM Vol. 3A Table 7-1).
const NAMES: [(&str, &str); 32] = [
    ("#DE", "divide error"),
    ("#DB", "debug"),
    ("NMI", "non-maskable interrupt"),
    ("#BP", "breakpoint"),
    ("#OF", "overflow"),
    ("#BR", "BOUND range exceeded"),
    ("#UD", "invalid opcode"),
    ("#NM", "device not available"),
    ("#DF", "double fault"),
    ("#MF9", "coprocessor segment overrun"),
    ("#TS", "invalid TSS"),
    ("#NP", "segment not present"),
    ("#SS", "stack-segment fault"),
    ("#GP", "general protection"),
    ("#PF", "page fault"),
    ("#15", "reserved"),
    ("#MF", "x87 floating-point error"),
    ("#AC", "alignment check"),
    ("#MC", "machine check"),
    ("#XM", "SIMD floating-point"),
    ("#VE", "virtualization exception"),
    ("#CP", "control protection"),
    ("#22", "reserved"),
    ("#23", "reserved"),
    ("#24", "reserved"),
    ("#25", "reserved"),
    ("#26", "reserved"),
    ("#27", "reserved"),
    ("#HV", "hypervisor injection"),
    ("#VC", "VMM communication"),
    ("#SX", "security exception"),
    ("#31", "reserved"),
];

/// The per-CPU IDT: all 256 vectors, the 32 exceptions present. Interrupts
/// stay masked on the host; a stray vector above 31 finds a not-present gate
/// and is reported as #NP naming it (after a VM exit the IDTR limit is 0xFFFF,
/// SDM Vol. 3C 28.5.2, so the table must cover every vector).
#[repr(C, align(16))]
pub struct Idt([IdtGate; 256]);

/// A 64-bit interrupt gate (SDM Vol. 3A 7.14.1, Figure 7-8).
#[repr(C)]
#[derive(Clone, Copy)]
struct IdtGate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

/// Present, DPL 0, type 0xE (64-bit interrupt gate: IF cleared on entry).
const INTERRUPT_GATE: u8 = 0x8e;
const NOT_PRESENT: IdtGate =
    IdtGate { offset_low: 0, selector: 0, ist: 0, type_attr: 0, offset_mid: 0, offset_high: 0, reserved: 0 };

impl Idt {
    /// All 32 vectors point at their stubs; NMI, #DF and #MC switch to their own
    /// IST stacks (TSS.IST1-3), so they report even on an overflowed stack.
    pub fn new() -> Idt {
        // SAFETY: EXCEPTION_STUBS is a read-only table emitted by exceptions.s.
        let stubs = unsafe { &EXCEPTION_STUBS };
        Idt(core::array::from_fn(|vector| {
            if vector >= 32 {
                return NOT_PRESENT;
            }
            let ist = match vector {
                2 => IST_NMI + 1,
                8 => IST_DOUBLE_FAULT + 1,
                18 => IST_MACHINE_CHECK + 1,
                _ => 0,
            };
            let addr = stubs[vector];
            IdtGate {
                offset_low: addr as u16,
                selector: pcb::KERNEL_CS,
                ist: ist as u8,
                type_attr: INTERRUPT_GATE,
                offset_mid: (addr >> 16) as u16,
                offset_high: (addr >> 32) as u32,
                reserved: 0,
            }
        }))
    }

    /// Load this IDT on the running CPU.
    ///
    /// # Safety
    /// The IDT must stay in place, unchanged, while it is loaded (it lives in a 'static PCB).
    pub unsafe fn load(&self) {
        let ptr =
            DescriptorTablePointer { limit: (core::mem::size_of::<Idt>() - 1) as u16, base: VirtAddr::from_ptr(self) };
        // SAFETY: the caller keeps the IDT in place; its gates point at valid handlers.
        unsafe { lidt(&ptr) };
    }
}

/// The selector error code of #TS, #NP, #SS and #GP (SDM Vol. 3A 7.13):
/// bit 1 says it indexes the IDT, so a stray interrupt vector is named.
struct SelectorError(usize, u64);

impl core::fmt::Display for SelectorError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (vector, code) = (self.0, self.1);
        if (10..=13).contains(&vector) && code & 0b10 != 0 {
            // #TS #NP #SS #GP
            write!(f, " (IDT vector {})", code >> 3)?;
        }
        Ok(())
    }
}

#[no_mangle]
extern "C" fn exception_dispatch(f: &ExceptionFrame) -> ! {
    let vector = f.vector as usize;
    // An NMI sent by the CPU that is ending the run: stop here quietly.
    if vector == 2 && crate::run::is_ending() {
        crate::run::park();
    }
    let nested = pcb::has_pcb() && pcb::this_cpu().in_exception.swap(true, Ordering::AcqRel);
    let (mnemonic, name) = NAMES[vector % 32];
    if nested {
        error!("EXCEPTION {mnemonic} while reporting an exception, at RIP={:#018x}", f.rip);
        crate::run::fail_and_end("nested exception");
    }
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    let cr3 = x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64();
    let cpu = pcb::this_cpu_index();
    error!(
        "EXCEPTION {mnemonic} ({name}) on cpu{cpu}: vector={vector} error_code={:#x}{}",
        f.error_code,
        SelectorError(vector, f.error_code)
    );
    error!("  RIP={:#018x} CS={:#06x} RFLAGS={:#010x} RSP={:#018x} SS={:#06x}", f.rip, f.cs, f.rflags, f.rsp, f.ss);
    error!("  CR2={:#018x} CR3={:#018x}", cr2, cr3);
    error!("  RAX={:#018x} RBX={:#018x} RCX={:#018x} RDX={:#018x}", f.rax, f.rbx, f.rcx, f.rdx);
    error!("  RSI={:#018x} RDI={:#018x} RBP={:#018x} R8 ={:#018x}", f.rsi, f.rdi, f.rbp, f.r8);
    error!("  R9 ={:#018x} R10={:#018x} R11={:#018x} R12={:#018x}", f.r9, f.r10, f.r11, f.r12);
    error!("  R13={:#018x} R14={:#018x} R15={:#018x}", f.r13, f.r14, f.r15);
    crate::run::fail_and_end("exception");
}
