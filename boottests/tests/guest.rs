//! Issue 4/4: a guest on every core, run to its end and contained, in Bochs
//! on CPU models with and without unrestricted guest and EPT.

use boottests::{Boot, Log};

const REAL_MODE: &str = "INFO  guest: mode real mode from the reset vector F000:FFF0 (unrestricted guest); protection: EPT maps the guest's own memory and nothing of the hypervisor";

/// Bochs reports VMCS revision 0x2b for most models, 4 for tigerlake.
fn assert_guest_ok_on_every_cpu(log: &Log, n: u32, revision: u32) {
    for i in 0..n {
        log.assert_line(&format!("[cpu{i}] INFO  vmxon ok (revision identifier {revision:#x})"));
        log.assert_line(&format!("[cpu{i}] INFO  guest: hello from guest on cpu {i}"));
        log.assert_line(&format!("[cpu{i}] INFO  guest ok: ended with VMCALL success"));
        log.assert_line(&format!("[cpu{i}] INFO  vmxoff ok, CR4.VMXE cleared"));
    }
}

/// VMXOFF on every CPU comes after every guest ended, and SUMMARY after both.
fn assert_order(log: &Log, n: u32) {
    let position = |line: String| log.position(&line).unwrap_or_else(|| log.fail(&format!("missing line: {line:?}")));
    let last_guest = (0..n).map(|i| position(format!("[cpu{i}] INFO  guest ok: ended with VMCALL success"))).max();
    let first_vmxoff = (0..n).map(|i| position(format!("[cpu{i}] INFO  vmxoff ok, CR4.VMXE cleared"))).min();
    let summary = log.lines.iter().position(|l| l.starts_with("SUMMARY "));
    if !(last_guest < first_vmxoff && first_vmxoff < summary) {
        log.fail("expected: every guest ends, then VMXOFF everywhere, then SUMMARY");
    }
}

#[test]
fn skylake_four_cpus_each_run_a_guest() {
    let log = Boot::bochs("bochs-skylake-4", "corei7_skylake_x").cpus(4).run();
    log.assert_no_exception();
    // Issue 2/4's Bochs scenario: every CPU woken, in x2APIC mode.
    log.assert_line("[cpu0] INFO  apic: x2APIC mode");
    log.assert_online_lines(4);
    log.assert_bring_up(4, 4);
    for i in 0..4 {
        log.assert_line(&format!("[cpu{i}] {REAL_MODE}"));
        log.assert_line(&format!("[cpu{i}] INFO  guest: VPID {} tags its TLB entries", i + 1));
    }
    assert_guest_ok_on_every_cpu(&log, 4, 0x2b);
    assert_order(&log, 4);
    log.assert_summary(4, 4, 4, 4, "PASS");
}

/// One CPU of a Bochs model: the guest runs in the mode the model allows,
/// the log names that mode, and the run passes.
fn one_cpu_model_passes(name: &str, model: &'static str, mode_line: &str, revision: u32) {
    let log = Boot::bochs(name, model).run();
    log.assert_no_exception();
    log.assert_line(&format!("[cpu0] {mode_line}"));
    assert_guest_ok_on_every_cpu(&log, 1, revision);
    log.assert_summary(1, 1, 1, 1, "PASS");
}

#[test]
fn tigerlake_passes_the_entry_checks() {
    one_cpu_model_passes("bochs-tigerlake", "tigerlake", REAL_MODE, 0x4);
}

#[test]
fn lynnfield_has_ept_but_no_unrestricted_guest() {
    one_cpu_model_passes("bochs-lynnfield", "corei5_lynnfield_750",
        "INFO  guest: mode 32-bit protected mode with paging (EPT, no unrestricted guest); protection: EPT maps the guest's own memory and nothing of the hypervisor",
        0x2b);
}

#[test]
fn penryn_has_vmx_without_ept() {
    one_cpu_model_passes("bochs-penryn", "core2_penryn_t9600",
        "INFO  guest: mode 32-bit protected mode with paging (no EPT); protection: host-owned page tables map only the guest's memory; CR3 loads exit and are refused; CR0/CR4 paging bits are host-owned",
        0x2b);
}

