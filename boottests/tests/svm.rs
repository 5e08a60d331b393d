//! Issue 17: the same ISO is a hypervisor on AMD processors. QEMU's TCG
//! (`-cpu max` and `EPYC`: nested paging, no NRIP save; `qemu64`: SVM
//! without nested paging) and Bochs's `ryzen` and `zambezi`
//! models emulate SVM: every CPU turns it on and runs the proof guest
//! through VMRUN, contained by nested paging (or host-owned page tables).

use boottests::{Boot, Log};

const NESTED: &str = "INFO  guest: mode real mode from the reset vector F000:FFF0 (nested paging); protection: nested paging maps the guest's own memory and nothing of the hypervisor";
const NO_NESTED: &str = "INFO  guest: mode 32-bit protected mode with paging (no nested paging); protection: host-owned page tables map only the guest's memory; CR3 loads, task switches and CR0/CR4 paging changes are intercepted and refused";

/// Every CPU turned SVM on, ran its guest in `mode` with its own ASID, and
/// turned SVM off after every guest had ended; SUMMARY last.
fn assert_svm_guest_on_every_cpu(log: &Log, n: u32, mode: &str, revision_asids: &str) {
    log.assert_no_exception();
    log.assert_online_lines(n);
    for i in 0..n {
        log.assert_line(&format!("[cpu{i}] INFO  svm on (EFER.SVME set; SVM revision {revision_asids} ASIDs)"));
        log.assert_line(&format!("[cpu{i}] {mode}"));
        log.assert_line(&format!("[cpu{i}] INFO  guest: hello from guest on cpu {i}"));
        log.assert_line(&format!("[cpu{i}] INFO  guest ok: ended with VMMCALL success"));
        log.assert_line(&format!("[cpu{i}] INFO  svm off, EFER.SVME cleared"));
    }
    let position = |line: String| log.position(&line).unwrap_or_else(|| log.fail(&format!("missing line: {line:?}")));
    let last_guest = (0..n).map(|i| position(format!("[cpu{i}] INFO  guest ok: ended with VMMCALL success"))).max();
    let first_off = (0..n).map(|i| position(format!("[cpu{i}] INFO  svm off, EFER.SVME cleared"))).min();
    if last_guest >= first_off {
        log.fail("expected: every guest ends, then SVM off everywhere");
    }
    log.assert_summary(n, n, n, n, "PASS");
}

/// QEMU TCG with a CPU model that has SVM and nested paging.
fn qemu_svm(name: &str, model: &'static str, machine: &'static str, cpus: u32, uefi: bool) {
    let mut boot = Boot::qemu(name).cpu_model(model).machine(machine).cpus(cpus);
    if uefi {
        boot = boot.uefi();
    }
    let log = boot.run();
    assert_svm_guest_on_every_cpu(&log, cpus, NESTED, "1, 16");
    // ASID n+1 on processor n (0 is the host's; QEMU offers 16).
    for i in 0..cpus {
        log.assert_line(&format!(
            "[cpu{i}] INFO  guest: ASID {} tags its TLB entries; time budget: the local-APIC timer",
            i % 15 + 1
        ));
    }
}

#[test]
fn qemu_max_pc_bios_one_cpu() {
    qemu_svm("svm-max-pc-1", "max", "pc", 1, false);
}

#[test]
fn qemu_max_q35_bios_four_cpus() {
    qemu_svm("svm-max-q35-4", "max", "q35", 4, false);
}

#[test]
fn qemu_max_q35_uefi_four_cpus() {
    qemu_svm("svm-max-uefi-4", "max", "q35", 4, true);
}

#[test]
fn qemu_epyc_pc_bios_sixteen_cpus() {
    qemu_svm("svm-epyc-pc-16", "EPYC", "pc", 16, false);
}

#[test]
fn qemu_epyc_q35_uefi_one_cpu() {
    qemu_svm("svm-epyc-uefi-1", "EPYC", "q35", 1, true);
}

#[test]
fn qemu_max_q35_sixty_four_cpus() {
    let log = Boot::qemu("svm-max-q35-64").cpu_model("max").machine("q35").cpus(64).memory(512).run();
    assert_svm_guest_on_every_cpu(&log, 64, NESTED, "1, 16");
}

