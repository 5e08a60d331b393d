//! Issue 20: the kernel as a coreboot payload. Real coreboot for QEMU q35
//! (../shared/firmware, `boottests::firmware_dir`): its GRUB payload booting
//! the ISO unchanged; the kernel itself as the payload, its command line and
//! Linux in CBFS; and every bad hand-over refused by name, ending with
//! SUMMARY. A missing firmware directory fails these tests with a message
//! that says where it was looked for.

use boottests::{coreboot_rom, root, Boot, Coreboot, Log, Screen};
use hvlogic::linux::bzimage::{offset, BzImage};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BOOT: &str = "[cpu0] INFO  boot: hypervisor ";
const NO_VMX: &str = "[cpu0] ERROR SVM not supported (CPUID Fn8000_0001_ECX[2]=0)";

/// The `boot:` line names coreboot's version, then the command line from CBFS.
fn assert_loaded_by_coreboot(log: &Log, cmdline: &str) {
    let lines = log.lines_starting(BOOT);
    let ok = lines.len() == 1 && {
        let (_, rest) = lines[0].split_once(", loaded by coreboot ").unwrap_or(("", ""));
        let version = rest.strip_suffix(&format!(", command line `{cmdline}`")).unwrap_or("");
        !version.is_empty() && !version.contains(' ')
    };
    if !ok {
        log.fail(&format!("expected one `boot:` line `... loaded by coreboot <version>, command line `{cmdline}``"));
    }
    let facts = log.lines_starting("[cpu0] INFO  boot: coreboot tables 0x");
    let want = ", console I/O port 0x3f8, 115200 baud, CBFS 0xff001000-0x100000000 (";
    if facts.len() != 1 || !facts[0].contains(want) {
        log.fail(&format!("expected one `boot: coreboot tables ...` line with `{want}`"));
    }
    log.assert_count("[cpu0] INFO  acpi: MADT via coreboot's ACPI RSDP record (XSDT): ", 1);
}

#[test]
fn grub_payload_boots_the_iso_unchanged() {
    for cpus in [1, 4] {
        let log = Boot::coreboot(&format!("coreboot-grub-{cpus}"), Coreboot::Grub).cpus(cpus).run();
        log.assert_no_exception();
        log.assert_count(
            "[cpu0] INFO  boot: hypervisor 0.1.0, loaded by GRUB 2.06-13+deb12u2, command line `exit=qemu`",
            1,
        );
        log.assert_count("[cpu0] INFO  acpi: MADT via multiboot2 old RSDP tag (RSDT): ", 1);
        log.assert_online_lines(cpus);
        log.assert_count(NO_VMX, 1);
        log.assert_summary(cpus, cpus, 0, 0, "NO_VMX");
    }
}

