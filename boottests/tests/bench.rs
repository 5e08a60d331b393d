//! `make bench`: figures, printed, not asserted (a benchmark, not a test).
//!
//! - `bench: cpuid-exit median=<n> min=<n> leaf=0x0 fast-path=<exits>`: the
//!   CPUID exit round trip, timed with RDTSC inside the guest (10,000 exits) on
//!   Bochs with one CPU, where the TSC advances one tick per emulated
//!   instruction: the figure counts instructions of the whole round trip (guest
//!   RDTSC, CPUID -> VM exit -> entry.s's fast path -> VMRESUME -> guest RDTSC),
//!   for leaf 0, which the guest sees as the CPU answers it (target: <= 64);
//!   `fast-path=` counts the exits the fast path answered.
//! - `bench: cpuid-exit-adjusted ... leaf=0x1`: the same for leaf 1, which
//!   the Rust dispatcher adjusts (VMX hidden, the hypervisor bit, OSXSAVE).
//! - `bench: ap-bringup cpus=<n> us=<emulated us>`: from the first INIT to the
//!   last AP's check-in, Bochs with 4 and 8 CPUs (target: <= 1,000 us each).
//! - `bench: vmx-root ticks=<n>`: TSC ticks from the kernel's entry to the last
//!   CPU in VMX root, Bochs `corei7_sandy_bridge_2600k`, 2 CPUs, ips=200M,
//!   loglevel=info (target: <= 3,000,000). Bochs's TSC counts instructions
//!   with one CPU and per scheduling quantum with several.
//! - `bench: screen us=<per line>`: drawing one log line on the screen console.
//! - `bench: cpuid-exit-svm ...`, `bench: svm-on ticks=<n>` and SVM's
//!   `bench: ap-bringup`: the same figures under SVM, Bochs `ryzen`.
//! - `bench: size elf=<KiB> cbfs=<KiB>`: build/kernel.elf stripped, and as
//!   the LZMA-compressed payload in CBFS (`cbfstool add-payload -c lzma`,
//!   the shared firmware's cbfstool) (targets: <= 512 and <= 128).
//! - `bench: linux-boot ...`, `bench: debian-boot ...`: Linux's boot after the
//!   handoff, natively and as the guest (below).

use boottests::{Boot, Log};
use std::process::Command;

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
    print_bench(&log, "cpuid-exit-adjusted");
}

/// The same round trip under SVM, Bochs `ryzen` (NRIP save, so entry.s's
/// fast path answers leaf 0): `bench: cpuid-exit-svm ...` (target <= 64).
#[test]
#[ignore = "run by `make bench`"]
fn cpuid_exit_round_trip_svm() {
    let log = Boot::bochs("bench-svm", "ryzen").cmdline("guest=bench").run();
    print_bench(&log, "cpuid-exit-svm");
    print_bench(&log, "cpuid-exit-adjusted-svm");
}

