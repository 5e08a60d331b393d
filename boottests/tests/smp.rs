//! Issue 2/4: every processor woken from the MADT through the trampoline, each
//! with its PCB; maxcpus; the bring-up time.

use boottests::{Boot, Log};

/// One "online" line per CPU, carrying its APIC ID (QEMU and Bochs number
/// APIC IDs 0..n-1 and start them in that order).
fn assert_online_lines(log: &Log, n: u32) {
    log.assert_line("[cpu0] INFO  online: cpu0 APIC ID 0 (initial APIC ID 0) boot processor");
    for i in 1..n {
        log.assert_line(&format!("[cpu{i}] INFO  online: cpu{i} APIC ID {i} (initial APIC ID {i})"));
    }
    let online: Vec<_> = log.lines.iter().filter(|l| l.contains("] INFO  online: cpu")).collect();
    if online.len() != n as usize {
        log.fail(&format!("expected {n} online lines, found {}", online.len()));
    }
}

/// `smp: N of M processors online (F failed); AP bring-up took T us`, with T > 0.
fn assert_bring_up(log: &Log, online: u32, of: u32) {
    let prefix = format!("[cpu0] INFO  smp: {online} of {of} processors online (0 failed); AP bring-up took ");
    let lines = log.lines_starting(&prefix);
    let micros = lines.first().and_then(|l| l[prefix.len()..].strip_suffix(" us")).and_then(|t| t.parse::<u64>().ok());
    match micros {
        Some(us) if us > 0 => {}
        _ => log.fail(&format!("no bring-up line starting {prefix:?}")),
    }
}

#[test]
fn qemu_pc_four_cpus() {
    let log = Boot::qemu("qemu-pc-4").cpus(4).run();
    log.assert_no_exception();
    log.assert_line("[cpu0] INFO  apic: xAPIC mode, registers at 0xfee00000");
    assert_online_lines(&log, 4);
    assert_bring_up(&log, 4, 4);
    log.assert_summary(4, 4, 0, 0, "NO_VMX");
}

#[test]
fn qemu_q35_eight_cpus() {
    let log = Boot::qemu("qemu-q35-8").machine("q35").cpus(8).run();
    log.assert_no_exception();
    assert_online_lines(&log, 8);
    assert_bring_up(&log, 8, 8);
    log.assert_summary(8, 8, 0, 0, "NO_VMX");
}

#[test]
fn ovmf_two_cpus() {
    let log = Boot::qemu("qemu-uefi-2").uefi().cpus(2).run();
    log.assert_no_exception();
    assert_online_lines(&log, 2);
    assert_bring_up(&log, 2, 2);
    log.assert_summary(2, 2, 0, 0, "NO_VMX");
}

#[test]
fn maxcpus_two_of_four() {
    let log = Boot::qemu("qemu-maxcpus").cpus(4).cmdline("maxcpus=2").run();
    log.assert_no_exception();
    assert_online_lines(&log, 2);
    assert_bring_up(&log, 2, 4);
    log.assert_line("[cpu0] INFO  smp: APIC ID 2 not started (maxcpus=2)");
    log.assert_line("[cpu0] INFO  smp: APIC ID 3 not started (maxcpus=2)");
    log.assert_summary(4, 2, 0, 0, "NO_VMX");
}
