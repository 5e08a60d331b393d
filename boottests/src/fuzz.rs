//! The guest fuzzer's per-CPU line, parsed and checked for its exact format
//! (`fuzz: cpu=<i> runs=<N> exits=<E> endings=<...> host_failures=<F> seed=<S>`),
//! for the VMX and SVM fuzz tests alike.

use crate::Log;
use std::collections::BTreeMap;

/// Every ending name the line may carry, in the line's order
/// (hvlogic::guest_fuzz::ENDING_NAMES).
pub const ENDINGS: [&str; 27] = [
    "triple-fault",
    "ept-violation",
    "npf",
    "hlt",
    "vmcall",
    "cr-refused",
    "io-refused",
    "timer",
    "apic-timer",
    "exit-budget",
    "task-switch",
    "invd",
    "xsetbv",
    "getsec",
    "mwait",
    "monitor",
    "rdrand",
    "rdseed",
    "wbinvd",
    "invlpg",
    "mov-dr",
    "pause",
    "rsm",
    "ltr",
    "insn-unreadable",
    "not-resumed",
    "watchdog",
];

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
