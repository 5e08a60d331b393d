//! `make bench`: the CPUID exit round trip, timed with RDTSC inside the guest
//! (10,000 exits) on Bochs with one CPU, where the TSC advances one tick per
//! emulated instruction: the figure counts instructions of the whole round
//! trip (guest CPUID -> VM exit -> dispatcher -> VMRESUME -> guest). Target:
//! median at or below 100. Printed, not asserted: a benchmark, not a test.
//! Also the screen console: the cost of drawing one log line.

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

/// `make bench`: what drawing a log line on the screen costs, from the
/// kernel's own count (`console: N lines drawn, X us per line, ...`, debug
/// level): the time inside the console sink per line, the redraws of scrolling
/// included, measured with the TSC in QEMU TCG (an emulator: a real CPU writing
/// to write-combined video memory is faster; uncached video memory is slower).
/// Two screens: GRUB's default mode in QEMU (1280x800x32, no scrolling) and
/// 640x480x32 with 12 CPUs (the grid scrolls).
#[test]
#[ignore = "run by `make bench`"]
fn screen_line() {
    for (name, gfx, cpus) in [("bench-screen", None, 4), ("bench-screen-scroll", Some("640x480x32"), 12)] {
        let mut boot = Boot::qemu(name).machine("q35").cpus(cpus).cmdline("loglevel=debug");
        if let Some(mode) = gfx {
            boot = boot.gfxpayload(mode);
        }
        let log = boot.run();
        log.assert_no_exception();
        let fb = log.lines_starting("[cpu0] INFO  console: framebuffer ");
        let report = log.lines_starting("[cpu0] DEBUG console: ");
        let (Some(fb), Some(report)) = (fb.first(), report.first()) else {
            log.fail("no console lines: was the screen drawn?");
        };
        // "console: 22 lines drawn, 283.7 us per line, 396 us at most, 0 scrolls; first screen 2442 us"
        let text = &report["[cpu0] DEBUG console: ".len()..];
        let per_line = text.split(", ").nth(1).and_then(|s| s.strip_suffix(" us per line"));
        let Some(per_line) = per_line else { log.fail(&format!("unexpected console report: {text}")) };
        let mode = fb.split_whitespace().nth(4).unwrap_or("?");
        println!("bench: screen us={per_line} ({mode}, {cpus} CPUs, QEMU TCG: {text})");
    }
}
