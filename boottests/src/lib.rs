//! The boot-test harness: build an ISO for a scenario, boot it in QEMU or
//! Bochs with a timeout, capture COM1, and assert on exact lines and on the
//! SUMMARY line. A failed assertion prints the last 60 lines of the log.
//!
//! Needs `build/kernel.elf` (`make test` builds it first). Screen tests
//! (`screendump`) read the picture with `tesseract` (Debian's tesseract-ocr).

pub mod fuzz;
mod screen;

pub use screen::{normalize, Colour, Screen};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Engine {
    Qemu,
    Bochs,
}

/// One boot: engine, machine, processors and kernel command line.
#[derive(Clone, Debug)]
pub struct Boot {
    name: String,
    engine: Engine,
    cpus: u32,
    machine: &'static str,
    uefi: bool,
    model: &'static str,
    cmdline: String,
    timeout: Duration,
    /// Guest RAM in MiB (scripts/boot's default when None).
    memory: Option<u32>,
    /// Bochs instructions per emulated second (scripts/boot's default when None).
    ips: Option<u64>,
    /// Keep the bare-metal `exit=halt` and, once SUMMARY is out, ask QEMU's
    /// monitor for every CPU's registers (`Log::halted_report`).
    halt: bool,
    /// Boot modules: file and string (`module2 FILE STRING`).
    modules: Vec<(PathBuf, String)>,
    /// Stop the emulator once this many lines start with this prefix.
    stop_after: Option<(String, usize)>,
    /// Line prefixes whose first arrival on COM1 is timed (`Log::arrival`).
    watch: Vec<String>,
    /// With `halt`: also save the screen through the monitor (`Log::screen`).
    screendump: bool,
    /// GRUB's `gfxpayload` (scripts/mkiso --gfxpayload): `text`, or WxHxD.
    gfxpayload: Option<&'static str>,
    /// QEMU's `-cpu` model (QEMU's default when None).
    /// Boot coreboot (../shared/firmware) instead of SeaBIOS or OVMF.
    coreboot: Option<Coreboot>,
    /// A raw disk image the machine writes to (scripts/boot --disk).
    disk: Option<PathBuf>,
    /// QEMU boots again after a reset instead of exiting (no -no-reboot).
    reboot: bool,
    /// The kernel GRUB loads, under `build/` (`kernel.elf`, or a flash payload
    /// of `make payload`).
    kernel: &'static str,
}

/// What coreboot boots: its GRUB payload (which boots the scenario's ISO),
/// or a payload ELF (the kernel, or a test's wrapper of it) with files added
/// to CBFS; the ROM is a copy of the shared one, changed with cbfstool.
#[derive(Clone, Debug)]
pub enum Coreboot {
    Grub,
    Payload {
        elf: PathBuf,
        /// Write the command line (with `exit=`) as `hypervisor/cmdline`.
        cmdline_file: bool,
        /// CBFS files: name, contents, cbfstool options (`-t raw`, `-c lzma`, ...).
        files: Vec<(String, PathBuf, Vec<String>)>,
    },
}

/// Where the shared coreboot firmware is: `$HV_FIRMWARE`, else `../shared/firmware`
/// beside the repository (as CI lays it out and /work/shared/firmware here).
pub fn firmware_dir() -> PathBuf {
    std::env::var_os("HV_FIRMWARE").map(PathBuf::from).unwrap_or_else(|| root().join("../shared/firmware"))
}

/// A firmware file, or a failure that says plainly what is missing and where.
pub fn firmware_file(name: &str) -> PathBuf {
    let path = firmware_dir().join(name);
    assert!(
        path.exists(),
        "the coreboot tests need the shared firmware: {} is missing (they look in ../shared/firmware beside the \
         repository, or $HV_FIRMWARE; docs/coreboot.md says what it holds and how to build coreboot instead)",
        path.display()
    );
    path
}

