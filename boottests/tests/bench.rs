//! `make bench`: the CPUID exit round trip, timed with RDTSC inside the guest
//! (10,000 exits) on Bochs with one CPU, where the TSC advances one tick per
//! emulated instruction: the figure counts instructions of the whole round
//! trip (guest CPUID -> VM exit -> dispatcher -> VMRESUME -> guest). Target:
//! median at or below 100. Printed, not asserted: a benchmark, not a test.

use boottests::Boot;

#[test]
#[ignore = "run by `make bench`"]
fn cpuid_exit_round_trip() {
    let log = Boot::bochs("bench", "corei7_skylake_x").cmdline("guest=bench").run();
    log.assert_no_exception();
    let lines = log.lines_starting("[cpu0] INFO  bench: ");
    if lines.is_empty() {
        log.fail("the bench printed no figure");
    }
    for l in lines {
        println!("{}", &l["[cpu0] INFO  ".len()..]);
    }
}
