//! VMRUN failures and guest state, explained: a #VMEXIT with exit code -1
//! (VMEXIT_INVALID) says only that the VMCB holds an illegal state
//! combination; the software VMRUN checker (`hvlogic::svm::vmrun_check`)
//! names the rule. `vmcheck` runs it before the first VMRUN.

use super::vmcb::Vmcb;
use crate::virt::regs::GuestRegs;
use hvlogic::cmdline::ExitMode;
use hvlogic::svm::exit_code;
use hvlogic::svm::vmcb::{control, save, Vmcb as Image};
use hvlogic::svm::vmrun_check::departures::Emulator;
use hvlogic::svm::vmrun_check::{self, Cpu, Cpuid, Verdict};
use log::{error, info, log, Level};

/// What the checker must know of this CPU, from CPUID.
pub fn cpu_facts() -> Cpu {
    let c = |leaf: u32, sub: u32| raw_cpuid::cpuid!(leaf, sub);
    let max_ext = c(0x8000_0000, 0).eax;
    let ext = |leaf: u32| {
        if max_ext >= leaf {
            c(leaf, 0)
        } else {
            raw_cpuid::CpuIdResult { eax: 0, ebx: 0, ecx: 0, edx: 0 }
        }
    };
    let (l1, l7, e1, e8, ea, e1f, e21) =
        (c(1, 0), c(7, 0), ext(0x8000_0001), ext(0x8000_0008), ext(0x8000_000a), ext(0x8000_001f), ext(0x8000_0021));
    Cpu::from_cpuid(&Cpuid {
        l1_ecx: l1.ecx,
        l1_edx: l1.edx,
        l7_ebx: l7.ebx,
        l7_ecx: l7.ecx,
        e1_ecx: e1.ecx,
        e1_edx: e1.edx,
        e8_eax: e8.eax,
        e8_ebx: e8.ebx,
        ea_eax: ea.eax,
        ea_ebx: ea.ebx,
        ea_edx: ea.edx,
        e1f_eax: e1f.eax,
        e21_eax: e21.eax,
    })
}

/// Which emulator's departures apply: QEMU's TCG (CPUID leaf 4000_0000h
/// reads `TCGTCGTCGTCG`), Bochs (`exit=bochs`), or none.
pub fn emulator() -> Option<Emulator> {
    let r = raw_cpuid::cpuid!(0x4000_0000);
    let hypervisor = raw_cpuid::cpuid!(1).ecx & (1 << 31) != 0;
    if hypervisor {
        if let Some(e) = Emulator::from_hypervisor_signature(r.ebx, r.ecx, r.edx) {
            return Some(e);
        }
    }
    (crate::run::options().exit == ExitMode::Bochs).then_some(Emulator::Bochs)
}

/// The VMCB as the checker reads it.
pub fn image(vmcb: &Vmcb) -> Image {
    let mut bytes = [0u8; 4096];
    for (i, chunk) in bytes.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&vmcb.u64(i * 8).to_le_bytes());
    }
    Image::from_bytes(&bytes)
}

/// The checker on a VMCB image for `cpu`, with the PDPEs read where the
/// kernel may read (the heap and the first 640 KiB).
pub fn violations(v: &Image, cpu: &Cpu) -> alloc::vec::Vec<vmrun_check::Violation> {
    vmrun_check::check_with(&vmrun_check::Input { vmcb: v, cpu, memory: &crate::memory::read_physical, skip: &[] })
}

/// The checker's rules broken by `vmcb`, and its verdict.
pub fn check(vmcb: &Vmcb) -> (alloc::vec::Vec<vmrun_check::Violation>, Verdict) {
    let violations = violations(&image(vmcb), &cpu_facts());
    let verdict = Verdict::from_violations(&violations);
    (violations, verdict)
}