/// SVM's AP bring-up and `bench: svm-on ticks=N`: from the kernel's entry
/// to EFER.SVME on the last CPU, Bochs `ryzen`, 4 CPUs, ips=200M (the
/// setting of `vmx-root`'s figure).
#[test]
#[ignore = "run by `make bench`"]
fn svm_on_every_cpu() {
    let log = Boot::bochs("bench-svm-on", "ryzen").cpus(4).ips(200_000_000).cmdline("loglevel=info").run();
    print_bench(&log, "ap-bringup");
    print_bench(&log, "svm-on");
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

/// `bench: linux-boot cpus=<n> native=<ms> guest=<ms> ratio=<r> exits=<n>`:
/// Debian's kernel in Bochs (`corei7_skylake_x`, 2 and 3 CPUs), natively
/// (`linux=native`) and as the guest, the two runs one after the other; ms is
/// wall-clock time from the `handoff:` line to the init's first line, as the
/// harness sees them arrive on COM1 (polled every 100 ms; Bochs runs
/// unthrottled, so this is emulation speed on this host, noisy under load);
/// exits: GUEST-END's count. `bench: linux-exits cpus=<n> <reason>=<cpu0>/<cpu1>/...`
/// gives the guest's exits by reason and CPU (GUEST-END's table), so a
/// regression in exits per CPU shows. `bench: linux-uptime-at-init` gives
/// Linux's own clock at its init (`/proc/uptime`, emulated seconds from
/// Linux's timekeeping start), which host load does not change.
#[test]
#[ignore = "run by `make bench`"]
fn linux_boot_native_and_guest() {
    for cpus in [2, 3] {
        linux_boot("", cpus, 1, |name| Boot::bochs(name, "corei7_skylake_x"));
    }
}

/// The same under SVM: `bench: linux-boot-svm ...` in QEMU's TCG (`-cpu
/// max`, q35, 2 CPUs; target ratio <= 1.10), the median of 5 pairs (a pair
/// takes about 20 s).
#[test]
#[ignore = "run by `make bench`"]
fn linux_boot_native_and_guest_svm() {
    linux_boot("-svm", 2, 5, |name| Boot::qemu(name).cpu_model("max").machine("q35"));
}

/// Debian's kernel natively and as the guest on `engine`'s `cpus` CPUs,
/// `rounds` pairs (native, then guest) one after the other: `bench:
/// linux-boot<suffix> ...` gives the pair with the median ratio (and every
/// pair's ratio: a wall-clock figure moves with the host's load), then that
/// pair's guest run's exits by reason and CPU, Linux's own clock at its init
/// and its local-APIC timer interrupts so far (all CPUs),
/// and `bench: linux-exit-rate<suffix> ...`: the guest's exits per CPU per
/// second of its run (wall clock from the handoff line to GUEST-END), with
/// the reason that dominates.
fn linux_boot(suffix: &str, cpus: u32, rounds: u32, engine: impl Fn(&str) -> Boot) {
    const HANDOFF: &str = "[cpu0] INFO  handoff: linux ";
    const INIT: &str = "INIT: cpus=";
    const END: &str = "GUEST-END ";
    let dir = boottests::root().join("build/linux");
    let run = |mode: &str| {
        let log = engine(&format!("bench-linux{suffix}-{mode}-{cpus}"))
            .cpus(cpus)
            .memory(512)
            .module(dir.join("vmlinuz"), "linux console=ttyS0,115200")
            .module(dir.join("initrd.img"), "initrd")
            .cmdline(&format!("linux={mode}"))
            .watch(HANDOFF)
            .watch(INIT)
            .watch(END)
            .timeout(std::time::Duration::from_secs(1500))
            .run();
        let (Some(from), Some(to)) = (log.arrival(HANDOFF), log.arrival(INIT)) else {
            log.fail(&format!("linux={mode}: no handoff or no init line"));
        };
        if !log.lines_starting(HANDOFF)[0].ends_with(&format!(", {mode}")) {
            log.fail(&format!(
                "linux={mode}: the handoff line says otherwise (a pair of two native boots is no figure)"
            ));
        }
        let uptime =
            log.lines_starting(INIT).first().and_then(|l| l.split("uptime=").nth(1)).unwrap_or("?").to_string();
        const TIMER: &str = "INIT: local-timer-interrupts=";
        let timer = log.lines_starting(TIMER).first().map_or("?".to_string(), |l| l[TIMER.len()..].to_string());
        (log, Run { ms: (to - from).as_millis(), uptime, timer })
    };
    let mut pairs = Vec::new();
    for _ in 0..rounds {
        let (_, native) = run("native");
        let (guest_log, guest) = run("guest");
        pairs.push((native, guest, guest_log));
    }
    let ((native, guest, guest_log), ratios) = median_pair(pairs, |p| (p.0.ms, p.1.ms));
    let at =
        guest_log.lines.iter().position(|l| l.starts_with(END)).unwrap_or_else(|| guest_log.fail("no GUEST-END line"));
    let exits = guest_log.lines[at].split("exits=").nth(1).unwrap_or("?").to_string();
    let all = if rounds > 1 { format!(" rounds={ratios}") } else { String::new() };
    println!(
        "bench: linux-boot{suffix} cpus={cpus} native={} guest={} ratio={:.2} exits={exits}{all}",
        native.ms,
        guest.ms,
        ratio(native.ms, guest.ms)
    );
    let table = exit_table(&guest_log.lines[at + 2..], cpus);
    println!("bench: linux-exits{suffix} cpus={cpus} {table}");
    println!("bench: linux-uptime-at-init{suffix} cpus={cpus} native={} guest={}", native.uptime, guest.uptime);
    println!("bench: linux-timer-interrupts{suffix} cpus={cpus} native={} guest={}", native.timer, guest.timer);
    if let (Some(from), Some(to), Ok(n)) =
        (guest_log.arrival(HANDOFF), guest_log.arrival(END), exits.trim().parse::<f64>())
    {
        let seconds = (to - from).as_secs_f64();
        let dominant = table.split_whitespace().next().unwrap_or("-");
        println!(
            "bench: linux-exit-rate{suffix} cpus={cpus} per-cpu-per-second={:.0} seconds={seconds:.1} dominant={dominant}",
            n / cpus as f64 / seconds
        );
    }
    print_handler_time(&format!("linux-exit-handler{suffix}"), &guest_log, &exits, guest.ms.saturating_sub(native.ms));
}

/// A guest boot's wall-clock time over the native one's.
fn ratio(native_ms: u128, guest_ms: u128) -> f64 {
    guest_ms as f64 / native_ms as f64
}

/// Of native/guest `pairs` (`ms` gives a pair's native and guest ms), the
/// one with the median ratio, and every pair's ratio in the order they ran
/// (`1.04/1.33/...`).
fn median_pair<T>(mut pairs: Vec<T>, ms: impl Fn(&T) -> (u128, u128)) -> (T, String) {
    let of = |p: &T| {
        let (native, guest) = ms(p);
        ratio(native, guest)
    };
    let ratios: Vec<String> = pairs.iter().map(|p| format!("{:.2}", of(p))).collect();
    pairs.sort_by(|a, b| of(a).total_cmp(&of(b)));
    (pairs.swap_remove(pairs.len() / 2), ratios.join("/"))
}

/// One Linux boot of `linux_boot`: ms from the handoff to the init line,
/// and what the init line and the next say (Linux's uptime, its local-APIC
/// timer interrupts on all CPUs).
struct Run {
    ms: u128,
    uptime: String,
    timer: String,
}

/// `bench: <name> ms=<cpu0>/<cpu1>/... per-exit-us=<u> gap-ms=<g>`: the time
/// the guest's CPUs spent in the hypervisor's exit handler (GUEST-END's
/// `exit-handler ms=` line, TSC time from the handler's entry to its
/// return), per exit on average (of GUEST-END's `exits`), beside the wall-clock gap between the guest
/// and the native boot: what the gap leaves over is the world switches
/// themselves (in QEMU's TCG, mostly the software TLB flushed at each).
fn print_handler_time(name: &str, log: &Log, exits: &str, gap_ms: u128) {
    const LINE: &str = "exit-handler ms=";
    let Some(ms) = log.lines_starting(LINE).first().map(|l| l[LINE.len()..].to_string()) else {
        return println!("bench: {name} none (no `{LINE}` line)");
    };
    let total_ms: u64 = ms.split('/').filter_map(|m| m.parse::<u64>().ok()).sum();
    let exits: Option<u64> = exits.trim().parse().ok();
    let per_exit =
        exits.filter(|&n| n > 0).map_or("?".to_string(), |n| format!("{:.1}", total_ms as f64 * 1000.0 / n as f64));
    println!("bench: {name} ms={ms} per-exit-us={per_exit} gap-ms={gap_ms}");
}

/// GUEST-END's table rows (`  48 EPT violation   56986  107597  50584`) as
/// `EPT-violation=56986/107597/50584 ...`, most exits first.
fn exit_table(rows: &[String], cpus: u32) -> String {
    let mut reasons: Vec<(u64, String)> = rows
        .iter()
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let (name, counts) = words[1..].split_at(words.len() - 1 - cpus as usize);
            let total = counts.iter().map(|c| c.parse::<u64>().unwrap_or(0)).sum();
            (total, format!("{}={}", name.join("-"), counts.join("/")))
        })
        .collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.0));
    reasons.into_iter().map(|(_, r)| r).collect::<Vec<_>>().join(" ")
}