#[test]
fn hostile_guest_is_contained() {
    let log = Boot::bochs("bochs-hostile", "corei7_skylake_x").cpus(2).cmdline("guest=hostile").run();
    log.assert_no_exception();
    for i in 0..2 {
        for line in [
            "INFO  hostile step 1 (read outside its memory): contained: EPT violation at GPA 0x40000000 (read, not mapped)",
            "INFO  hostile step 2 (write outside its memory): contained: EPT violation at GPA 0x200000 (write, not mapped)",
            "INFO  guest executed VMXON: VMX is hidden from guests, #UD injected",
            "INFO  hostile step 3 (execute VMXON): contained: triple fault",
            "WARN  guest: VMCALL function 0xdeadbeef unknown: refused",
            "INFO  hostile step 4 (VMCALL with bad arguments): contained: VMCALL success",
            "INFO  hostile step 5 (load CR3 with garbage and enable paging): contained: EPT violation at GPA 0xdeadb000 (read, not mapped, during the guest's page walk)",
            "INFO  hostile step 6 (triple-fault): contained: triple fault",
            "INFO  hostile step 7 (spin forever with interrupts off): contained: VMX-preemption timer expired (time budget)",
            "INFO  guest ok: hostile guest contained (7 of 7 attempts)",
        ] {
            log.assert_line(&format!("[cpu{i}] {line}"));
        }
    }
    // Every contained ending that is not a clean VMCALL comes with a guest-state dump.
    log.assert_count("[cpu0] INFO    guest RIP=0x", 6);
    log.assert_summary(2, 2, 2, 2, "PASS");
}

#[test]
fn bench_guest_reports_its_figures() {
    let log = Boot::bochs("bochs-bench-check", "corei7_skylake_x").cmdline("guest=bench").run();
    log.assert_no_exception();
    // Leaf 0 passes through: entry.s's fast path answers all 10,000 exits.
    // Leaf 1 is adjusted: every exit goes to the dispatcher.
    for (name, leaf, fast) in [("cpuid-exit", "0x0", "10000"), ("cpuid-exit-adjusted", "0x1", "0")] {
        let prefix = format!("[cpu0] INFO  bench: {name} median=");
        let lines = log.lines_starting(&prefix);
        let ok = lines.len() == 1 && {
            let words: Vec<&str> = lines[0][prefix.len()..].split(' ').collect();
            let number = |w: Option<&&str>, key: &str| w.and_then(|w| w.strip_prefix(key)).map(str::parse::<u32>);
            let (median, min) = (number(words.first(), ""), number(words.get(1), "min="));
            matches!((median, min), (Some(Ok(m)), Some(Ok(n))) if n <= m && n > 0)
                && words.get(2) == Some(&format!("leaf={leaf}").as_str())
                && words.get(3) == Some(&format!("fast-path={fast}").as_str())
                && words.len() == 4
        };
        if !ok {
            log.fail(&format!("no well-formed `bench: {name}` line for leaf {leaf} with fast-path={fast}"));
        }
    }
    log.assert_summary(1, 1, 1, 1, "PASS");
}

#[test]
fn entry_failure_on_guest_state_is_explained() {
    let log = Boot::bochs("bochs-entry-bad-guest", "corei7_skylake_x").cmdline("inject=entry-bad-guest").run();
    log.assert_no_exception();
    log.assert_line("[cpu0] INFO  inject: guest RFLAGS bit 1 cleared (it must be 1, SDM Vol. 3C §27.3.1.4 \"Checks on Guest RIP, RFLAGS, and SSP\")");
    log.assert_line("[cpu0] ERROR VM entry failed: VM-entry failure: invalid guest state (exit reason 33 with bit 31 set), exit qualification 0x0: a guest-state check failed (no further detail)");
    // The software checker names the rule, and only that one.
    log.assert_line("[cpu0] ERROR entry check guest.rflags.reserved: Guest RFLAGS bits 63:22, 15, 5 and 3 must be 0 and bit 1 must be 1 (SDM Vol. 3C §27.3.1.4 \"Checks on Guest RIP, RFLAGS, and SSP\")");
    log.assert_line("[cpu0] ERROR entry check: 1 rule broken, the checker predicts exit 33 qualification 0");
    log.assert_line("[cpu0] ERROR guest failed: VM-entry failure");
    log.assert_count("[cpu0] ERROR   guest RIP=0xfff0 ", 1);
    log.assert_line("[cpu0] INFO  vmxoff ok, CR4.VMXE cleared");
    log.assert_summary(1, 1, 1, 0, "FAIL");
}

