//! The kernel command line (set in grub.cfg), parsed into options.
//!
//! Words are separated by spaces; each is `key=value` or a bare flag. A word
//! this parser does not know is kept as a warning so the kernel can report it:
//! nothing on the command line is silently ignored.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// How a run ends once the SUMMARY line is out (`exit=`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExitMode {
    /// Halt every CPU. The bare-metal default: never touches emulator ports.
    Halt,
    /// QEMU's isa-debug-exit device at port 0xf4.
    Qemu,
    /// Bochs's shutdown port 0x8900.
    Bochs,
}

/// Faults raised on purpose so the tests can check every failure path (`inject=`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Inject {
    /// Execute UD2 on the boot CPU once the exception handlers are installed.
    Ud2,
    /// Lock IA32_FEATURE_CONTROL with bit 2 clear on every CPU before VMX set-up.
    FcLockedOff,
    /// AMD: VM_CR reads as firmware that disabled SVM and locked it would leave
    /// it (SVMDIS and LOCK set), without writing the MSR.
    SvmLockedOff,
    /// Execute VMXON a second time while in VMX root operation.
    VmxonTwice,
    /// Execute UD2 on the first application processor once it is online.
    ApUd2,
    /// Send the last application processor INIT but no SIPI: an AP that never answers.
    ApNoSipi,
    /// The last application processor reaches the kernel but checks in only
    /// after the boot CPU's deadline: a late AP, withdrawn with INIT.
    ApLate,
    /// The boot CPU writes twice the log ring's size without draining: the ring
    /// fills and its loss is reported.
    LogFlood,
    /// Launch the guest with RFLAGS bit 1 clear: VM entry fails on guest state.
    EntryBadGuest,
    /// Launch the guest with a CR3-target count above the CPU's limit: VMLAUNCH
    /// fails with VMfailValid.
    EntryBadControl,
    /// guest=fuzz: change the host's task priority after the first run, as a
    /// guest that reached the host's local APIC would: a host failure.
    FuzzHostState,
}

/// Which program the guests run (`guest=`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GuestKind {
    /// CPUID, a hello line on COM1, an MSR read, VMCALL success.
    Normal,
    /// Tries to escape: every attempt must be contained.
    Hostile,
    /// 10,000 CPUID exits timed with RDTSC inside the guest.
    Bench,
    /// Random guest programs, `fuzz-runs` per CPU (hvlogic::guest_fuzz).
    Fuzz,
}

/// Runs per CPU of `guest=fuzz` without `fuzz-runs=`.
pub const FUZZ_RUNS_DEFAULT: u32 = 1000;

/// How a Linux kernel given as a `linux` module runs (`linux=`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LinuxMode {
    /// As the guest of the hypervisor, where the CPU allows; natively otherwise.
    Guest,
    /// Natively, the hypervisor gone (for comparisons).
    Native,
}

/// Where the log and the SUMMARY line go (`console=`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConsoleMode {
    /// COM1 only; the screen is left as the boot loader left it.
    Serial,
    /// The screen only (COM1 carries what was logged before the command line was read).
    Screen,
    /// Both (the default).
    Both,
}