/// `cbfstool ROM ARGS...`, which must succeed.
pub fn cbfstool(rom: &Path, args: &[&str]) {
    let out = Command::new(firmware_file("cbfstool")).arg(rom).args(args).output().expect("cbfstool");
    assert!(out.status.success(), "cbfstool {} {args:?}: {}", rom.display(), String::from_utf8_lossy(&out.stderr));
}

/// The shared coreboot ROM (GRUB as its payload), unpacked once into target/.
pub fn coreboot_rom() -> PathBuf {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let xz = firmware_file("coreboot-qemu-q35-grub.rom.xz");
    let rom = root().join("target/boottests/coreboot-qemu-q35-grub.rom");
    ONCE.call_once(|| {
        std::fs::create_dir_all(rom.parent().unwrap()).unwrap();
        let out = Command::new("xz").arg("-dc").arg(&xz).output().expect("xz");
        assert!(out.status.success(), "xz -dc {}: {}", xz.display(), String::from_utf8_lossy(&out.stderr));
        std::fs::write(&rom, out.stdout).unwrap();
    });
    rom
}

/// GRUB 2.06 in Bochs 2.7 (no EDID, so 640x480) picks a 640x480x8 VBE mode
/// for the kernel's framebuffer request and then crashes before it starts the
/// kernel (EIP=3 on GRUB's own stack). Bochs boots keep VGA text mode; the
/// Makefile's `run` does the same.
pub const BOCHS_GFXPAYLOAD: &str = "text";

/// QEMU's default CPU (`qemu64`, AuthenticAMD) has SVM, without nested
/// paging; this one has neither SVM nor VMX (NO_VMX, named in SVM's terms).
pub const QEMU_NO_VIRT: &str = "qemu64,-svm";

/// Bochs's AMD models (the others are Intel's).
pub const BOCHS_AMD_MODELS: &[&str] = &["ryzen", "zambezi", "trinity_apu", "phenom_8650_toliman", "turion64_tyler"];

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `build/<name>`, which `make test` builds first (`make kernel`, `make payload`).
pub fn built(name: &str) -> PathBuf {
    let path = root().join("build").join(name);
    assert!(path.exists(), "{} is missing: run `make kernel payload` (or `make test`)", path.display());
    path
}

impl Boot {
    /// QEMU TCG (no VMX), `-machine pc`, one CPU of model `QEMU_NO_VIRT`:
    /// QEMU's default CPU without SVM, so the run is about what it is about
    /// (boot, SMP, the log, the screen) and ends NO_VMX. `cpu_model` chooses
    /// another (`max`, `EPYC`: SVM with nested paging).
    pub fn qemu(name: &str) -> Boot {
        Boot {
            name: name.into(),
            engine: Engine::Qemu,
            cpus: 1,
            machine: "pc",
            uefi: false,
            model: QEMU_NO_VIRT,
            cmdline: String::new(),
            timeout: Duration::from_secs(60),
            memory: None,
            ips: None,
            halt: false,
            modules: Vec::new(),
            stop_after: None,
            watch: Vec::new(),
            screendump: false,
            gfxpayload: None,
            coreboot: None,
            disk: None,
            reboot: false,
            kernel: "kernel.elf",
        }
    }

    /// QEMU q35 with coreboot (`Boot::qemu` otherwise): its GRUB payload
    /// booting the scenario's ISO, or `payload` as the payload ELF.
    pub fn coreboot(name: &str, payload: Coreboot) -> Boot {
        Boot { machine: "q35", coreboot: Some(payload), ..Boot::qemu(name) }
    }

    /// The kernel itself as coreboot's payload, its command line in CBFS.
    pub fn coreboot_payload(name: &str) -> Boot {
        Boot::coreboot_payload_of(name, "kernel.elf")
    }

    /// `build/<kernel>` (`kernel.elf`, or a flash payload of `make payload`)
    /// as coreboot's payload, its command line in CBFS.
    pub fn coreboot_payload_of(name: &str, kernel: &'static str) -> Boot {
        let elf = built(kernel);
        Boot::coreboot(name, Coreboot::Payload { elf, cmdline_file: true, files: Vec::new() })
    }

