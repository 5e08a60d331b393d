//! Issue 11: random guests cannot hurt the host. `guest=fuzz` runs random
//! guest programs on every CPU in VMX root (hvlogic::guest_fuzz); each CPU
//! ends with one `fuzz:` line, and a host failure names its run and how to
//! replay it. Short fixed-seed runs on skylake (preemption timer, EPT,
//! unrestricted guest) and penryn (no EPT, no preemption timer: the
//! local-APIC timer bounds the runs), a replay of every run in which the
//! fuzzer found a host bug, and the failure report itself.

use boottests::fuzz::{assert_clean, assert_injected_failure, assert_replay};
use boottests::{Boot, Log};

/// Skylake, 2 CPUs, 500 runs each from seed 1: every start mode (real,
/// protected, 32-bit and PAE paging, 64-bit, compatibility) and the
/// VMX-preemption timer. 26 s of wall time in Bochs 2.7 here (measured
/// 2026-11-28 with another Bochs boot on the machine's other core; the boot
/// itself is about 3 s).
#[test]
fn skylake_random_guests_cannot_hurt_the_host() {
    let runs = 500;
    let log = Boot::bochs("bochs-fuzz-skylake", "corei7_skylake_x")
        .cpus(2)
        .cmdline(&format!("guest=fuzz fuzz-runs={runs} seed=1"))
        .run();
    let lines = assert_clean(&log, 2, runs, 1);
    for i in 0..2 {
        log.assert_line(&format!(
            "[cpu{i}] INFO  fuzz: cpu={i} modes real,protected,paged32,pae,long64,compat; time budget 200 us per run (VMX-preemption timer, {}), 500 exits",
            timer_value(&log, i)
        ));
        let modes = log.lines_starting(&format!("[cpu{i}] INFO  fuzz: cpu={i} modes=real:"));
        if modes.len() != 1
            || !["protected:", "paged32:", "pae:", "long64:", "compat:"].iter().all(|m| modes[0].contains(m))
        {
            log.fail("expected runs in every mode on skylake");
        }
        // The time budget ends some runs, and so do guest faults and the
        // EPT; the preemption timer needs no watchdog.
        for ending in ["timer", "triple-fault", "ept-violation"] {
            if !lines[i as usize].endings.contains_key(ending) {
                log.fail(&format!("cpu{i}: no run ended by {ending}"));
            }
        }
        if lines[i as usize].endings.contains_key("watchdog") {
            log.fail(&format!("cpu{i}: a run needed the watchdog"));
        }
    }
}

/// The VMX-preemption timer value in cpu `i`'s set-up line.
fn timer_value(log: &Log, i: u32) -> u64 {
    let prefix = format!("[cpu{i}] INFO  fuzz: cpu={i} modes real,protected,paged32,pae,long64,compat; time budget 200 us per run (VMX-preemption timer, ");
    let lines = log.lines_starting(&prefix);
    lines
        .first()
        .and_then(|l| l[prefix.len()..].split(')').next()?.parse().ok())
        .unwrap_or_else(|| log.fail(&format!("no line {prefix:?}")))
}

/// Penryn, 2 CPUs, 500 runs each from seed 3: no EPT (host-owned page tables
/// for every paging mode), no VMX-preemption timer (the local-APIC timer ends
/// the runs that spin; the other CPU's watchdog those that spin with
/// RFLAGS.IF 0, which Bochs 2.7 does not let the timer end). 23 s of wall
/// time in Bochs 2.7 here (measured 2026-11-28, as above).
#[test]
fn penryn_random_guests_cannot_hurt_the_host() {
    let runs = 500;
    let log = Boot::bochs("bochs-fuzz-penryn", "core2_penryn_t9600")
        .cpus(2)
        .cmdline(&format!("guest=fuzz fuzz-runs={runs} seed=3"))
        .run();
    let lines = assert_clean(&log, 2, runs, 3);
    for (i, l) in lines.iter().enumerate() {
        log.assert_count(&format!("[cpu{i}] INFO  fuzz: cpu={i} modes paged32,pae,long64,compat; time budget 200 us per run (local-APIC timer, "), 1);
        if !l.endings.contains_key("apic-timer")
            || l.endings.contains_key("timer")
            || l.endings.contains_key("ept-violation")
        {
            log.fail(&format!(
                "cpu{i}: expected the local-APIC timer, and neither the preemption timer nor EPT: {l:?}"
            ));
        }
    }
}

