//! Issue 2/4: every processor woken from the MADT through the trampoline, each
//! with its PCB; maxcpus; the bring-up time. Issue 9: all at once, up to 255
//! CPUs on two host cores, late and silent APs withdrawn without a hang.

use boottests::{Boot, Log};
use std::time::Duration;

/// Every CPU online, the NO_VMX verdict (QEMU TCG), a well-formed log.
fn assert_all_online_no_vmx(log: &Log, n: u32) {
    log.assert_no_exception();
    log.assert_online_lines(n);
    log.assert_bring_up(n, n);
    for l in &log.lines {
        let ok = l.starts_with("SUMMARY ")
            || l.split_once("] ").is_some_and(|(cpu, rest)| {
                cpu.strip_prefix("[cpu").is_some_and(|i| i.parse::<u32>().is_ok_and(|i| i < n))
                    && ["INFO  ", "WARN  ", "ERROR ", "DEBUG "].iter().any(|lv| rest.starts_with(lv))
            });
        if !ok {
            log.fail(&format!("a torn or interleaved line: {l:?}"));
        }
    }
    log.assert_summary(n, n, 0, 0, "NO_VMX");
}

#[test]
fn qemu_pc_four_cpus() {
    let log = Boot::qemu("qemu-pc-4").cpus(4).run();
    log.assert_no_exception();
    log.assert_line("[cpu0] INFO  apic: xAPIC mode, registers at 0xfee00000");
    log.assert_online_lines(4);
    log.assert_bring_up(4, 4);
    log.assert_summary(4, 4, 0, 0, "NO_VMX");
}

#[test]
fn qemu_q35_eight_cpus() {
    let log = Boot::qemu("qemu-q35-8").machine("q35").cpus(8).run();
    log.assert_no_exception();
    log.assert_online_lines(8);
    log.assert_bring_up(8, 8);
    log.assert_summary(8, 8, 0, 0, "NO_VMX");
}

#[test]
fn ovmf_two_cpus() {
    let log = Boot::qemu("qemu-uefi-2").uefi().cpus(2).run();
    log.assert_no_exception();
    log.assert_online_lines(2);
    log.assert_bring_up(2, 2);
    log.assert_summary(2, 2, 0, 0, "NO_VMX");
}

#[test]
fn maxcpus_two_of_four() {
    let log = Boot::qemu("qemu-maxcpus").cpus(4).cmdline("maxcpus=2").run();
    log.assert_no_exception();
    log.assert_online_lines(2);
    log.assert_bring_up(2, 4);
    log.assert_line("[cpu0] INFO  smp: APIC ID 2 not started (maxcpus=2)");
    log.assert_line("[cpu0] INFO  smp: APIC ID 3 not started (maxcpus=2)");
    log.assert_summary(4, 2, 0, 0, "NO_VMX");
}

#[test]
fn exception_on_an_application_processor_ends_the_run() {
    let log = Boot::qemu("qemu-ap-ud2").cpus(2).cmdline("inject=ap-ud2").run();
    log.assert_line("[cpu1] INFO  inject: executing UD2 on purpose");
    log.assert_line("[cpu1] ERROR EXCEPTION #UD (invalid opcode) on cpu1: vector=6 error_code=0x0");
    log.assert_count("[cpu1] ERROR   RIP=0x", 1);
    log.assert_line("[cpu1] ERROR run ends early: exception");
    log.assert_summary(2, 2, 0, 0, "FAIL");
}