    /// Boot `build/<kernel>` instead of `build/kernel.elf` (a flash payload of
    /// `make payload`, through GRUB as a multiboot2 kernel).
    pub fn kernel(mut self, kernel: &'static str) -> Boot {
        self.kernel = kernel;
        self
    }

    /// Add a file to CBFS (`cbfstool add -n NAME -f FILE OPTIONS`), for a payload boot.
    pub fn cbfs_file(mut self, name: &str, file: impl Into<PathBuf>, options: &[&str]) -> Boot {
        let Some(Coreboot::Payload { files, .. }) = &mut self.coreboot else {
            panic!("cbfs_file needs a payload boot")
        };
        files.push((name.into(), file.into(), options.iter().map(|o| o.to_string()).collect()));
        self
    }

    /// No `hypervisor/cmdline` in CBFS (the kernel's defaults: `exit=halt`).
    pub fn no_cmdline_file(mut self) -> Boot {
        let Some(Coreboot::Payload { cmdline_file, .. }) = &mut self.coreboot else { panic!("needs a payload boot") };
        *cmdline_file = false;
        self
    }

    /// Bochs with the given CPU model, one CPU. GRUB stays in text mode
    /// (`BOCHS_GFXPAYLOAD`).
    pub fn bochs(name: &str, model: &'static str) -> Boot {
        let gfxpayload = Some(BOCHS_GFXPAYLOAD);
        Boot { engine: Engine::Bochs, model, timeout: Duration::from_secs(400), gfxpayload, ..Boot::qemu(name) }
    }

    /// QEMU's `-cpu` model (QEMU only; Bochs's model is `Boot::bochs`'s).
    pub fn cpu_model(mut self, model: &'static str) -> Boot {
        assert_eq!(self.engine, Engine::Qemu, "Bochs's CPU model is given to Boot::bochs");
        self.model = model;
        self
    }

    pub fn cpus(mut self, n: u32) -> Boot {
        self.cpus = n;
        self
    }
    pub fn machine(mut self, m: &'static str) -> Boot {
        self.machine = m;
        self
    }
    pub fn uefi(mut self) -> Boot {
        self.uefi = true;
        self.machine = "q35";
        self
    }
    /// End with `exit=halt` (QEMU only) and capture `info registers -a` afterwards.
    pub fn exit_halt(mut self) -> Boot {
        assert_eq!(self.engine, Engine::Qemu, "the monitor check needs QEMU");
        self.halt = true;
        self
    }

    /// Guest RAM in MiB.
    pub fn memory(mut self, mib: u32) -> Boot {
        self.memory = Some(mib);
        self
    }

    /// At least `mib` MiB of guest RAM (more where the scenario asked for more).
    pub fn memory_at_least(mut self, mib: u32) -> Boot {
        self.memory = Some(self.memory.map_or(mib, |m| m.max(mib)));
        self
    }
    /// Bochs's emulation speed (instructions per emulated second; its TSC rate).
    pub fn ips(mut self, ips: u64) -> Boot {
        assert_eq!(self.engine, Engine::Bochs, "ips is a Bochs setting");
        self.ips = Some(ips);
        self
    }
    pub fn timeout(mut self, t: Duration) -> Boot {
        self.timeout = t;
        self
    }

    /// End with `exit=halt` and, once the run is over, save the screen with the
    /// QEMU monitor's `screendump` (`Log::screen`).
    pub fn screendump(self) -> Boot {
        Boot { screendump: true, ..self.exit_halt() }
    }

    /// Set GRUB's `gfxpayload` before it boots the kernel: `text` keeps VGA text
    /// mode (BIOS), `800x600x16` asks for that mode.
    pub fn gfxpayload(mut self, mode: &'static str) -> Boot {
        self.gfxpayload = Some(mode);
        self
    }

    pub fn cmdline(mut self, c: &str) -> Boot {
        self.cmdline = c.into();
        self
    }

    /// Attach a raw disk image, which the run writes to: QEMU virtio-blk
    /// (`/dev/vda` in Linux), Bochs ata0-slave (`/dev/sda`, the CD staying
    /// ata0-master and the boot device).
    pub fn disk(mut self, image: impl Into<PathBuf>) -> Boot {
        self.disk = Some(image.into());
        self
    }