/// One run replayed alone on one CPU: `seed=S fuzz-runs=1 fuzz-skip=k`.
fn replay(name: &str, model: &'static str, seed: u64, run: u64, mode: &str, line: &str) {
    let log = Boot::bochs(name, model)
        .timeout(std::time::Duration::from_secs(180))
        .cmdline(&format!("guest=fuzz seed={seed} fuzz-runs=1 fuzz-skip={run}"))
        .run();
    assert_replay(&log, seed, run, mode, line);
}

/// The runs in which the fuzzer found host bugs, each now ending cleanly:
/// seed 1 run 11 (a guest's CR0.CD survived the VM exit and left the host's
/// caches off), runs 132 and 456 (stepping over an exiting instruction at EIP
/// 4 GiB - n wrote RIP 1_0000_0000, which VM entry refuses), run 646 (a
/// 64-bit guest's MOV to CR8 changed the host's task priority); seed 11 run
/// 404 (an endless #DB delivery loop hung the CPU).
#[test]
fn skylake_regressions() {
    let sky = "corei7_skylake_x";
    replay(
        "bochs-fuzz-cd",
        sky,
        1,
        11,
        "pae",
        "fuzz: cpu=0 runs=1 exits=1 endings=cr-refused:1 host_failures=0 seed=1",
    );
    replay(
        "bochs-fuzz-wrap-132",
        sky,
        1,
        132,
        "compat",
        "fuzz: cpu=0 runs=1 exits=2 endings=triple-fault:1 host_failures=0 seed=1",
    );
    replay(
        "bochs-fuzz-wrap-456",
        sky,
        1,
        456,
        "protected",
        "fuzz: cpu=0 runs=1 exits=2 endings=hlt:1 host_failures=0 seed=1",
    );
    replay(
        "bochs-fuzz-cr8",
        sky,
        1,
        646,
        "long64",
        "fuzz: cpu=0 runs=1 exits=2 endings=triple-fault:1 host_failures=0 seed=1",
    );
    // Seed 11 run 404: with its DR7 loaded, a real-mode guest's breakpoint
    // made every #DB delivery raise another, with no instruction boundary for
    // the preemption timer: the CPU hung. #DB now exits and is given back,
    // each round trip an exit, until the exit budget ends it.
    replay(
        "bochs-fuzz-db-loop",
        sky,
        11,
        404,
        "real",
        "fuzz: cpu=0 runs=1 exits=501 endings=exit-budget:1 host_failures=0 seed=11",
    );
}

/// Seed 3 run 42 on penryn: a guest spinning with RFLAGS.IF 0 outlived the
/// local-APIC timer (Bochs 2.7 holds external interrupts back from a guest
/// entered with IF 0): with one CPU and no watchdog the machine hung. Guests
/// timed by the local-APIC timer now start with IF 1, and this one ends by it.
#[test]
fn penryn_regression() {
    replay(
        "bochs-fuzz-if",
        "core2_penryn_t9600",
        3,
        42,
        "compat",
        "fuzz: cpu=0 runs=1 exits=1 endings=apic-timer:1 host_failures=0 seed=3",
    );
}

/// A host failure (here injected: the host's task priority changed after
/// the first run) is named with the run's replay words, counted, and fails the run.
#[test]
fn a_host_failure_names_its_replay_and_fails_the_run() {
    let log = Boot::bochs("bochs-fuzz-failure", "corei7_skylake_x")
        .cmdline("guest=fuzz fuzz-runs=3 seed=5 inject=fuzz-host-state")
        .run();
    assert_injected_failure(&log);
}