#[test]
fn vmcheck_passes_the_proof_guest_on_every_model() {
    for (name, model) in
        [("bochs-vmcheck-lynnfield", "corei5_lynnfield_750"), ("bochs-vmcheck-penryn", "core2_penryn_t9600")]
    {
        let log = Boot::bochs(name, model).cmdline("vmcheck").run();
        log.assert_no_exception();
        log.assert_line("[cpu0] INFO  vmcheck: the VMCS passes every entry check");
        log.assert_summary(1, 1, 1, 1, "PASS");
    }
}

#[test]
fn vmcheck_names_the_broken_rule_before_vmlaunch() {
    let log =
        Boot::bochs("bochs-vmcheck-bad-guest", "corei7_skylake_x").cmdline("vmcheck inject=entry-bad-guest").run();
    log.assert_no_exception();
    log.assert_line("[cpu0] ERROR vmcheck: entry check guest.rflags.reserved: Guest RFLAGS bits 63:22, 15, 5 and 3 must be 0 and bit 1 must be 1 (SDM Vol. 3C §27.3.1.4 \"Checks on Guest RIP, RFLAGS, and SSP\")");
    log.assert_line("[cpu0] ERROR vmcheck: 1 rule broken, the checker predicts exit 33 qualification 0");
    log.assert_summary(1, 1, 1, 0, "FAIL");
}

#[test]
fn entry_failure_on_controls_is_explained() {
    let log = Boot::bochs("bochs-entry-bad-control", "corei7_skylake_x").cmdline("inject=entry-bad-control").run();
    log.assert_no_exception();
    log.assert_line("[cpu0] ERROR VM entry failed: VMLAUNCH: VMfailValid (ZF=1), VM-instruction error 7: VM entry with invalid control field(s)");
    log.assert_count("[cpu0] ERROR   controls: pin 0x", 1);
    log.assert_line("[cpu0] ERROR entry check ctl.cr3_target_count: The CR3-target count must not be greater than the number IA32_VMX_MISC[24:16] reports (4) (SDM Vol. 3C §27.2.1.1 \"VM-Execution Control Fields\")");
    log.assert_line("[cpu0] ERROR entry check: 1 rule broken, the checker predicts VMfailValid error 7");
    log.assert_line("[cpu0] ERROR guest failed: VM-entry failure");
    log.assert_summary(1, 1, 1, 0, "FAIL");
}

/// The flash payload for Intel boards (`make payload`: VMX only, no
/// fuzzers), loaded by GRUB as a multiboot2 kernel: a guest on every CPU as
/// with the full kernel; the entry fuzzer it was built without is refused by
/// name and the proof guest runs instead.
#[test]
fn intel_flash_payload_runs_a_guest_on_every_cpu() {
    let log = Boot::bochs("bochs-intel-payload", "corei7_skylake_x").kernel("payload-intel.elf").cpus(2);
    let log = log.cmdline("entryfuzz=10").run();
    log.assert_no_exception();
    log.assert_line("[cpu0] WARN  command line: `entryfuzz=10` ignored: this build has no fuzzers (the kernel was built without its `fuzz` feature)");
    assert_guest_ok_on_every_cpu(&log, 2, 0x2b);
    log.assert_summary(2, 2, 2, 2, "PASS");
}