    /// QEMU: a reset boots the machine again (firmware, GRUB, the
    /// hypervisor) instead of ending QEMU; pair it with `stop_after`. Bochs
    /// always boots again.
    pub fn boots_again_on_reset(mut self) -> Boot {
        assert_eq!(self.engine, Engine::Qemu, "Bochs boots again by itself");
        self.reboot = true;
        self
    }

    /// Add a boot module: `module2 FILE STRING` in grub.cfg.
    pub fn module(mut self, file: impl Into<PathBuf>, string: &str) -> Boot {
        self.modules.push((file.into(), string.into()));
        self
    }

    /// End the boot once `n` lines of COM1 start with `prefix` (for a machine
    /// that resets and would boot again forever).
    pub fn stop_after(mut self, prefix: &str, n: usize) -> Boot {
        self.stop_after = Some((prefix.into(), n));
        self
    }

    /// Time when the first line starting with `prefix` reaches COM1 (wall
    /// clock from the boot's start, seen by polling every 100 ms; a line
    /// printed just before the engine exits counts at the exit).
    pub fn watch(mut self, prefix: &str) -> Boot {
        self.watch.push(prefix.into());
        self
    }

    /// Where this scenario keeps its files (ISO, logs, patched modules).
    pub fn dir(&self) -> PathBuf {
        root().join("target/boottests").join(&self.name)
    }

    /// Build this scenario's ISO, boot it, and return what COM1 printed.
    pub fn run(&self) -> Log {
        let root = root();
        let kernel = built(self.kernel);
        let dir = self.dir();
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join("serial.log"));
        let iso = dir.join("boot.iso");
        let serial = dir.join("serial.log");

        let exit = match (self.engine, self.halt) {
            (_, true) => "exit=halt",
            (Engine::Qemu, false) => "exit=qemu",
            (Engine::Bochs, false) => "exit=bochs",
        };
        let cmdline = format!("{} {exit}", self.cmdline);
        let rom = self.coreboot.as_ref().map(|c| self.build_rom(c, &cmdline, &dir));
        let iso = match self.coreboot {
            Some(Coreboot::Payload { .. }) => None,
            _ => {
                let mut mkiso = Command::new(root.join("scripts/mkiso"));
                if let Some(mode) = self.gfxpayload {
                    mkiso.args(["--gfxpayload", mode]);
                }
                for (file, string) in &self.modules {
                    mkiso.arg("--module").arg(file).arg(string);
                }
                let status =
                    mkiso.arg(&kernel).arg(&iso).args(cmdline.split_whitespace()).status().expect("scripts/mkiso");
                assert!(status.success(), "mkiso failed for {}", self.name);
                Some(iso)
            }
        };
        let (iso, rom) = (iso.as_deref(), rom.as_deref());

        // Bochs's headless display (rfb) listens on the first free port from
        // 5900; two Bochs started in the same instant can both bind 5900, and
        // the one whose listen() then fails cannot bind again and panics before
        // the BIOS runs. That start is the host's, not the boot's: try again.
        for _ in 0..3 {
            let log = self.boot_once(iso, rom, &serial, &dir);
            let engine_log = std::fs::read_to_string(dir.join("bochs.log")).unwrap_or_default();
            if self.engine == Engine::Bochs && log.lines.is_empty() && engine_log.contains("RFB could not bind") {
                eprintln!("[{}] Bochs lost the race for its display port; starting it again", self.name);
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            return log;
        }
        self.boot_once(iso, rom, &serial, &dir)
    }

