//! `make bench`: figures, printed, not asserted (a benchmark, not a test).
//!
//! - `bench: cpuid-exit median=<n> min=<n>`: the CPUID exit round trip, timed
//!   with RDTSC inside the guest (10,000 exits) on Bochs with one CPU, where the
//!   TSC advances one tick per emulated instruction: the figure counts
//!   instructions of the whole round trip (guest CPUID -> VM exit -> dispatcher
//!   -> VMRESUME -> guest).
//! - `bench: ap-bringup cpus=<n> us=<emulated us>`: from the first INIT to the
//!   last AP's check-in, Bochs with 4 and 8 CPUs (target: <= 1,000 us each).
//! - `bench: vmx-root ticks=<n>`: TSC ticks from the kernel's entry to the last
//!   CPU in VMX root, Bochs `corei7_sandy_bridge_2600k`, 2 CPUs, ips=200M,
//!   loglevel=info (target: <= 3,000,000). Bochs's TSC counts instructions
//!   with one CPU and per scheduling quantum with several.

use boottests::{Boot, Log};

/// Print the kernel's `bench: <name>` lines; fail if there is none.
fn print_bench(log: &Log, name: &str) {
    log.assert_no_exception();
    let prefix = format!("[cpu0] INFO  bench: {name} ");
    let lines = log.lines_starting(&prefix);
    if lines.is_empty() {
        log.fail(&format!("no `bench: {name}` line"));
    }
    for l in lines {
        println!("{}", &l["[cpu0] INFO  ".len()..]);
    }
}

#[test]
#[ignore = "run by `make bench`"]
fn cpuid_exit_round_trip() {
    let log = Boot::bochs("bench", "corei7_skylake_x").cmdline("guest=bench").run();
    print_bench(&log, "cpuid-exit");
}

#[test]
#[ignore = "run by `make bench`"]
fn ap_bringup_4_cpus() {
    let log = Boot::bochs("bench-ap-bringup-4", "corei7_skylake_x").cpus(4).run();
    print_bench(&log, "ap-bringup");
}

#[test]
#[ignore = "run by `make bench`"]
fn ap_bringup_8_cpus() {
    let log = Boot::bochs("bench-ap-bringup-8", "corei7_skylake_x").cpus(8).run();
    print_bench(&log, "ap-bringup");
}

#[test]
#[ignore = "run by `make bench`"]
fn entry_to_vmx_root() {
    let log = Boot::bochs("bench-vmx-root", "corei7_sandy_bridge_2600k")
        .cpus(2)
        .ips(200_000_000)
        .cmdline("loglevel=info")
        .run();
    print_bench(&log, "vmx-root");
}