impl ConsoleMode {
    pub fn serial(self) -> bool {
        self != ConsoleMode::Screen
    }
    pub fn screen(self) -> bool {
        self != ConsoleMode::Serial
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum LogLevel {
    Error = 1,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Options {
    pub loglevel: LogLevel,
    pub exit: ExitMode,
    pub inject: Option<Inject>,
    /// Start at most this many processors (the boot CPU included).
    pub maxcpus: Option<u32>,
    /// Print every VMX capability MSR, decoded, on the boot CPU.
    pub vmxcap: bool,
    /// `svmcap`: print CPUID Fn8000_000A and VM_CR decoded (AMD).
    pub svmcap: bool,
    pub guest: GuestKind,
    pub linux: LinuxMode,
    pub console: ConsoleMode,
    /// Run the VM-entry checker before every VMLAUNCH (`vmcheck`).
    pub vmcheck: bool,
    /// Instead of the guest, this many entry-fuzz mutations per CPU (`entryfuzz=N`).
    pub entryfuzz: Option<u32>,
    /// The entry fuzzer's and the guest fuzzer's seed (`seed=S`, decimal or
    /// 0x hex); random when absent.
    pub seed: Option<u64>,
    /// `guest=fuzz`: runs per CPU (`fuzz-runs=N`, FUZZ_RUNS_DEFAULT when absent).
    pub fuzz_runs: u32,
    /// `guest=fuzz`: the index of each CPU's first run (`fuzz-skip=K`), to replay run K alone.
    pub fuzz_skip: u64,
    /// Words that were not understood, with the reason, for the log.
    pub warnings: Vec<Warning>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Warning {
    pub word: String,
    pub reason: &'static str,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "command line: `{}` ignored: {}", self.word, self.reason)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            loglevel: LogLevel::Info,
            exit: ExitMode::Halt,
            inject: None,
            maxcpus: None,
            vmxcap: false,
            svmcap: false,
            guest: GuestKind::Normal,
            linux: LinuxMode::Guest,
            console: ConsoleMode::Both,
            vmcheck: false,
            entryfuzz: None,
            seed: None,
            fuzz_runs: FUZZ_RUNS_DEFAULT,
            fuzz_skip: 0,
            warnings: Vec::new(),
        }
    }
}

impl Options {
    pub fn parse(cmdline: &str) -> Options {
        Options::parse_for(cmdline, true)
    }

    /// `parse` for a kernel built with or without its fuzzers (the kernel's
    /// `fuzz` feature; the flash payloads have none: docs/coreboot.md#size).
    /// Without them the words that ask for them (`guest=fuzz`, `entryfuzz=`,
    /// `fuzz-runs=`, `fuzz-skip=`, `inject=fuzz-host-state`) are refused as
    /// any bad word is, with a reason that says so, and the proof guest runs.
    pub fn parse_for(cmdline: &str, fuzzers: bool) -> Options {
        const NO_FUZZERS: &str = "this build has no fuzzers (the kernel was built without its `fuzz` feature)";
        let mut o = Options::default();
        for word in cmdline.split_ascii_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word, None),
            };
            let asks_for_fuzzers = matches!(
                (key, value),
                ("guest", Some("fuzz"))
                    | ("entryfuzz" | "fuzz-runs" | "fuzz-skip", _)
                    | ("inject", Some("fuzz-host-state"))
            );
            let applied = if asks_for_fuzzers && !fuzzers { Err(NO_FUZZERS) } else { o.apply(key, value) };
            if let Err(reason) = applied {
                o.warnings.push(Warning { word: String::from(word), reason });
            }
        }
        o
    }

    fn apply(&mut self, key: &str, value: Option<&str>) -> Result<(), &'static str> {
        match (key, value) {
            ("loglevel", Some(v)) => {
                self.loglevel = match v {
                    "error" => LogLevel::Error,
                    "warn" => LogLevel::Warn,
                    "info" => LogLevel::Info,
                    "debug" => LogLevel::Debug,
                    "trace" => LogLevel::Trace,
                    _ => return Err("loglevel is one of error, warn, info, debug, trace"),
                }
            }
            ("exit", Some(v)) => {
                self.exit = match v {
                    "halt" => ExitMode::Halt,
                    "qemu" => ExitMode::Qemu,
                    "bochs" => ExitMode::Bochs,
                    _ => return Err("exit is one of halt, qemu, bochs"),
                }
            }
            ("inject", Some(v)) => {
                self.inject = Some(match v {
                    "ud2" => Inject::Ud2,
                    "fc-locked-off" => Inject::FcLockedOff,
                    "svm-locked-off" => Inject::SvmLockedOff,
                    "vmxon-twice" => Inject::VmxonTwice,
                    "ap-ud2" => Inject::ApUd2,
                    "ap-no-sipi" => Inject::ApNoSipi,
                    "ap-late" => Inject::ApLate,
                    "log-flood" => Inject::LogFlood,
                    "entry-bad-guest" => Inject::EntryBadGuest,
                    "entry-bad-control" => Inject::EntryBadControl,
                    "fuzz-host-state" => Inject::FuzzHostState,
                    _ => return Err("inject is one of ud2, ap-ud2, ap-no-sipi, ap-late, log-flood, fc-locked-off, svm-locked-off, vmxon-twice, entry-bad-guest, entry-bad-control, fuzz-host-state"),
                })
            }
            ("maxcpus", Some(v)) => match v.parse::<u32>() {
                Ok(n) if n >= 1 => self.maxcpus = Some(n),
                _ => return Err("maxcpus takes a number of at least 1"),
            },
            ("guest", Some(v)) => {
                self.guest = match v {
                    "normal" => GuestKind::Normal,
                    "hostile" => GuestKind::Hostile,
                    "bench" => GuestKind::Bench,
                    "fuzz" => GuestKind::Fuzz,
                    _ => return Err("guest is one of normal, hostile, bench, fuzz"),
                }
            }
            ("linux", Some(v)) => {
                self.linux = match v {
                    "guest" => LinuxMode::Guest,
                    "native" => LinuxMode::Native,
                    _ => return Err("linux is one of guest, native"),
                }
            }
            ("console", Some(v)) => {
                self.console = match v {
                    "serial" => ConsoleMode::Serial,
                    "screen" => ConsoleMode::Screen,
                    "both" => ConsoleMode::Both,
                    _ => return Err("console is one of serial, screen, both"),
                }
            }
            ("vmxcap", None) => self.vmxcap = true,
            ("svmcap", None) => self.svmcap = true,
            ("vmcheck", None) => self.vmcheck = true,
            ("entryfuzz", Some(v)) => match v.parse::<u32>() {
                Ok(n) if n >= 1 => self.entryfuzz = Some(n),
                _ => return Err("entryfuzz takes a number of mutations of at least 1"),
            },
            ("fuzz-runs", Some(v)) => match v.parse::<u32>() {
                Ok(n) if n >= 1 => self.fuzz_runs = n,
                _ => return Err("fuzz-runs takes a number of runs of at least 1"),
            },
            ("fuzz-skip", Some(v)) => {
                self.fuzz_skip = v.parse::<u64>().map_err(|_| "fuzz-skip takes a run index (a number)")?
            }
            ("seed", Some(v)) => {
                let parsed = match v.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => v.parse::<u64>(),
                };
                self.seed = Some(parsed.map_err(|_| "seed takes a decimal or 0x-hex 64-bit number")?);
            }
            (
                "loglevel" | "exit" | "inject" | "maxcpus" | "guest" | "linux" | "console" | "entryfuzz" | "seed"
                | "fuzz-runs" | "fuzz-skip",
                None,
            ) => {
                return Err("this option needs a value (key=value)")
            }
            ("vmxcap" | "svmcap" | "vmcheck", Some(_)) => return Err("this flag takes no value"),
            _ => return Err("unknown option"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_bare_metal_ones() {
        let o = Options::parse("");
        assert_eq!(o.exit, ExitMode::Halt);
        assert_eq!(o.loglevel, LogLevel::Info);
        assert_eq!(o.inject, None);
        assert_eq!(o.guest, GuestKind::Normal);
        assert_eq!(o.linux, LinuxMode::Guest);
        assert!(o.warnings.is_empty());
    }

    #[test]
    fn every_option() {
        let o = Options::parse("loglevel=trace exit=bochs inject=vmxon-twice maxcpus=2 vmxcap guest=hostile");
        assert_eq!(o.loglevel, LogLevel::Trace);
        assert_eq!(o.exit, ExitMode::Bochs);
        assert_eq!(o.inject, Some(Inject::VmxonTwice));
        assert_eq!(o.maxcpus, Some(2));
        assert!(o.vmxcap);
        assert_eq!(o.guest, GuestKind::Hostile);
        assert!(o.warnings.is_empty());
        assert_eq!(Options::parse("inject=ud2").inject, Some(Inject::Ud2));
        assert_eq!(Options::parse("inject=fc-locked-off").inject, Some(Inject::FcLockedOff));
        assert_eq!(Options::parse("inject=svm-locked-off").inject, Some(Inject::SvmLockedOff));
        assert!(Options::parse("svmcap").svmcap);
        assert_eq!(Options::parse("inject=ap-ud2").inject, Some(Inject::ApUd2));
        assert_eq!(Options::parse("inject=ap-no-sipi").inject, Some(Inject::ApNoSipi));
        assert_eq!(Options::parse("inject=ap-late").inject, Some(Inject::ApLate));
        assert_eq!(Options::parse("inject=log-flood").inject, Some(Inject::LogFlood));
        assert_eq!(Options::parse("inject=entry-bad-guest").inject, Some(Inject::EntryBadGuest));
        assert_eq!(Options::parse("inject=entry-bad-control").inject, Some(Inject::EntryBadControl));
        assert_eq!(Options::parse("inject=fuzz-host-state").inject, Some(Inject::FuzzHostState));
        assert_eq!(Options::parse("exit=qemu").exit, ExitMode::Qemu);
        assert_eq!(Options::parse("guest=bench").guest, GuestKind::Bench);
        assert_eq!(Options::parse("linux=native").linux, LinuxMode::Native);
        assert_eq!(Options::parse("linux=guest").linux, LinuxMode::Guest);
        assert_eq!(Options::parse("linux=vm").warnings[0].reason, "linux is one of guest, native");
    }

    #[test]
    fn a_build_without_fuzzers_refuses_them_by_name() {
        let o = Options::parse_for(
            "guest=hostile guest=fuzz entryfuzz=0100 fuzz-runs=5 seed=3 quiet inject=fuzz-host-state exit=qemu",
            false,
        );
        assert_eq!((o.guest, o.entryfuzz, o.exit, o.inject), (GuestKind::Hostile, None, ExitMode::Qemu, None));
        let words: Vec<&str> = o.warnings.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(words, ["guest=fuzz", "entryfuzz=0100", "fuzz-runs=5", "quiet", "inject=fuzz-host-state"]);
        assert_eq!(
            alloc::format!("{}", o.warnings[0]),
            "command line: `guest=fuzz` ignored: this build has no fuzzers (the kernel was built without its `fuzz` feature)"
        );
        assert_eq!(Options::parse_for("guest=hostile", false), Options::parse("guest=hostile"));
    }

    #[test]
    fn unknown_and_malformed_words_are_reported_not_dropped() {
        let o = Options::parse("  quiet exit=reboot maxcpus=0 loglevel vmxcap=1 maxcpus=x  ");
        let words: Vec<&str> = o.warnings.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(words, ["quiet", "exit=reboot", "maxcpus=0", "loglevel", "vmxcap=1", "maxcpus=x"]);
        assert_eq!(o.warnings[0].reason, "unknown option");
        assert_eq!(o.exit, ExitMode::Halt, "a bad value leaves the default");
        assert_eq!(o.maxcpus, None);
        assert_eq!(
            alloc::format!("{}", o.warnings[1]),
            "command line: `exit=reboot` ignored: exit is one of halt, qemu, bochs"
        );
    }

    #[test]
    fn console_mode() {
        assert_eq!(Options::parse("").console, ConsoleMode::Both);
        assert_eq!(Options::parse("console=serial").console, ConsoleMode::Serial);
        assert_eq!(Options::parse("console=screen").console, ConsoleMode::Screen);
        assert_eq!(Options::parse("console=screen console=both").console, ConsoleMode::Both);
        let bad = Options::parse("console=vga console");
        assert_eq!(bad.console, ConsoleMode::Both);
        assert_eq!(bad.warnings[0].reason, "console is one of serial, screen, both");
        assert_eq!(bad.warnings[1].reason, "this option needs a value (key=value)");
        assert!(ConsoleMode::Both.serial() && ConsoleMode::Both.screen());
        assert!(ConsoleMode::Serial.serial() && !ConsoleMode::Serial.screen());
        assert!(!ConsoleMode::Screen.serial() && ConsoleMode::Screen.screen());
    }

    #[test]
    fn entry_checker_options() {
        let o = Options::parse("vmcheck entryfuzz=10000 seed=0x2a");
        assert!(o.vmcheck);
        assert_eq!((o.entryfuzz, o.seed), (Some(10000), Some(42)));
        assert_eq!(Options::parse("seed=18446744073709551615").seed, Some(u64::MAX));
        let bad = Options::parse("entryfuzz=0 entryfuzz=x seed=0xg seed vmcheck=1");
        let words: Vec<&str> = bad.warnings.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(words, ["entryfuzz=0", "entryfuzz=x", "seed=0xg", "seed", "vmcheck=1"]);
        assert_eq!((bad.entryfuzz, bad.seed, bad.vmcheck), (None, None, false));
    }

    #[test]
    fn guest_fuzzer_options() {
        let o = Options::parse("guest=fuzz");
        assert_eq!((o.guest, o.fuzz_runs, o.fuzz_skip, o.seed), (GuestKind::Fuzz, FUZZ_RUNS_DEFAULT, 0, None));
        let o = Options::parse("guest=fuzz fuzz-runs=1 fuzz-skip=4711 seed=99");
        assert_eq!((o.fuzz_runs, o.fuzz_skip, o.seed), (1, 4711, Some(99)));
        assert!(o.warnings.is_empty());
        let bad = Options::parse("fuzz-runs=0 fuzz-runs=x fuzz-skip=-1 fuzz-skip guest=fuzzy");
        let words: Vec<&str> = bad.warnings.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(words, ["fuzz-runs=0", "fuzz-runs=x", "fuzz-skip=-1", "fuzz-skip", "guest=fuzzy"]);
        assert_eq!(bad.warnings[4].reason, "guest is one of normal, hostile, bench, fuzz");
        assert_eq!((bad.fuzz_runs, bad.fuzz_skip, bad.guest), (FUZZ_RUNS_DEFAULT, 0, GuestKind::Normal));
    }

    #[test]
    fn later_words_override_earlier_ones() {
        assert_eq!(Options::parse("loglevel=debug loglevel=warn").loglevel, LogLevel::Warn);
    }
}