    /// This scenario's coreboot ROM: a copy of the shared one, its payload
    /// and CBFS files as the scenario says.
    fn build_rom(&self, coreboot: &Coreboot, cmdline: &str, dir: &Path) -> PathBuf {
        let rom = dir.join("coreboot.rom");
        std::fs::copy(coreboot_rom(), &rom).unwrap();
        if let Coreboot::Payload { elf, cmdline_file, files } = coreboot {
            cbfstool(&rom, &["remove", "-n", "fallback/payload"]);
            let elf = elf.to_str().unwrap();
            cbfstool(&rom, &["add-payload", "-f", elf, "-n", "fallback/payload", "-c", "lzma"]);
            if *cmdline_file {
                let file = dir.join("cmdline");
                std::fs::write(&file, format!("{}\n", cmdline.trim())).unwrap();
                cbfstool(&rom, &["add", "-f", file.to_str().unwrap(), "-n", "hypervisor/cmdline", "-t", "raw"]);
            }
            for (name, file, options) in files {
                let mut args = vec!["add", "-f", file.to_str().unwrap(), "-n", name];
                args.extend(options.iter().map(String::as_str));
                cbfstool(&rom, &args);
            }
        }
        rom
    }

    /// One boot of the built ISO, or of the ROM.
    fn boot_once(&self, iso: Option<&Path>, rom: Option<&Path>, serial: &Path, dir: &Path) -> Log {
        let root = root();
        let _ = std::fs::remove_file(serial);
        let mut cmd = Command::new(root.join("scripts/boot"));
        if let Some(iso) = iso {
            cmd.arg("--iso").arg(iso);
        }
        if let Some(rom) = rom {
            cmd.arg("--bios").arg(rom);
        }
        cmd.arg("--serial").arg(serial).arg("--workdir").arg(dir);
        cmd.arg("--cpus").arg(self.cpus.to_string());
        if let Some(mib) = self.memory {
            cmd.arg("--mem").arg(mib.to_string());
        }
        if let Some(ips) = self.ips {
            cmd.arg("--ips").arg(ips.to_string());
        }
        if let Some(disk) = &self.disk {
            cmd.arg("--disk").arg(disk);
        }
        if self.reboot {
            cmd.arg("--reboot");
        }
        let monitor = dir.join("monitor.sock");
        if self.halt {
            cmd.arg("--monitor").arg(&monitor);
        }
        match self.engine {
            Engine::Qemu => {
                cmd.args(["--engine", "qemu", "--machine", self.machine, "--cpu", self.model]);
                if self.uefi {
                    cmd.arg("--uefi");
                }
            }
            Engine::Bochs => {
                cmd.args(["--engine", "bochs", "--model", self.model]);
            }
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("scripts/boot");
        let mut halted_report = None;
        let mut arrivals: Vec<(String, Duration)> = Vec::new();
        // The watched lines on COM1 so far that had not arrived before: now.
        let note_arrivals = |arrivals: &mut Vec<(String, Duration)>| {
            for prefix in &self.watch {
                if !arrivals.iter().any(|(q, _)| q == prefix) && count_lines(serial, prefix) > 0 {
                    arrivals.push((prefix.clone(), started.elapsed()));
                }
            }
        };
        let mut screen = None;
        // With console=screen COM1 never sees the SUMMARY: the run is over when
        // every CPU has halted with interrupts off (only `run::park` does that).
        let silent = self.cmdline.split_whitespace().any(|w| w == "console=screen");
        let mut next_poll = Instant::now();
        let (exit_status, timed_out) = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break (s.code(), false);
            }
            let ended = if silent && self.halt && Instant::now() >= next_poll {
                next_poll = Instant::now() + Duration::from_millis(500);
                all_halted(&monitor_command(&monitor, "info registers -a"), self.cpus)
            } else {
                summary_seen(serial)
            };
            if self.halt && ended {
                // Give the other CPUs time to take their NMI, then ask QEMU.
                std::thread::sleep(Duration::from_secs(2));
                halted_report = Some(monitor_command(&monitor, "info registers -a"));
                if self.screendump {
                    screen = Some(take_screendump(&monitor, &dir.join("screen.ppm")));
                }
                let alive = child.try_wait().unwrap().is_none();
                let _ = child.kill();
                let _ = child.wait();
                if !alive {
                    halted_report = Some(String::from("QEMU exited instead of halting"));
                }
                break (None, false);
            }
            note_arrivals(&mut arrivals);
            if let Some((prefix, n)) = &self.stop_after {
                if count_lines(serial, prefix) >= *n {
                    std::thread::sleep(Duration::from_secs(1));
                    let _ = child.kill();
                    let _ = child.wait();
                    break (None, false);
                }
            }
            if started.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                break (None, true);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        // A watched line the engine printed just before it exited is seen
        // here, at the exit (at most one 100 ms poll late).
        note_arrivals(&mut arrivals);
        let raw = std::fs::read(serial).unwrap_or_default();
        let text = String::from_utf8_lossy(&raw).replace('\r', "");
        Log {
            name: self.name.clone(),
            engine: self.engine,
            lines: text.lines().map(str::to_owned).collect(),
            exit_status,
            timed_out,
            seconds: started.elapsed().as_secs_f64(),
            halted_report,
            screen,
            dir: dir.to_path_buf(),
            arrivals,
            virt: match self.engine {
                Engine::Qemu => "svm",
                Engine::Bochs if BOCHS_AMD_MODELS.contains(&self.model) => "svm",
                Engine::Bochs => "vmx",
            },
        }
    }
}