/// `vmcheck`: the checker on this VMCB before VMRUN.
pub fn vmcheck(vmcb: &Vmcb) {
    let (violations, verdict) = check(vmcb);
    if violations.is_empty() {
        info!("vmcheck: the VMCB passes every VMRUN check");
        return;
    }
    for v in &violations {
        error!("vmcheck: {v}");
    }
    error!("vmcheck: {} rule(s) broken, the checker predicts {verdict}", violations.len());
}

/// VMRUN refused the VMCB: #VMEXIT(INVALID), named rule by rule.
pub fn vmrun_failure<G>(vcpu: &super::vcpu::Vcpu<G>) {
    error!(
        "VMRUN failed: #VMEXIT(INVALID) (exit code {:#x}): an illegal state combination in the VMCB (APM Vol. 2 §15.5.1 \"Basic Operation\")",
        exit_code::INVALID
    );
    let (violations, _) = check(&vcpu.vmcb);
    if violations.is_empty() {
        error!("  the software VMRUN checker finds no rule broken (an emulator departure, or a check it lacks)");
    }
    for v in &violations {
        error!("  {v}");
    }
}

/// The checker's rules a VMCB image breaks, and its guest state, as ERROR
/// lines headed by `what`.
pub fn explain_image(v: &Image, what: &str) {
    let violations = violations(v, &cpu_facts());
    error!(
        "  {what}: RIP={:#x} CR0={:#x} CR3={:#x} CR4={:#x} EFER={:#x} DR6={:#x} DR7={:#x} EVENTINJ={:#x}; {} rule(s) broken",
        v.read_u64(save::RIP),
        v.read_u64(save::CR0),
        v.read_u64(save::CR3),
        v.read_u64(save::CR4),
        v.read_u64(save::EFER),
        v.read_u64(save::DR6),
        v.read_u64(save::DR7),
        v.read_u64(control::EVENTINJ),
        violations.len()
    );
    for v in &violations {
        error!("    {v}");
    }
}

/// The guest's state from the VMCB and the saved registers.
pub fn guest_state(vmcb: &Vmcb, r: &GuestRegs, exits: u64, level: Level) {
    log!(
        level,
        "  guest RIP={:#x} RSP={:#x} RFLAGS={:#x} CR0={:#x} CR3={:#x} CR4={:#x} EFER={:#x}",
        vmcb.u64(save::RIP),
        vmcb.u64(save::RSP),
        vmcb.u64(save::RFLAGS),
        vmcb.u64(save::CR0),
        vmcb.u64(save::CR3),
        vmcb.u64(save::CR4),
        vmcb.u64(save::EFER)
    );
    let seg = |s: usize| {
        (vmcb.read::<u16>(s), vmcb.u64(s + save::BASE), vmcb.u32(s + save::LIMIT), vmcb.read::<u16>(s + save::ATTRIB))
    };
    let (cs, ss, ds) = (seg(save::CS), seg(save::SS), seg(save::DS));
    log!(
        level,
        "  guest CS={:#06x} base={:#x} limit={:#x} attrib={:#x}; SS={:#06x} attrib={:#x}; DS={:#06x} attrib={:#x}; CPL={}",
        cs.0,
        cs.1,
        cs.2,
        cs.3,
        ss.0,
        ss.3,
        ds.0,
        ds.3,
        vmcb.read::<u8>(save::CPL)
    );
    log!(
        level,
        "  guest RAX={:#x} RBX={:#x} RCX={:#x} RDX={:#x} RSI={:#x} RDI={:#x} RBP={:#x}",
        r.rax,
        r.rbx,
        r.rcx,
        r.rdx,
        r.rsi,
        r.rdi,
        r.rbp
    );
    let exit = exit_code::normalize(vmcb.u64(control::EXITCODE));
    log!(
        level,
        "  #VMEXIT {exit:#x} ({}) EXITINFO1={:#x} EXITINFO2={:#x} EXITINTINFO={:#x}; {exits} exits",
        exit_code::name(exit),
        vmcb.u64(control::EXITINFO1),
        vmcb.u64(control::EXITINFO2),
        vmcb.u64(control::EXITINTINFO)
    );
}