#[test]
fn exit_halt_halts_every_cpu() {
    let log = Boot::qemu("qemu-exit-halt").cpus(4).exit_halt().run();
    log.assert_no_exception();
    log.assert_summary(4, 4, 0, 0, "NO_VMX");
    if log.lines.last().is_none_or(|l| !l.starts_with("SUMMARY ")) {
        log.fail("nothing may follow the SUMMARY line with exit=halt");
    }
    // Each CPU's register dump carries HLT=1 when it is halted, and RFLAGS.IF
    // (bit 9) must be clear, or an interrupt could wake it.
    let report = log.halted_report.clone().unwrap_or_default();
    let states: Vec<&str> = report.lines().filter(|l| l.contains(" HLT=")).collect();
    let interrupts_off = |l: &str| {
        let rfl = l.split_whitespace().find_map(|w| w.strip_prefix("RFL="));
        rfl.and_then(|v| u64::from_str_radix(v, 16).ok()).is_some_and(|v| v & (1 << 9) == 0)
    };
    if states.len() != 4 || !states.iter().all(|l| l.contains(" HLT=1") && interrupts_off(l)) {
        log.fail(&format!("QEMU's `info registers -a` should show 4 halted CPUs with IF clear:\n{report}"));
    }
}

#[test]
fn an_ap_that_never_answers_is_reported_and_the_boot_goes_on() {
    let log = Boot::qemu("qemu-ap-silent").cpus(3).cmdline("inject=ap-no-sipi").run();
    log.assert_no_exception();
    log.assert_line("[cpu0] INFO  inject: no SIPI for APIC ID 2, as if it never answered");
    log.assert_line(
        "[cpu0] ERROR smp: AP with APIC ID 2 did not answer INIT-SIPI-SIPI within 2000 ms; withdrawn with INIT, going on without it",
    );
    log.assert_online_lines(2);
    log.assert_count("[cpu0] INFO  smp: 2 of 3 processors online (1 failed); AP bring-up took ", 1);
    // The others still run to the end; the missing CPU makes the run FAIL.
    log.assert_line("[cpu1] ERROR SVM not supported (CPUID Fn8000_0001_ECX[2]=0)");
    log.assert_summary(3, 2, 0, 0, "FAIL");
}

/// An AP that reaches the kernel but checks in only after the boot CPU gave
/// up on it: withdrawn, silent, counted out; the run ends (no hang) and the
/// others run to the end. This is the path that used to hang with 64 CPUs.
#[test]
fn a_late_ap_is_withdrawn_without_a_hang() {
    let log = Boot::qemu("qemu-ap-late").cpus(4).cmdline("inject=ap-late").run();
    log.assert_no_exception();
    log.assert_line(
        "[cpu0] ERROR smp: AP with APIC ID 3 reached the trampoline but did not check in within 2000 ms; withdrawn with INIT, going on without it",
    );
    log.assert_online_lines(3);
    if !log.lines_starting("[cpu3]").is_empty() {
        log.fail("the withdrawn AP must not have written anything");
    }
    log.assert_count("[cpu0] INFO  smp: 3 of 4 processors online (1 failed); AP bring-up took ", 1);
    for i in 0..3 {
        log.assert_line(&format!("[cpu{i}] ERROR SVM not supported (CPUID Fn8000_0001_ECX[2]=0)"));
    }
    log.assert_summary(4, 3, 0, 0, "FAIL");
}

/// 64 CPUs on the two host cores, five boots in a row: every CPU online each
/// time (the sequential start used to miss its deadline or hang here).
#[test]
fn q35_64_cpus_five_times_in_a_row() {
    for run in 1..=5 {
        let log = Boot::qemu(&format!("qemu-q35-64-run{run}")).machine("q35").cpus(64).memory(128).run();
        assert_all_online_no_vmx(&log, 64);
    }
}

#[test]
fn q35_128_cpus() {
    let log = Boot::qemu("qemu-q35-128").machine("q35").cpus(128).memory(128).run();
    assert_all_online_no_vmx(&log, 128);
}

/// The most xAPIC allows (IDs 0-254; 255 is the broadcast ID).
#[test]
fn q35_255_cpus() {
    let log = Boot::qemu("qemu-q35-255").machine("q35").cpus(255).memory(128).timeout(Duration::from_secs(240)).run();
    assert_all_online_no_vmx(&log, 255);
}