/// Every CPU's state line in `info registers -a` says HLT=1 with RFLAGS.IF (bit 9) clear.
pub fn all_halted(report: &str, cpus: u32) -> bool {
    let states: Vec<&str> = report.lines().filter(|l| l.contains(" HLT=")).collect();
    let interrupts_off = |l: &str| {
        let rfl = l.split_whitespace().find_map(|w| w.strip_prefix("RFL="));
        rfl.and_then(|v| u64::from_str_radix(v, 16).ok()).is_some_and(|v| v & (1 << 9) == 0)
    };
    states.len() == cpus as usize && states.iter().all(|l| l.contains(" HLT=1") && interrupts_off(l))
}

/// `screendump` to `path` (PPM) and read it back; an error says what went wrong.
fn take_screendump(monitor: &Path, path: &Path) -> Result<Screen, String> {
    let answer = monitor_command(monitor, &format!("screendump {}", path.display()));
    // QEMU writes the file before the monitor's next prompt; allow a slow disk a moment more.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Screen::from_ppm(path) {
            Ok(screen) => return Ok(screen),
            Err(e) if Instant::now() > deadline => return Err(format!("{e}; the monitor said: {answer}")),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn count_lines(serial: &Path, prefix: &str) -> usize {
    std::fs::read(serial)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', "").lines().filter(|l| l.starts_with(prefix)).count())
        .unwrap_or(0)
}

fn summary_seen(serial: &Path) -> bool {
    std::fs::read(serial).is_ok_and(|b| String::from_utf8_lossy(&b).lines().any(|l| l.starts_with("SUMMARY ")))
}

/// Send one command to QEMU's human monitor on a Unix socket; return its answer.
pub fn monitor_command(socket: &Path, command: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return String::from("(no monitor)");
    };
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let _ = s.write_all(format!("{command}\n").as_bytes());
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) if out.windows(command.len()).any(|w| w == command.as_bytes()) && out.ends_with(b"(qemu) ") => break,
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&out).replace('\r', "")
}

/// The parsed SUMMARY line.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Summary {
    pub cpus: u32,
    pub online: u32,
    pub vmx_root: u32,
    pub guests_ok: u32,
    pub result: String,
    /// `vmx`, `svm` or `none`.
    pub virt: String,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SUMMARY cpus={} online={} vmx_root={} guests_ok={} result={} virt={}",
            self.cpus, self.online, self.vmx_root, self.guests_ok, self.result, self.virt
        )
    }
}

/// What COM1 printed in one boot.
pub struct Log {
    pub name: String,
    pub engine: Engine,
    pub lines: Vec<String>,
    pub exit_status: Option<i32>,
    pub timed_out: bool,
    pub seconds: f64,
    /// With `exit_halt`: QEMU's `info registers -a` after the run.
    pub halted_report: Option<String>,
    /// With `screendump`: the screen after the run, or why there is none.
    pub screen: Option<Result<Screen, String>>,
    /// Where this scenario's files are (ISO, COM1 log, screen pictures).
    pub dir: PathBuf,
    /// When each watched line prefix first arrived (`Boot::watch`).
    pub arrivals: Vec<(String, Duration)>,
    /// The hardware virtualization this engine and CPU model offer, if any:
    /// what SUMMARY's `virt=` says when a CPU had it on.
    pub virt: &'static str,
}