/// QEMU's default CPU: SVM without nested paging. The guest runs on page
/// tables the hypervisor owns.
#[test]
fn qemu64_has_svm_without_nested_paging() {
    let log = Boot::qemu("svm-qemu64-2").cpu_model("qemu64").cpus(2).cmdline("loglevel=debug").run();
    assert_svm_guest_on_every_cpu(&log, 2, NO_NESTED, "1, 16");
    log.assert_line("[cpu0] DEBUG svm: CPUID Fn8000_000A: revision 1, 16 ASIDs");
}

#[test]
fn bochs_ryzen_one_and_two_cpus() {
    for cpus in [1, 2] {
        let log = Boot::bochs(&format!("svm-ryzen-{cpus}"), "ryzen").cpus(cpus).run();
        assert_svm_guest_on_every_cpu(&log, cpus, NESTED, "1, 32768");
    }
}

#[test]
fn bochs_zambezi_one_and_two_cpus() {
    for cpus in [1, 2] {
        let log = Boot::bochs(&format!("svm-zambezi-{cpus}"), "zambezi").cpus(cpus).run();
        assert_svm_guest_on_every_cpu(&log, cpus, NESTED, "1, 64");
    }
}

/// Every attempt of the hostile guest is contained and named, with nested
/// paging (`-cpu max`) and without (`qemu64`).
#[test]
fn hostile_guest_is_contained() {
    let with = [
        "hostile step 1 (read outside its memory): contained: nested page fault at GPA 0x40000000 (read, not mapped)",
        "hostile step 2 (write outside its memory): contained: nested page fault at GPA 0x200000 (write, not mapped)",
        "hostile step 5 (load CR3 with garbage and enable paging): contained: nested page fault at GPA 0xdeadb000 (write, not mapped, during a guest page walk)",
    ];
    let without = [
        "hostile step 1 (read outside its memory): contained: triple fault",
        "hostile step 2 (write outside its memory): contained: triple fault",
        "hostile step 5 (load CR3 with garbage and enable paging): contained: control-register write refused",
    ];
    for (model, cpus, specific) in [("max", 2, with), ("qemu64", 1, without)] {
        let log =
            Boot::qemu(&format!("svm-hostile-{model}")).cpu_model(model).cpus(cpus).cmdline("guest=hostile").run();
        log.assert_no_exception();
        for i in 0..cpus {
            for line in specific {
                log.assert_line(&format!("[cpu{i}] INFO  {line}"));
            }
            for (step, what) in [
                (8, "execute VMRUN"),
                (9, "execute VMLOAD"),
                (10, "execute VMSAVE"),
                (11, "execute STGI"),
                (12, "execute CLGI"),
                (13, "execute SKINIT"),
            ] {
                log.assert_line(&format!(
                    "[cpu{i}] INFO  guest executed {}: SVM is hidden from guests, #UD injected",
                    &what["execute ".len()..]
                ));
                log.assert_line(&format!("[cpu{i}] INFO  hostile step {step} ({what}): contained: triple fault"));
            }
            for line in [
                "WARN  guest: WRMSR 0xc0000080: not allowed, #GP injected",
                "INFO  hostile step 14 (set EFER.SVME): contained: triple fault",
                "WARN  guest: RDMSR 0xc0010117: not emulated, #GP injected",
                "INFO  hostile step 15 (read VM_HSAVE_PA): contained: triple fault",
                "INFO  hostile step 16 (read VM_CR: SVM must read disabled and locked): contained: VMMCALL success",
                "WARN  guest: VMMCALL function 0xdeadbeef unknown: refused",
                "INFO  hostile step 4 (VMCALL with bad arguments): contained: VMMCALL success",
                "INFO  hostile step 6 (triple-fault): contained: triple fault",
                "INFO  hostile step 7 (spin forever with interrupts off): contained: the host's APIC timer expired (time budget)",
                "INFO  guest ok: hostile guest contained (15 of 15 attempts)",
            ] {
                log.assert_line(&format!("[cpu{i}] {line}"));
            }
        }
        log.assert_summary(cpus, cpus, cpus, cpus, "PASS");
    }
}

