//! Issue 10: the software VM-entry checker against Bochs's own entry checks,
//! one boot per CPU model with a fixed seed.

use boottests::fuzz::{entry_result as result, rules_reached as reached};
use boottests::{Boot, Log};

fn fuzz(name: &str, model: &'static str, n: u32, seed: u64, min_rules: u32) -> Log {
    let log = Boot::bochs(name, model).cmdline(&format!("entryfuzz={n} seed={seed}")).run();
    log.assert_no_exception();
    let (agree, known, disagree) = result(&log, n, seed);
    if disagree != 0 || agree + known != n {
        log.fail(&format!(
            "agree={agree} known={known} disagree={disagree}: every mutation must agree or be a known departure"
        ));
    }
    if known * 20 > n {
        log.fail("known departures are more than 5% of the mutations");
    }
    let r = reached(&log);
    if r < min_rules {
        log.fail(&format!("only {r} rules reached, expected at least {min_rules}"));
    }
    log.assert_summary(1, 1, 1, 1, "PASS");
    log
}

#[test]
fn skylake_agrees_with_the_checker() {
    fuzz("bochs-entryfuzz-skylake", "corei7_skylake_x", 10000, 1, 60);
}

#[test]
fn lynnfield_agrees_with_the_checker() {
    fuzz("bochs-entryfuzz-lynnfield", "corei5_lynnfield_750", 10000, 2, 60);
}

#[test]
fn penryn_agrees_with_the_checker() {
    fuzz("bochs-entryfuzz-penryn", "core2_penryn_t9600", 10000, 3, 60);
}