/// GRUB for coreboot has no `vbe`: grub.cfg must not ask for it. GRUB's
/// messages go to the screen only (its serial terminal finds no COM port in
/// the BIOS data area coreboot leaves empty), so this reads the screen: the
/// ISO's grub.cfg without the kernel line, so that GRUB stops at "you need
/// to load the kernel first" with every error of the menu entry above it.
#[test]
fn grub_cfg_prints_no_error_on_the_coreboot_platform() {
    let dir = root().join("target/boottests/coreboot-grub-cfg");
    let tree = dir.join("iso");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(tree.join("boot/grub")).unwrap();
    let cfg = std::fs::read_to_string(root().join("grub/grub.cfg")).unwrap();
    let cfg: String = cfg
        .lines()
        .filter(|l| !l.contains("@CMDLINE@") && !l.contains("@MODULES@"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(tree.join("boot/grub/grub.cfg"), cfg).unwrap();
    let iso = dir.join("cfg.iso");
    let made = Command::new("grub-mkrescue").arg("-o").arg(&iso).arg(&tree).output().expect("grub-mkrescue");
    assert!(made.status.success(), "grub-mkrescue: {}", String::from_utf8_lossy(&made.stderr));
    let rom = dir.join("coreboot.rom");
    std::fs::copy(coreboot_rom(), &rom).unwrap();
    let monitor = dir.join("monitor.sock");
    let _ = std::fs::remove_file(&monitor);
    let mut qemu = Command::new(root().join("scripts/boot"))
        .args(["--engine", "qemu", "--machine", "q35", "--serial"])
        .arg(dir.join("serial.log"))
        .arg("--bios")
        .arg(&rom)
        .arg("--iso")
        .arg(&iso)
        .arg("--monitor")
        .arg(&monitor)
        .arg("--workdir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("scripts/boot");
    // coreboot takes about 2 s in TCG, GRUB about 1 s more; then it waits for a key.
    let shot = dir.join("screen.ppm");
    let _ = std::fs::remove_file(&shot);
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut text = String::new();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        boottests::monitor_command(&monitor, &format!("screendump {}", shot.display()));
        std::thread::sleep(Duration::from_millis(500));
        let Ok(screen) = Screen::from_ppm(&shot) else { continue };
        text = screen.ocr(0..screen.height.min(200), 2, 6, &dir.join("ocr.pgm")).unwrap();
        if text.contains("Press any key") {
            break;
        }
    }
    let _ = qemu.kill();
    let _ = qemu.wait();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("error")).collect();
    assert!(text.contains("Booting"), "GRUB's screen was not read: {text:?}");
    assert_eq!(errors, ["error: you need to load the kernel first."], "GRUB's screen: {text}");
}

#[test]
fn the_kernel_is_the_payload() {
    for cpus in [1, 4] {
        let log = Boot::coreboot_payload(&format!("coreboot-payload-{cpus}")).cpus(cpus).run();
        log.assert_no_exception();
        assert_loaded_by_coreboot(&log, "exit=qemu");
        log.assert_online_lines(cpus);
        log.assert_count(NO_VMX, 1);
        log.assert_summary(cpus, cpus, 0, 0, "NO_VMX");
    }
}

/// build/linux/{vmlinuz,initrd.img}, fetched and built once (scripts/linux-guest).
fn guest_files() -> (PathBuf, PathBuf) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let dir = root().join("build/linux");
    ONCE.call_once(|| {
        let ok = Command::new(root().join("scripts/linux-guest")).arg(&dir).status();
        assert!(ok.is_ok_and(|s| s.success()), "scripts/linux-guest failed");
    });
    (dir.join("vmlinuz"), dir.join("initrd.img"))
}

