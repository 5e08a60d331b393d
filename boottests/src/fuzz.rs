//! The fuzzers' result lines, for the VMX and SVM tests alike: the guest
//! fuzzer's per-CPU line, parsed and checked for its exact format (`fuzz:
//! cpu=<i> runs=<N> exits=<E> endings=<...> host_failures=<F> seed=<S>`), a
//! replayed run, and the entry fuzzer's `entry-fuzz: mutations=...` line.

use crate::Log;
use std::collections::BTreeMap;

/// Every ending name the line may carry, in the line's order.
pub use hvlogic::guest_fuzz::ENDING_NAMES as ENDINGS;

/// One CPU's `fuzz:` line.
#[derive(Debug)]
pub struct FuzzLine {
    pub runs: u64,
    pub exits: u64,
    pub endings: BTreeMap<String, u64>,
    pub host_failures: u64,
    pub seed: u64,
}

impl FuzzLine {
    /// Runs that ended by `name`.
    pub fn ended_by(&self, name: &str) -> u64 {
        self.endings.get(name).copied().unwrap_or(0)
    }
}

/// CPU `cpu`'s line, which must be there once and in the exact format.
pub fn fuzz_line(log: &Log, cpu: u32) -> FuzzLine {
    let prefix = format!("[cpu{cpu}] INFO  fuzz: cpu={cpu} runs=");
    let lines = log.lines_starting(&prefix);
    if lines.len() != 1 {
        log.fail(&format!("expected one line starting {prefix:?}, found {}", lines.len()));
    }
    let line = &lines[0][format!("[cpu{cpu}] INFO  ").len()..];
    let field = |key: &str| -> &str {
        line.split(' ')
            .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_else(|| log.fail(&format!("no {key}= in {line:?}")))
    };
    let num = |key: &str| -> u64 { field(key).parse().unwrap_or_else(|_| log.fail(&format!("{key} in {line:?}"))) };
    let mut endings = BTreeMap::new();
    if field("endings") != "none" {
        for pair in field("endings").split(',') {
            let (name, count) = pair.split_once(':').unwrap_or_else(|| log.fail(&format!("ending {pair:?}")));
            if !ENDINGS.contains(&name) {
                log.fail(&format!("unknown ending {name:?} in {line:?}"));
            }
            endings.insert(name.to_owned(), count.parse().unwrap_or_else(|_| log.fail(&format!("count {pair:?}"))));
        }
    }
    let parsed = FuzzLine {
        runs: num("runs"),
        exits: num("exits"),
        endings,
        host_failures: num("host_failures"),
        seed: num("seed"),
    };
    // The line is exactly what its fields say, in the order.
    let endings_text = if parsed.endings.is_empty() {
        String::from("none")
    } else {
        let order = |n: &String| ENDINGS.iter().position(|e| e == n).unwrap();
        let mut names: Vec<&String> = parsed.endings.keys().collect();
        names.sort_by_key(|n| order(n));
        names.iter().map(|n| format!("{n}:{}", parsed.endings[*n])).collect::<Vec<_>>().join(",")
    };
    let rebuilt = format!(
        "fuzz: cpu={cpu} runs={} exits={} endings={endings_text} host_failures={} seed={}",
        parsed.runs, parsed.exits, parsed.host_failures, parsed.seed
    );
    if rebuilt != line {
        log.fail(&format!("the fuzz line is not in the exact format:\n  got:  {line}\n  want: {rebuilt}"));
    }
    parsed
}

/// Every CPU ran `runs` runs under `seed`, each ended by a named ending, none
/// hurt the host, and the run passed.
pub fn assert_clean(log: &Log, cpus: u32, runs: u64, seed: u64) -> Vec<FuzzLine> {
    log.assert_no_exception();
    log.assert_line(&format!(
        "[cpu0] INFO  fuzz: seed={seed} (given); {runs} runs per CPU from run 0; cpu i replays run k alone with `guest=fuzz seed=<seed+i> fuzz-runs=1 fuzz-skip=<k>`"
    ));
    if let Some(l) = log.lines.iter().find(|l| l.contains("host failure") || l.contains("ERROR")) {
        log.fail(&format!("unexpected line: {l}"));
    }
    let lines: Vec<FuzzLine> = (0..cpus).map(|i| fuzz_line(log, i)).collect();
    for (i, l) in lines.iter().enumerate() {
        let ended: u64 = l.endings.values().sum();
        if l.runs != runs || l.host_failures != 0 || l.seed != seed || ended != runs {
            log.fail(&format!(
                "cpu{i}: {l:?}: expected {runs} runs, each with a named ending, no host failure, seed {seed}"
            ));
        }
        if l.exits < runs / 2 {
            log.fail(&format!(
                "cpu{i}: only {} exits in {runs} runs: the programs hardly reach the exit handler",
                l.exits
            ));
        }
    }
    log.assert_summary(cpus, cpus, cpus, cpus, "PASS");
    lines
}

/// A run replayed alone on one CPU (`guest=fuzz seed=S fuzz-runs=1
/// fuzz-skip=k`): it ran in `mode`, ended with the `fuzz:` line `line`, and
/// the CPU passed.
pub fn assert_replay(log: &Log, seed: u64, run: u64, mode: &str, line: &str) {
    log.assert_no_exception();
    log.assert_line(&format!(
        "[cpu0] INFO  fuzz: seed={seed} (given); 1 runs per CPU from run {run}; cpu i replays run k alone with `guest=fuzz seed=<seed+i> fuzz-runs=1 fuzz-skip=<k>`"
    ));
    log.assert_line(&format!("[cpu0] INFO  fuzz: cpu=0 modes={mode}:1"));
    log.assert_line(&format!("[cpu0] INFO  {line}"));
    log.assert_count("[cpu0] ERROR", 0);
    log.assert_summary(1, 1, 1, 1, "PASS");
}

/// The `entry-fuzz: mutations=N agree=A known=K disagree=D seed=S` line of
/// cpu0, parsed: (A, K, D).
pub fn entry_result(log: &Log, n: u32, seed: u64) -> (u32, u32, u32) {
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
pub fn rules_reached(log: &Log) -> u32 {
    let prefix = "[cpu0] INFO  entry-fuzz: rules reached=";
    let lines = log.lines_starting(prefix);
    lines.first().and_then(|l| l[prefix.len()..].split(' ').next()).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// `guest=fuzz fuzz-runs=3 seed=5 inject=fuzz-host-state` on one CPU: the
/// host's task priority changed after run 0 is a host failure named with the
/// run's replay words and one guest-state dump, counted in the line, and the
/// run fails.
pub fn assert_injected_failure(log: &Log) {
    log.assert_no_exception();
    log.assert_line("[cpu0] INFO  inject: the host's task priority (CR8) changed from 0x0 to 0x1 after run 0");
    let failures = log.lines_starting("[cpu0] ERROR fuzz: host failure on cpu0 run 0 (");
    let want = " mode): host CR8 changed: 0x0 -> 0x1; replay: guest=fuzz seed=5 fuzz-runs=1 fuzz-skip=0";
    if failures.len() != 1 || !failures[0].ends_with(want) {
        log.fail(&format!("expected one host-failure line ending {want:?}"));
    }
    log.assert_count("[cpu0] ERROR   guest RIP=0x", 1);
    let l = fuzz_line(log, 0);
    if l.runs != 3 || l.host_failures != 1 || l.seed != 5 || l.endings.values().sum::<u64>() != 3 {
        log.fail(&format!("expected 3 runs, 1 host failure: {l:?}"));
    }
    log.assert_summary(1, 1, 1, 0, "FAIL");
}