impl Log {
    /// When the first line starting with a watched `prefix` arrived.
    pub fn arrival(&self, prefix: &str) -> Option<Duration> {
        self.arrivals.iter().find(|(p, _)| p == prefix).map(|(_, t)| *t)
    }

    /// Fail the test, showing the end of the log.
    pub fn fail(&self, msg: &str) -> ! {
        let tail = self.lines.len().saturating_sub(60);
        let mut s = format!("[{}] {msg}\n", self.name);
        if self.timed_out {
            s += &format!("(the boot timed out after {:.0} s)\n", self.seconds);
        }
        if let Some(code) = self.exit_status {
            s += &format!("(the engine exited with status {code} after {:.0} s)\n", self.seconds);
        }
        s += &format!("--- last {} lines of COM1 ---\n", self.lines.len() - tail);
        for l in &self.lines[tail..] {
            s += l;
            s.push('\n');
        }
        if self.engine == Engine::Qemu {
            // QEMU's log (scripts/boot): the last CPU reset and the state it
            // found, a triple fault named; what explains a run that ended silently.
            let text = std::fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.iter().rposition(|l| l.starts_with("CPU Reset") || l.contains("Triple fault"));
            let from = from.map_or(lines.len(), |i| i.saturating_sub(5)).max(lines.len().saturating_sub(60));
            if from < lines.len() {
                s += &format!("--- last lines of {} ---\n", self.dir.join("qemu.log").display());
                for l in &lines[from..] {
                    s += l;
                    s.push('\n');
                }
            }
        }
        if self.lines.is_empty() {
            // Nothing reached COM1: what the engine itself said is the only clue.
            for file in ["bochs.log", "bochs.out"] {
                let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    s += &format!("--- last lines of {file} ---\n");
                    for l in &lines[lines.len().saturating_sub(15)..] {
                        s += l;
                        s.push('\n');
                    }
                }
            }
        }
        panic!("{s}");
    }

    pub fn has_line(&self, exact: &str) -> bool {
        self.lines.iter().any(|l| l == exact)
    }

    /// An exact line must be present.
    pub fn assert_line(&self, exact: &str) {
        if !self.has_line(exact) {
            self.fail(&format!("missing line: {exact:?}"));
        }
    }

    /// Lines starting with `prefix`.
    pub fn lines_starting(&self, prefix: &str) -> Vec<&str> {
        self.lines.iter().filter(|l| l.starts_with(prefix)).map(String::as_str).collect()
    }

    /// Exactly `n` lines start with `prefix`.
    pub fn assert_count(&self, prefix: &str, n: usize) {
        let got = self.lines_starting(prefix).len();
        if got != n {
            self.fail(&format!("expected {n} lines starting with {prefix:?}, found {got}"));
        }
    }

    /// Where `exact` first appears.
    pub fn position(&self, exact: &str) -> Option<usize> {
        self.lines.iter().position(|l| l == exact)
    }

    /// The last line of the log must be the one SUMMARY line; returns it parsed.
    pub fn summary(&self) -> Summary {
        let found: Vec<&String> = self.lines.iter().filter(|l| l.starts_with("SUMMARY ")).collect();
        if found.len() != 1 {
            self.fail(&format!("expected exactly one SUMMARY line, found {}", found.len()));
        }
        let line = found[0];
        let field = |key: &str| -> String {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .map(str::to_owned)
                .unwrap_or_else(|| self.fail(&format!("SUMMARY has no {key}=: {line}")))
        };
        let num = |key: &str| -> u32 {
            field(key).parse().unwrap_or_else(|_| self.fail(&format!("SUMMARY {key} is not a number: {line}")))
        };
        let s = Summary {
            cpus: num("cpus"),
            online: num("online"),
            vmx_root: num("vmx_root"),
            guests_ok: num("guests_ok"),
            result: field("result"),
            virt: field("virt"),
        };
        if s.to_string() != *line {
            self.fail(&format!("SUMMARY line is not in the exact format: {line}"));
        }
        // A run that handed the machine to an OS ends as the OS ends it (QEMU exits 0 on
        // an ACPI poweroff), not through `exit=`.
        let handed_off = self.lines.iter().any(|l| l.contains("] INFO  handoff: "));
        if let (Engine::Qemu, Some(code), false) = (self.engine, self.exit_status, handed_off) {
            let expected = match s.result.as_str() {
                "PASS" => 33,
                "NO_VMX" => 35,
                _ => 37,
            };
            if code != expected {
                self.fail(&format!("QEMU exit status {code} does not match result={} (expected {expected})", s.result));
            }
        }
        s
    }

    /// SUMMARY must read exactly so; `virt=` is the engine's (`Log::virt`)
    /// where a CPU had it on, `none` otherwise.
    pub fn assert_summary(&self, cpus: u32, online: u32, vmx_root: u32, guests_ok: u32, result: &str) {
        let got = self.summary();
        let virt = if vmx_root > 0 { self.virt } else { "none" };
        let want = Summary { cpus, online, vmx_root, guests_ok, result: result.into(), virt: virt.into() };
        if got != want {
            self.fail(&format!("SUMMARY mismatch\n  want: {want}\n  got:  {got}"));
        }
    }

    /// No exception report, no panic, no early end.
    pub fn assert_no_exception(&self) {
        for bad in ["EXCEPTION ", "PANIC", "run ends early"] {
            if let Some(l) = self.lines.iter().find(|l| l.contains(bad)) {
                self.fail(&format!("unexpected failure line: {l}"));
            }
        }
    }

    /// One "online" line per CPU, carrying its APIC ID (QEMU and Bochs number
    /// APIC IDs 0..n-1 and start them in that order).
    pub fn assert_online_lines(&self, n: u32) {
        self.assert_line("[cpu0] INFO  online: cpu0 APIC ID 0 (initial APIC ID 0) boot processor");
        for i in 1..n {
            self.assert_line(&format!("[cpu{i}] INFO  online: cpu{i} APIC ID {i} (initial APIC ID {i})"));
        }
        let online = self.lines.iter().filter(|l| l.contains("] INFO  online: cpu")).count();
        if online != n as usize {
            self.fail(&format!("expected {n} online lines, found {online}"));
        }
    }

    /// The figure after `prefix` on the one line that starts with it (e.g. a `bench:` line).
    pub fn number_after(&self, prefix: &str) -> u64 {
        let lines = self.lines_starting(prefix);
        let n = lines.first().and_then(|l| l[prefix.len()..].split_whitespace().next()?.parse().ok());
        match (lines.len(), n) {
            (1, Some(n)) => n,
            _ => self.fail(&format!("expected one line `{prefix}<number>`")),
        }
    }

    /// `smp: N of M processors online (0 failed); AP bring-up took T us` and the
    /// matching `bench: ap-bringup cpus=N us=T`. T may be 0: Bochs with several
    /// CPUs advances its TSC once per scheduling quantum, and its APs start
    /// within a microsecond of emulated time.
    pub fn assert_bring_up(&self, online: u32, of: u32) {
        let prefix = format!("[cpu0] INFO  smp: {online} of {of} processors online (0 failed); AP bring-up took ");
        let lines = self.lines_starting(&prefix);
        let micros =
            lines.first().and_then(|l| l[prefix.len()..].strip_suffix(" us")).and_then(|t| t.parse::<u64>().ok());
        let Some(us) = micros.filter(|_| lines.len() == 1) else {
            self.fail(&format!("no bring-up line starting {prefix:?}"))
        };
        self.assert_line(&format!("[cpu0] INFO  bench: ap-bringup cpus={online} us={us}"));
    }
}
