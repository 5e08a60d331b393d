//! Issue 9: the log goes through an in-memory ring; a full ring loses lines,
//! and says how many, where they were lost.

use boottests::Boot;

/// The ring's size in slots (kernel/src/logger.rs RING_SLOTS); each flood line takes one.
const RING_SLOTS: usize = 2048;

#[test]
fn a_full_ring_reports_its_loss() {
    let log = Boot::qemu("qemu-log-flood").cmdline("inject=log-flood").run();
    log.assert_no_exception();
    log.assert_line(&format!(
        "[cpu0] INFO  inject: {} lines into a ring of {RING_SLOTS} slots, without draining",
        2 * RING_SLOTS
    ));
    // The first RING_SLOTS lines went in, whole and in order; the rest did not.
    let flood: Vec<&str> = log.lines_starting("[cpu0] INFO  inject: flood line ");
    let expected: Vec<String> = (0..RING_SLOTS).map(|i| format!("[cpu0] INFO  inject: flood line {i}")).collect();
    if flood != expected {
        log.fail(&format!("expected flood lines 0..{RING_SLOTS} in order, found {}", flood.len()));
    }
    // The loss is reported right after the last line kept, and again at the end.
    let report = format!("[cpu0] WARN  log: {RING_SLOTS} lines lost (the ring of {RING_SLOTS} slots was full)");
    let at = log.position(&report).unwrap_or_else(|| log.fail(&format!("missing line: {report:?}")));
    if log.lines[at - 1] != expected[RING_SLOTS - 1] {
        log.fail("the loss report must follow the last line the ring kept");
    }
    log.assert_line(&format!(
        "[cpu0] WARN  log: {RING_SLOTS} lines lost in this run (the log ring was full; see the `log:` lines above)"
    ));
    // Logging goes on afterwards.
    log.assert_line("[cpu0] ERROR SVM not supported (CPUID Fn8000_0001_ECX[2]=0)");
    log.assert_summary(1, 1, 0, 0, "NO_VMX");
}