/// `make bench`: the payload's size in flash. The stripped ELF (what a
/// multiboot2 loader reads from disk) and the payload as cbfstool stores it
/// in CBFS with LZMA (what a board's flash holds: `simple elf`, its segments
/// compressed one by one, .bss not stored), in KiB: `bench: size ...` for
/// build/kernel.elf (both backends and the fuzzers), `bench:
/// size-payload-intel ...` and `bench: size-payload-amd ...` for the flash
/// payloads of `make payload` (one backend each, no fuzzers).
#[test]
#[ignore = "run by `make bench`"]
fn size() {
    for (name, elf) in
        [("size", "kernel.elf"), ("size-payload-intel", "payload-intel.elf"), ("size-payload-amd", "payload-amd.elf")]
    {
        let (elf_kib, cbfs_kib) = flash_size(&boottests::built(elf));
        println!("bench: {name} elf={elf_kib} cbfs={cbfs_kib}");
    }
}

/// KiB of `elf` stripped, and as coreboot's LZMA payload in CBFS.
fn flash_size(elf: &std::path::Path) -> (u64, u64) {
    let dir = boottests::root().join("target/boottests/bench-size");
    std::fs::create_dir_all(&dir).unwrap();
    let stripped = dir.join("kernel.stripped");
    let ok = Command::new("strip").arg("-o").arg(&stripped).arg(elf).status().expect("strip (binutils)");
    assert!(ok.success(), "strip failed");
    let elf_kib = std::fs::metadata(&stripped).unwrap().len().div_ceil(1024);
    let rom = dir.join("coreboot.rom");
    std::fs::copy(boottests::coreboot_rom(), &rom).unwrap();
    boottests::cbfstool(&rom, &["remove", "-n", "fallback/payload"]);
    boottests::cbfstool(&rom, &["add-payload", "-f", elf.to_str().unwrap(), "-n", "fallback/payload", "-c", "lzma"]);
    let out = Command::new(boottests::firmware_file("cbfstool")).arg(&rom).arg("print").output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    // "fallback/payload   0x1ed40   simple elf   143210 none"
    let bytes: u64 = listing
        .lines()
        .find(|l| l.starts_with("fallback/payload "))
        .and_then(|l| l.split_whitespace().rev().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no fallback/payload in cbfstool's listing:\n{listing}"));
    (elf_kib, bytes.div_ceil(1024))
}

/// `bench: debian-boot native=<ms> guest=<ms> ratio=<r> exits=<n>`: the whole
/// Debian 12 system (build/debian, scripts/debian-rootfs) in QEMU q35 `-cpu
/// max`, 2 CPUs, 1 GiB, booted in 3 rounds, each with `linux=native` and
/// then `linux=guest`; ms is wall-clock from the `handoff:` line to the marker
/// line (`DEBIAN: cpus=`, printed once systemd's boot is over), as the harness
/// sees them on COM1, and the line gives the round with the median ratio (and
/// every round's ratio, `rounds=`), then `bench: debian-exit-handler ...`
/// for that round's guest run. Each run is filed under what its handoff line says, so the
/// `linux=guest` run counts as a guest run only where the hypervisor could
/// host Linux; where it could not (QEMU's TCG has no VMX) the line says so and
/// why, and gives the native figure alone.
#[test]
#[ignore = "run by `make bench`"]
fn debian_boot_native_and_guest() {
    const HANDOFF: &str = "[cpu0] INFO  handoff: linux ";
    const MARKER: &str = "DEBIAN: cpus=";
    const WHY_NATIVE: &str = "[cpu0] INFO  linux: runs natively, not as a guest: ";
    const ROUNDS: u32 = 3;
    let root = boottests::root();
    let dir = root.join("build/debian");
    let built = std::process::Command::new(root.join("scripts/debian-rootfs")).arg(&dir).status();
    assert!(built.is_ok_and(|s| s.success()), "scripts/debian-rootfs failed");
    // Each run by what its handoff line says: (round, ms from it to the marker[, the log]).
    let mut natives = Vec::new();
    let mut guests = Vec::new();
    let mut why_native = None;
    for round in 0..ROUNDS {
        for asked in ["native", "guest"] {
            let name = format!("bench-debian-{asked}");
            let boot = Boot::qemu(&name).machine("q35").cpu_model("max").cpus(2).memory(1024);
            std::fs::create_dir_all(boot.dir()).unwrap();
            let disk = boot.dir().join("disk.img");
            std::fs::copy(dir.join("disk.img"), &disk).unwrap();
            let log = boot
                .module(dir.join("vmlinuz"), "linux console=ttyS0,115200 root=/dev/vda ro")
                .module(dir.join("initrd.img"), "initrd")
                .disk(&disk)
                .cmdline(&format!("linux={asked}"))
                .watch(HANDOFF)
                .watch(MARKER)
                .timeout(std::time::Duration::from_secs(900))
                .run();
            log.assert_no_exception();
            let (Some(from), Some(to)) = (log.arrival(HANDOFF), log.arrival(MARKER)) else {
                log.fail(&format!("linux={asked}: no handoff or no marker line"));
            };
            let ms = (to - from).as_millis();
            let handoff = log.lines_starting(HANDOFF)[0];
            if handoff.ends_with(", guest") {
                guests.push((round, ms, log));
            } else {
                if asked == "guest" {
                    why_native = log.lines_starting(WHY_NATIVE).first().map(|l| l[WHY_NATIVE.len()..].to_string());
                }
                natives.push((round, ms));
            }
        }
    }
    // Pair each guest run with its round's native run; the pair with the median ratio.
    let pairs: Vec<(u128, u128, Log)> = guests
        .into_iter()
        .filter_map(|(round, guest, log)| natives.iter().find(|n| n.0 == round).map(|n| (n.1, guest, log)))
        .collect();
    if pairs.is_empty() {
        let native = natives.first().map(|n| n.1).expect("no native figure");
        println!(
            "bench: debian-boot native={native} guest=none (linux=guest ran natively: {})",
            why_native.as_deref().unwrap_or("no reason logged")
        );
        return;
    }
    let ((native, guest, log), ratios) = median_pair(pairs, |p| (p.0, p.1));
    let exits = log.lines_starting("GUEST-END ").first().and_then(|l| l.split("exits=").nth(1)).unwrap_or("?");
    println!(
        "bench: debian-boot native={native} guest={guest} ratio={:.2} exits={exits} rounds={ratios}",
        ratio(native, guest)
    );
    print_handler_time("debian-exit-handler", &log, exits, guest.saturating_sub(native));
}
