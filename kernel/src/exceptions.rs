//! The 32 exception vectors: each reports the vector's name, error code, RIP,
//! CS, RFLAGS, RSP, CR2, CR3 and the general registers, then ends the run with
//! result=FAIL. No exception is survivable in this kernel but the #GP of an
//! MSR probe (`crate::msr`): interrupts stay off and nothing else is expected
//! to fault.

use crate::pcb;
use core::sync::atomic::Ordering;
use log::error;

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
    // Pushed by the CPU (SDM Vol. 3A §6.14.2 "64-Bit Mode Stack Frame").
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Mnemonic and name of each architectural vector (SDM Vol. 3A Table 6-1
/// "Protected-Mode Exceptions and Interrupts").
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

/// The selector error code of #TS, #NP, #SS and #GP (SDM Vol. 3A §6.13 "Error
/// Code"): bit 1 says it indexes the IDT, so a stray interrupt vector is named.
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
extern "C" fn exception_dispatch(f: &mut ExceptionFrame) {
    if let Some(resume) = crate::msr::fixup(f.vector, f.rip) {
        f.rip = resume;
        return;
    }
    // Bochs 2.7: a guest's single-step trap delivered to the host after the
    // #VMEXIT, while GS is still the guest's (svm::leaked_single_step).
    if cfg!(feature = "svm") && crate::svm::leaked_single_step(f.vector, f.rip, f.rflags) {
        return;
    }
    let vector = f.vector as usize;
    // An NMI sent by the CPU that is ending the run: stop here quietly.
    if vector == 2 && crate::run::is_ending() {
        crate::run::park();
    }
    // An NMI that reached the host while this CPU runs the OS guest was meant
    // for the OS (NMIs do not exit): it goes back in on a VM entry; one that
    // meets the CPU on its way to wait-for-SIPI is dropped, as the INIT that
    // sends it there would drop it natively.
    if vector == 2 && pcb::has_pcb() && pcb::this_cpu().has(pcb::CPU_STATUS_OS) {
        let pcb = pcb::this_cpu();
        if !pcb.has(pcb::CPU_STATUS_OS_WAITING) {
            crate::virt::backend::nmi_in_host(pcb);
        }
        return;
    }
    // A guest fuzzer's watchdog NMI that arrived after its run had ended.
    if vector == 2 && pcb::has_pcb() && crate::virt::fuzz::watchdog_nmi_in_host(pcb::this_cpu_index()) {
        return;
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
    crate::virt::fuzz::note_host_exception(cpu);
    crate::run::fail_and_end("exception");
}
