//! Issue 3/4: VMX root operation on every core, as the seed and
//! get_vmx_global_data describe; the failure paths by fault injection.

use boottests::{Boot, Log};

const SKYLAKE: &str = "corei7_skylake_x";

/// Every CPU 0..n logged `line` (after its `[cpuN] LEVEL ` prefix).
fn assert_on_every_cpu(log: &Log, n: u32, level_and_text: &str) {
    for i in 0..n {
        log.assert_line(&format!("[cpu{i}] {level_and_text}"));
    }
}

#[test]
fn qemu_tcg_has_no_vmx_on_any_cpu() {
    // An Intel model: QEMU's default CPU is AMD's (NO_VMX would be named in SVM's terms).
    let log = Boot::qemu("qemu-novmx-4").cpu_model("Skylake-Server").cpus(4).run();
    log.assert_no_exception();
    assert_on_every_cpu(&log, 4, "ERROR VMX not supported (CPUID.01H:ECX[5]=0)");
    log.assert_summary(4, 4, 0, 0, "NO_VMX");
}

#[test]
fn bochs_feature_control_locked_off_by_firmware() {
    let log = Boot::bochs("bochs-fc-locked-off", SKYLAKE).cpus(2).cmdline("inject=fc-locked-off").run();
    log.assert_no_exception();
    assert_on_every_cpu(&log, 2, "ERROR VMX disabled by firmware (IA32_FEATURE_CONTROL=0x1): locked with bit 2 (enable VMX outside SMX) clear; VMXON would raise #GP");
    if log.lines.iter().any(|l| l.contains("vmxon ok")) {
        log.fail("VMXON was attempted although VMX is locked off");
    }
    log.assert_summary(2, 2, 0, 0, "NO_VMX");
}

#[test]
fn bochs_vmxon_twice_is_decoded_and_vmxcap_printed() {
    let log = Boot::bochs("bochs-vmxon-twice", SKYLAKE).cmdline("inject=vmxon-twice vmxcap loglevel=debug").run();
    log.assert_no_exception();
    log.assert_line("[cpu0] INFO  vmxon ok (revision identifier 0x2b)");
    log.assert_line("[cpu0] INFO  inject: second VMXON failed as the SDM says: VMfailValid (ZF=1), VM-instruction error 15: VMXON executed in VMX root operation");
    log.assert_line("[cpu0] INFO  inject: still in VMX root operation (VMCLEAR succeeds)");
    log.assert_line("[cpu0] INFO  vmxoff ok, CR4.VMXE cleared");
    // The step-by-step debug lines of get_vmx_global_data and the seed.
    log.assert_line("[cpu0] DEBUG vmx: IA32_FEATURE_CONTROL=0x5: locked by firmware with VMX enabled");
    log.assert_line("[cpu0] DEBUG vmx: mode check: IA32_EFER.LMA=1 CS.L=1 RFLAGS.VM=0 CPL=0");
    log.assert_line("[cpu0] DEBUG vmx: CR4 0x60 -> 0x2060 (set: VMXE; cleared: none)");
    // vmxcap: decoded rows whose value depends on the MSRs (Bochs skylake).
    for row in [
        "[cpu0] INFO  vmxcap:   VMCS revision identifier                             43",
        "[cpu0] INFO  vmxcap:   unrestricted guest                                   yes",
        "[cpu0] INFO  vmxcap:   activate VMX-preemption timer                        yes",
        "[cpu0] INFO  vmxcap:   process posted interrupts                            no",
        "[cpu0] INFO  vmxcap:   activate tertiary controls                           no",
    ] {
        log.assert_line(row);
    }
    let cr4_vmxe = log.lines_starting("[cpu0] INFO  vmxcap:   CR4.VMXE (bit 13)");
    if cr4_vmxe.len() != 1 || !cr4_vmxe[0].ends_with("must be 1") {
        log.fail("vmxcap must say CR4.VMXE must be 1");
    }
    // Still in VMX root after the failed second VMXON: the guest runs and the run passes.
    log.assert_summary(1, 1, 1, 1, "PASS");
}