/// `inject=svm-locked-off`: VM_CR reads as firmware that disabled SVM and
/// locked it leaves it; no CPU sets EFER.SVME, the run is NO_VMX.
#[test]
fn svm_locked_off_by_firmware() {
    let log = Boot::qemu("svm-locked-off").cpu_model("max").cpus(2).cmdline("inject=svm-locked-off").run();
    log.assert_no_exception();
    for i in 0..2 {
        log.assert_line(&format!(
            "[cpu{i}] INFO  inject: VM_CR=0x0; simulating firmware that disabled SVM and locked it at 0x18"
        ));
        log.assert_line(&format!(
            "[cpu{i}] ERROR SVM disabled by firmware (VM_CR=0x18): locked with SVMDIS set; setting EFER.SVME would raise #GP"
        ));
    }
    log.assert_count("[cpu0] INFO  svm on", 0);
    log.assert_summary(2, 2, 0, 0, "NO_VMX");
}

/// An Intel CPU without VMX (QEMU's TCG has none): NO_VMX, named in VMX's terms.
#[test]
fn intel_without_vmx_is_no_vmx() {
    let log = Boot::qemu("svm-skylake-server").cpu_model("Skylake-Server").cpus(2).run();
    log.assert_no_exception();
    for i in 0..2 {
        log.assert_line(&format!("[cpu{i}] ERROR VMX not supported (CPUID.01H:ECX[5]=0)"));
    }
    log.assert_summary(2, 2, 0, 0, "NO_VMX");
}

/// The seed's steps in AMD's terms at debug level, and `svmcap`.
#[test]
fn svm_steps_and_svmcap() {
    let log = Boot::qemu("svm-svmcap").cpu_model("EPYC").cmdline("loglevel=debug svmcap").run();
    log.assert_no_exception();
    for line in [
        // QEMU's TCG offers no NRIP save, even for EPYC (it filters the bit).
        "[cpu0] DEBUG svm: CPUID Fn8000_000A: revision 1, 16 ASIDs, NP",
        "[cpu0] DEBUG svm: VM_CR=0x0: SVMDIS clear, unlocked",
        "[cpu0] INFO  svmcap: CPUID Fn8000_000A_EBX = 0x00000010: 16 address space identifiers (ASIDs)",
        "[cpu0] INFO  svmcap:   NP                     yes nested paging",
        "[cpu0] INFO  svmcap:   NRIPS                  no  next RIP saved on #VMEXIT",
        "[cpu0] INFO  svmcap:   FlushByAsid            no  TLB flush by ASID",
        "[cpu0] INFO  svmcap:   SVMDIS                 no  EFER.SVME cannot be set",
    ] {
        log.assert_line(line);
    }
    log.assert_summary(1, 1, 1, 1, "PASS");
}

/// A VMRUN that fails (#VMEXIT(INVALID)) is decoded, the broken rule named.
#[test]
fn vmrun_failures_are_explained() {
    for (name, inject, rule) in [
        ("svm-bad-guest", "entry-bad-guest", "vmrun check svm.efer.svme: "),
        ("svm-bad-control", "entry-bad-control", "vmrun check svm.intercept.vmrun: "),
    ] {
        let log = Boot::qemu(name).cpu_model("max").cmdline(&format!("inject={inject}")).run();
        log.assert_no_exception();
        log.assert_line("[cpu0] ERROR VMRUN failed: #VMEXIT(INVALID) (exit code 0xffffffffffffffff): an illegal state combination in the VMCB (APM Vol. 2 §15.5.1 \"Basic Operation\")");
        if log.lines_starting(&format!("[cpu0] ERROR   {rule}")).len() != 1 {
            log.fail(&format!("expected the one broken rule named: {rule}"));
        }
        log.assert_line("[cpu0] ERROR guest failed: VM-entry failure");
        log.assert_summary(1, 1, 1, 0, "FAIL");
    }
}

/// `vmcheck`: the software VMRUN checker passes the proof guest's VMCB.
#[test]
fn vmcheck_passes_the_proof_guest() {
    for model in ["max", "qemu64"] {
        let log = Boot::qemu(&format!("svm-vmcheck-{model}")).cpu_model(model).cmdline("vmcheck").run();
        log.assert_line("[cpu0] INFO  vmcheck: the VMCB passes every VMRUN check");
        log.assert_summary(1, 1, 1, 1, "PASS");
    }
}