/// A text file for CBFS, in the scenario's directory.
fn text_file(scenario: &str, name: &str, text: &str) -> PathBuf {
    let dir = root().join("target/boottests").join(scenario);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The payload with Debian's kernel, the test initramfs and Linux's command
/// line in CBFS.
fn with_linux(boot: Boot, scenario: &str, vmlinuz: &Path) -> Boot {
    let (_, initrd) = guest_files();
    let cmdline = text_file(scenario, "linux-cmdline", "console=ttyS0,115200\n");
    boot.memory(512)
        .cbfs_file("hypervisor/linux", vmlinuz, &["-t", "raw"])
        .cbfs_file("hypervisor/initrd", initrd, &["-t", "raw"])
        .cbfs_file("hypervisor/linux-cmdline", cmdline, &["-t", "raw"])
}

/// coreboot -> this payload -> Linux from CBFS, on QEMU CPU model `cpu`:
/// `how` is `native` (the CPU cannot host it) or `guest`.
fn linux_from_cbfs(scenario: &str, cpu: &'static str, cpus: u32, how: &str) -> Log {
    linux_from_cbfs_of("kernel.elf", scenario, cpu, cpus, how)
}

/// `linux_from_cbfs` with `build/<kernel>` as the payload.
fn linux_from_cbfs_of(kernel: &'static str, scenario: &str, cpu: &'static str, cpus: u32, how: &str) -> Log {
    let (vmlinuz, _) = guest_files();
    let version = BzImage::parse(&std::fs::read(&vmlinuz).unwrap()).unwrap().version.to_string();
    let boot = Boot::coreboot_payload_of(scenario, kernel).cpu_model(cpu).cpus(cpus);
    let boot = with_linux(boot, scenario, &vmlinuz);
    let log = boot.timeout(Duration::from_secs(120)).run();
    log.assert_no_exception();
    if log.timed_out || log.exit_status != Some(0) {
        log.fail(&format!("QEMU did not power off (exit status {:?})", log.exit_status));
    }
    assert_loaded_by_coreboot(&log, "exit=qemu");
    log.assert_line(&format!("[cpu0] INFO  handoff: linux {version}, {cpus} CPUs, {how}"));
    for bad in ["Kernel panic", "BUG:", "Oops"] {
        if let Some(l) = log.lines.iter().find(|l| l.contains(bad)) {
            log.fail(&format!("Linux failed: {l}"));
        }
    }
    let online = if cpus == 1 { String::from("0") } else { format!("0-{}", cpus - 1) };
    if log.lines_starting(&format!("INIT: cpus={cpus} online={online} ")).is_empty() {
        log.fail("Linux did not reach its init with every CPU online");
    }
    log.assert_line("INIT: poweroff");
    log
}

#[test]
fn linux_from_cbfs_boots_natively_without_vmx() {
    let log = linux_from_cbfs("coreboot-linux-native", "Skylake-Server", 2, "native");
    log.assert_summary(2, 2, 0, 0, "NO_VMX");
    log.assert_line("[cpu0] INFO  linux: runs natively, not as a guest: VMX is unavailable");
    let module = log.lines_starting("[cpu0] INFO  boot: module 0xff");
    if module.len() != 2 || !module[0].ends_with(" `linux console=ttyS0,115200`") || !module[1].ends_with(" `initrd`") {
        log.fail("expected the `linux` and `initrd` modules read in place from the flash (0xff...)");
    }
    log.assert_count("GUEST-END ", 0);
}

/// coreboot -> this payload -> Linux from CBFS as the guest of every CPU:
/// QEMU's `-cpu max` has SVM with nested paging.
#[test]
fn linux_from_cbfs_runs_as_the_guest_under_svm() {
    let log = linux_from_cbfs("coreboot-linux-guest", "max", 2, "guest");
    log.assert_summary(2, 2, 2, 2, "PASS");
    log.assert_count("GUEST-END os=linux how=poweroff exits=", 1);
}

/// The flash payload for AMD boards (`make payload`: SVM only, no fuzzers)
/// runs Linux from CBFS as the guest of every CPU, as the full kernel does.
#[test]
fn amd_flash_payload_runs_linux_from_cbfs_as_the_guest() {
    let log = linux_from_cbfs_of("payload-amd.elf", "coreboot-amd-payload-linux", "max", 2, "guest");
    log.assert_summary(2, 2, 2, 2, "PASS");
    if log.summary().virt != "svm" {
        log.fail("expected virt=svm");
    }
    log.assert_count("GUEST-END os=linux how=poweroff exits=", 1);
}

/// The Intel payload (VMX only) on an AMD CPU: the log names the missing
/// backend, every CPU ends NO_VMX, Linux boots natively; the fuzzers it
/// was built without are refused by name.
#[test]
fn intel_flash_payload_on_an_amd_cpu_says_what_it_lacks() {
    const FUZZ: &str = "[cpu0] WARN  command line: `guest=fuzz` ignored: this build has no fuzzers (the kernel was built without its `fuzz` feature)";
    let boot = Boot::coreboot_payload_of("coreboot-intel-payload-amd", "payload-intel.elf").cpu_model("max").cpus(2);
    let log = boot.cmdline("guest=fuzz").run();
    log.assert_no_exception();
    log.assert_line(FUZZ);
    log.assert_line("[cpu0] ERROR virt: this CPU offers SVM, and this kernel was built without its SVM backend (the `svm` feature): no hardware virtualization");
    log.assert_summary(2, 2, 0, 0, "NO_VMX");
    let log = linux_from_cbfs_of("payload-intel.elf", "coreboot-intel-payload-linux", "max", 2, "native");
    log.assert_summary(2, 2, 0, 0, "NO_VMX");
    log.assert_line(
        "[cpu0] INFO  linux: runs natively, not as a guest: this kernel was built without the backend this CPU needs",
    );
    log.assert_count("GUEST-END ", 0);
}

/// A bad hand-over that ends the run before the command line is read: one
/// ERROR line, SUMMARY with FAIL, and every CPU halted (`exit=halt`, the
/// default, since no command line says otherwise).
fn refused_at_boot(boot: Boot, error_start: &str, error_end: &str) -> Log {
    let log = boot.exit_halt().timeout(Duration::from_secs(60)).run();
    let prefix = format!("[cpu0] ERROR run ends early: {error_start}");
    let lines = log.lines_starting(&prefix);
    if lines.len() != 1 || !lines[0].ends_with(error_end) {
        log.fail(&format!("expected one line `{prefix}...{error_end}`, found {lines:?}"));
    }
    log.assert_count("[cpu0] INFO  boot: hypervisor ", 0);
    log.assert_summary(1, 1, 0, 0, "FAIL");
    if log.halted_report.as_deref().is_some_and(|r| !boottests::all_halted(r, 1)) {
        log.fail("the CPU did not halt after SUMMARY");
    }
    log
}

/// A bad OS in CBFS: the run goes on without it, as with bad GRUB modules:
/// one ERROR line, no handoff, FAIL, and QEMU ends with 37.
fn refused_os(boot: Boot, error_start: &str, error_end: &str) {
    let log = boot.run();
    let prefix = format!("[cpu0] ERROR linux: {error_start}");
    let lines = log.lines_starting(&prefix);
    if lines.len() != 1 || !lines[0].ends_with(error_end) {
        log.fail(&format!("expected one line `{prefix}...{error_end}`, found {lines:?}"));
    }
    log.assert_count("[cpu0] INFO  handoff:", 0);
    log.assert_no_exception();
    log.assert_summary(1, 1, 0, 0, "FAIL");
}

/// The kernel's ELF with a 32-bit shim in front that changes what coreboot
/// hands over, then jumps to the kernel's entry: a payload that enters the
/// kernel "like coreboot, but ...". The shim is a PT_LOAD of its own just
/// below the kernel (2 MiB - 4 KiB).
fn shimmed_kernel(scenario: &str, shim: &[u8]) -> PathBuf {
    const SHIM_AT: u64 = 0x1f_f000;
    let elf = std::fs::read(root().join("build/kernel.elf")).unwrap();
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
    let entry = u64_at(0x18);
    let (phoff, phnum) = (u64_at(0x20) as usize, u16_at(0x38));
    let loads: Vec<[u64; 7]> = (0..phnum)
        .map(|i| phoff + 56 * i)
        .filter(|&p| u32::from_le_bytes(elf[p..p + 4].try_into().unwrap()) == 1)
        .map(|p| {
            let flags = u32::from_le_bytes(elf[p + 4..p + 8].try_into().unwrap()) as u64;
            [flags, u64_at(p + 8), u64_at(p + 16), u64_at(p + 24), u64_at(p + 32), u64_at(p + 40), u64_at(p + 48)]
        })
        .collect();
    // The shim, then `mov $entry, %eax; jmp *%eax`.
    let mut code = shim.to_vec();
    code.push(0xb8);
    code.extend_from_slice(&(entry as u32).to_le_bytes());
    code.extend_from_slice(&[0xff, 0xe0]);
    let mut out = elf[..64].to_vec();
    out[0x18..0x20].copy_from_slice(&SHIM_AT.to_le_bytes());
    out[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
    out[0x28..0x30].fill(0); // no section headers
    out[0x38..0x3a].copy_from_slice(&((loads.len() + 1) as u16).to_le_bytes());
    out[0x3c..0x40].fill(0);
    let mut segments = vec![([5u64, 0, SHIM_AT, SHIM_AT, code.len() as u64, code.len() as u64, 0x1000], code)];
    for l in &loads {
        segments.push((*l, elf[l[1] as usize..(l[1] + l[4]) as usize].to_vec()));
    }
    let mut data = Vec::new();
    let mut offset = 0x1000u64;
    let mut headers = Vec::new();
    for (ph, bytes) in &segments {
        // The file offset keeps the segment's place in its page.
        offset = offset.next_multiple_of(0x1000) + ph[2] % 0x1000;
        let mut h = Vec::new();
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&(ph[0] as u32).to_le_bytes());
        for v in [offset, ph[2], ph[3], ph[4], ph[5], ph[6]] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        headers.extend_from_slice(&h);
        data.push((offset, bytes.clone()));
        offset += bytes.len() as u64;
    }
    out.extend_from_slice(&headers);
    for (at, bytes) in data {
        out.resize(at as usize, 0);
        out.extend_from_slice(&bytes);
    }
    let dir = root().join("target/boottests").join(scenario);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shimmed-kernel.elf");
    std::fs::write(&path, out).unwrap();
    path
}

/// The kernel behind `shim` as coreboot's payload, with a command line.
fn shimmed(scenario: &str, shim: &[u8]) -> Boot {
    let elf = shimmed_kernel(scenario, shim);
    Boot::coreboot(scenario, Coreboot::Payload { elf, cmdline_file: true, files: Vec::new() })
}

/// 32-bit code: `mov 4(%esp), %eax` (the tables' address coreboot passed).
const ARG_TO_EAX: [u8; 4] = [0x8b, 0x44, 0x24, 0x04];

#[test]
fn bad_hand_overs_are_refused_by_name() {
    // Neither loader: no multiboot2 magic, the argument 0, and the low
    // table coreboot writes at 0x500 (a forward to the real one) wiped.
    let neither = [
        0xc7, 0x05, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // movl $0, 0x500
        0xc7, 0x44, 0x24, 0x04, 0x00, 0x00, 0x00, 0x00, // movl $0, 4(%esp)
    ];
    let _ = refused_at_boot(
        shimmed("coreboot-neither", &neither),
        "entered by neither a multiboot2 loader (EAX=0x",
        ", not 0x36d76289) nor coreboot (no coreboot tables: no `LBIO` header at the argument 0x0, in the first 4 KiB or at 0xf0000)",
    );
    // The tables missing: the real table's signature wiped; the low table still forwards to it.
    let mut missing = ARG_TO_EAX.to_vec();
    missing.extend_from_slice(&[0xc7, 0x00, 0x00, 0x00, 0x00, 0x00]); // movl $0, (%eax)
    let _ = refused_at_boot(shimmed("coreboot-no-tables", &missing), "coreboot tables at 0x", ": no `LBIO` signature");
    // A bad header checksum: table_entries (header byte 0x14) changed.
    let mut header = ARG_TO_EAX.to_vec();
    header.extend_from_slice(&[0x80, 0x70, 0x14, 0x01]); // xorb $1, 0x14(%eax)
    let _ = refused_at_boot(
        shimmed("coreboot-header-checksum", &header),
        "coreboot tables at 0x",
        ": bad header checksum (the IP checksum of the header is 0xfffe, not 0)",
    );
    // A bad table checksum: a byte of the first record (the memory map) changed.
    let mut table = ARG_TO_EAX.to_vec();
    table.extend_from_slice(&[0x80, 0x70, 0x30, 0x01]); // xorb $1, 0x30(%eax)
    let log = refused_at_boot(shimmed("coreboot-table-checksum", &table), "coreboot tables at 0x", "");
    log.assert_count("[cpu0] ERROR run ends early: coreboot tables at 0x", 1);
    if !log.lines.iter().any(|l| l.contains(": bad table checksum: the header says 0x")) {
        log.fail("expected `bad table checksum: the header says ...`");
    }
}

#[test]
fn cbfs_files_that_are_not_what_their_names_say_are_refused() {
    let some_text = root().join("grub/grub.cfg");
    // The command line: stored compressed; not text.
    // cbfstool stores a file uncompressed when compressing does not shrink it: a long, repetitive line.
    let cmdline =
        text_file("coreboot-cmdline-lzma", "cmdline", &format!("{}exit=qemu\n", "loglevel=info ".repeat(100)));
    let _ = refused_at_boot(
        Boot::coreboot_payload("coreboot-cmdline-lzma").no_cmdline_file().cbfs_file(
            "hypervisor/cmdline",
            &cmdline,
            &["-t", "raw", "-c", "lzma"],
        ),
        "CBFS file `hypervisor/cmdline` is stored LZMA-compressed; ",
        "add it uncompressed (no -c)",
    );
    let (vmlinuz, initrd) = guest_files();
    let _ = refused_at_boot(
        Boot::coreboot_payload("coreboot-cmdline-binary").no_cmdline_file().cbfs_file(
            "hypervisor/cmdline",
            &initrd,
            &["-t", "raw"],
        ),
        "CBFS file `hypervisor/cmdline` is not one line of text (byte ",
        " is not printable UTF-8)",
    );
    // The OS: a text file as the kernel; a kernel stored LZ4-compressed; an
    // initrd that is not a raw file; a kernel that does not fit.
    refused_os(
        Boot::coreboot_payload("coreboot-linux-text").cbfs_file("hypervisor/linux", &some_text, &["-t", "raw"]),
        "CBFS file `hypervisor/linux` is not a Linux kernel: not a bzImage: ",
        "; no handoff",
    );
    let repetitive = text_file("coreboot-linux-lz4", "repetitive", &"not a kernel ".repeat(5000));
    refused_os(
        Boot::coreboot_payload("coreboot-linux-lz4").cbfs_file("hypervisor/linux", &repetitive, &["-t", "raw", "-c", "lz4"]),
        "CBFS file `hypervisor/linux` is stored LZ4-compressed; this payload reads files as stored: add it uncompressed (no -c)",
        "; no handoff",
    );
    refused_os(
        Boot::coreboot_payload("coreboot-initrd-type")
            .cbfs_file("hypervisor/linux", &vmlinuz, &["-t", "raw"])
            .cbfs_file("hypervisor/initrd", &some_text, &["-t", "struct"])
            .memory(512),
        "CBFS file `hypervisor/initrd` has type struct (0x70), not raw: add it with `cbfstool ... add -t raw`",
        "; no handoff",
    );
    // A partial copy of the kernel (issue 21), and an empty initrd: refused
    // from CBFS as from GRUB's modules.
    let partial = root().join("target/boottests/coreboot-linux-truncated");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("vmlinuz"), &std::fs::read(&vmlinuz).unwrap()[..100_000]).unwrap();
    std::fs::write(partial.join("empty"), b"").unwrap();
    refused_os(
        Boot::coreboot_payload("coreboot-linux-truncated").cbfs_file(
            "hypervisor/linux",
            partial.join("vmlinuz"),
            &["-t", "raw"],
        ),
        "CBFS file `hypervisor/linux` is not a Linux kernel: truncated: 100000 bytes, but its header says ",
        "((1 + setup_sects) * 512 + syssize * 16); no handoff",
    );
    refused_os(
        Boot::coreboot_payload("coreboot-initrd-empty")
            .cbfs_file("hypervisor/linux", &vmlinuz, &["-t", "raw"])
            .cbfs_file("hypervisor/initrd", partial.join("empty"), &["-t", "raw"])
            .memory(512),
        "CBFS file `hypervisor/initrd` is empty (0 bytes)",
        "; no handoff",
    );
    let mut image = std::fs::read(&vmlinuz).unwrap();
    image[offset::INIT_SIZE..offset::INIT_SIZE + 4].copy_from_slice(&0x7ff0_0000u32.to_le_bytes());
    let big = root().join("target/boottests/coreboot-linux-too-big");
    std::fs::create_dir_all(&big).unwrap();
    std::fs::write(big.join("vmlinuz"), image).unwrap();
    refused_os(
        Boot::coreboot_payload("coreboot-linux-too-big")
            .cbfs_file("hypervisor/linux", big.join("vmlinuz"), &["-t", "raw"])
            .memory(512),
        "the kernel does not fit the memory map: it needs 0x7ff00000 bytes of free RAM at or above 0x1000000, below 4 GiB",
        "; no handoff",
    );
}
