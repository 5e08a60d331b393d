//! Issue 10: the software VM-entry checker against Bochs's own entry checks,
//! one boot per CPU model with a fixed seed.

use boottests::{Boot, Log};

/// The `entry-fuzz: mutations=...` line of cpu0, parsed: (agree, known, disagree).
fn result(log: &Log, n: u32, seed: u64) -> (u32, u32, u32) {
    let prefix = format!("[cpu0] INFO  entry-fuzz: mutations={n} agree=");
    let lines = log.lines_starting(&prefix);
    if lines.len() != 1 {
        log.fail("expected one entry-fuzz result line");
    }
    let rest = &lines[0][prefix.len()..];
    let suffix = format!(" seed={seed}");
    let Some(rest) = rest.strip_suffix(&suffix) else { log.fail("the seed is not the one given") };
    let mut it = rest.split(' ');
    let agree = it.next().and_then(|a| a.parse().ok());
    let known = it.next().and_then(|k| k.strip_prefix("known=")).and_then(|k| k.parse().ok());
    let disagree = it.next().and_then(|d| d.strip_prefix("disagree=")).and_then(|d| d.parse().ok());
    match (agree, known, disagree) {
        (Some(a), Some(k), Some(d)) => (a, k, d),
        _ => log.fail("malformed entry-fuzz line"),
    }
}

/// How many rules the run reached, from `entry-fuzz: rules reached=R of T`.
fn reached(log: &Log) -> u32 {
    let prefix = "[cpu0] INFO  entry-fuzz: rules reached=";
    let lines = log.lines_starting(prefix);
    lines.first().and_then(|l| l[prefix.len()..].split(' ').next()).and_then(|r| r.parse().ok()).unwrap_or(0)
}

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
