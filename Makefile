# make iso    build/hypervisor.iso (BIOS + UEFI) and build/kernel.elf
# make payload  the flash payloads for coreboot: build/payload-intel.elf (VMX only) and
#             build/payload-amd.elf (SVM only), without the fuzzers (docs/coreboot.md#size)
# make run    build and boot in the best engine (ENGINE=qemu|qemu-kvm|bochs, CPUS=N, MODEL=..., QEMU_CPU=..., CMDLINE=...);
#             GUEST=linux boots Debian's kernel and a busybox initramfs after the run (LINUX_CMDLINE=...),
#             GUEST=debian a whole Debian 12 system from a disk image (build/debian, docs/debian-guest.md)
# make test   host unit tests + boot tests (QEMU and Bochs)
# make test-slow  the slow Linux guests CI leaves out (4 CPUs in Bochs, 64 under SVM, Bochs zambezi)
# make bench  figures in Bochs: the CPUID exit round trip, AP bring-up, entry to VMX root;
#             in QEMU: the Debian system's boot
# make debian-bochs  the Debian system as the guest of 2 CPUs in Bochs (slow: docs/debian-guest.md)
# make fuzz   guest=fuzz in Bochs with a random seed (printed first; SEED=S to choose):
#             FUZZ_RUNS per CPU (default 1000), FUZZ_CPUS (default 2), MODEL (ryzen: SVM);
#             ENGINE=qemu: QEMU's TCG, QEMU_CPU (max, EPYC: SVM); ENTRYFUZZ=N: the VM-entry
#             (VMRUN) checker's N mutations on one CPU instead (docs/fuzz.md)
# make lint   rustfmt and clippy, warnings are errors (CI runs it before `make test`)
# Every target installs what it needs first (scripts/install-deps).

CARGO      ?= cargo
BUILD      := build
KERNEL     := $(BUILD)/kernel.elf
ISO        := $(BUILD)/hypervisor.iso
TARGET_ELF := target/x86_64-unknown-none/release/kernel
# The ISO's command line: the bare-metal defaults (exit=halt).
CMDLINE    ?= loglevel=info
CPUS       ?= 4
MODEL      ?= corei7_skylake_x
# QEMU's CPU model under TCG: `max` emulates SVM with nested paging.
QEMU_CPU   ?= max
ENGINE     ?= $(shell scripts/best-engine)
FEATURES   ?=
# GUEST=linux: the run hands the machine to Linux (build/linux, scripts/linux-guest);
# GUEST=debian: to Debian 12 on a copy of build/debian/disk.img (scripts/debian-rootfs).
GUEST      ?=
LINUX      := $(BUILD)/linux
DEBIAN     := $(BUILD)/debian
LINUX_CMDLINE ?= console=ttyS0,115200 $(if $(filter debian,$(GUEST)),root=LABEL=hv-debian ro)
MEM        ?= $(if $(filter linux,$(GUEST)),512,$(if $(filter debian,$(GUEST)),1024,256))
GUEST_DIR  = $(if $(filter debian,$(GUEST)),$(DEBIAN),$(LINUX))
MODULES    = $(if $(filter linux debian,$(GUEST)),--module $(GUEST_DIR)/vmlinuz "linux $(LINUX_CMDLINE)" --module $(GUEST_DIR)/initrd.img initrd)
DISK       = $(if $(filter debian,$(GUEST)),--disk $(BUILD)/run/disk.img)

.PHONY: all deps kernel payload iso run test test-slow unit boottest bench lint clean linux-guest debian-guest debian-bochs fuzz

all: iso

deps:
	@scripts/install-deps

kernel: deps
	$(CARGO) build -p kernel --release --target x86_64-unknown-none $(if $(FEATURES),--features $(FEATURES))
	@mkdir -p $(BUILD)
	cp $(TARGET_ELF) $(KERNEL)

# One backend each, no fuzzers: what fits a board's flash. Their own target
# directory, so that neither they nor the full kernel rebuild the other's.
PAYLOAD_TARGET := target/payload
payload: deps
	@mkdir -p $(BUILD)
	$(CARGO) build -p kernel --release --target x86_64-unknown-none --target-dir $(PAYLOAD_TARGET) --no-default-features --features vmx
	cp $(PAYLOAD_TARGET)/x86_64-unknown-none/release/kernel $(BUILD)/payload-intel.elf
	$(CARGO) build -p kernel --release --target x86_64-unknown-none --target-dir $(PAYLOAD_TARGET) --no-default-features --features svm
	cp $(PAYLOAD_TARGET)/x86_64-unknown-none/release/kernel $(BUILD)/payload-amd.elf

iso: kernel
	scripts/mkiso $(KERNEL) $(ISO) $(CMDLINE)
	@echo "built $(ISO) (command line: $(CMDLINE))"

# Debian's kernel and the test initramfs (fetched once, cached under build/linux).
linux-guest: deps
	scripts/linux-guest $(LINUX)

# The Debian 12 system's disk image, kernel and initrd (cached under build/debian;
# rebuilt when its recipe changes).
debian-guest: deps
	scripts/debian-rootfs $(DEBIAN)

# `run` boots a copy of the ISO whose command line ends the run through the
# engine's exit port; build/hypervisor.iso itself stays bare-metal safe. In
# Bochs GRUB stays in text mode (its VBE mode choice there crashes GRUB 2.06;
# see boottests BOCHS_GFXPAYLOAD).
run: kernel $(if $(filter linux,$(GUEST)),linux-guest) $(if $(filter debian,$(GUEST)),debian-guest)
	@gfx=; case "$(ENGINE)" in \
	  qemu-kvm) eng=qemu; extra="--kvm";; \
	  qemu) eng=qemu; extra="--cpu $(QEMU_CPU)";; \
	  bochs) eng=bochs; extra="--model $(MODEL)"; gfx="--gfxpayload text";; \
	  *) echo "ENGINE is qemu, qemu-kvm or bochs"; exit 2;; \
	esac; \
	scripts/mkiso $$gfx $(MODULES) $(KERNEL) $(BUILD)/run.iso $(CMDLINE) exit=$$eng && \
	mkdir -p $(BUILD)/run && $(if $(DISK),cp $(DEBIAN)/disk.img $(BUILD)/run/disk.img && rm -f $(BUILD)/run/disk.img.lock &&) \
	echo "booting $(BUILD)/run.iso in $(ENGINE) with $(CPUS) CPUs; COM1 follows" && \
	scripts/boot --engine $$eng $$extra --iso $(BUILD)/run.iso --cpus $(CPUS) --mem $(MEM) --workdir $(BUILD)/run $(DISK) || true

unit: deps
	$(CARGO) test -p hvlogic
	# The ENABLE_VMX_INSIDE_SMX build (book step 7) must keep compiling.
	$(CARGO) check -p kernel --target x86_64-unknown-none --features enable-vmx-inside-smx

boottest: kernel payload linux-guest debian-guest
	$(CARGO) test -p boottests -- --test-threads=2

test: deps unit boottest

# Linux guests too slow for CI's 30 minutes (docs/testing.md): `#[ignore]`d in linux.rs.
test-slow: kernel linux-guest
	$(CARGO) test -p boottests --test linux -- --ignored --test-threads=2

# Formatting and clippy, for the kernel (bare-metal target, both feature sets)
# and the host crates. Workspace lints (Cargo.toml) deny unsafe operations
# outside `unsafe` blocks and `unsafe` blocks without a SAFETY comment.
lint: deps
	$(CARGO) fmt --all -- --check
	scripts/module-cycles kernel/src hvlogic/src ap-trampoline/src boottests/src
	$(CARGO) clippy -p kernel -p ap-trampoline --release --target x86_64-unknown-none -- -D warnings
	$(CARGO) clippy -p kernel --release --target x86_64-unknown-none --features enable-vmx-inside-smx -- -D warnings
	$(CARGO) clippy -p kernel --release --target x86_64-unknown-none --target-dir $(PAYLOAD_TARGET) --no-default-features --features vmx -- -D warnings
	$(CARGO) clippy -p kernel --release --target x86_64-unknown-none --target-dir $(PAYLOAD_TARGET) --no-default-features --features svm -- -D warnings
	$(CARGO) clippy -p hvlogic -p boottests --all-targets -- -D warnings

FUZZ_RUNS  ?= 1000
FUZZ_CPUS  ?= 2
SEED       ?=
ENTRYFUZZ  ?=
# Bochs unless ENGINE is given (make run's default, the best engine, is not
# the fuzzer's): ENGINE=qemu runs QEMU's TCG with QEMU_CPU.
FUZZ_ENGINE = $(if $(filter command line environment,$(origin ENGINE)),$(ENGINE),bochs)
FUZZ_WHAT   = $(if $(ENTRYFUZZ),entryfuzz=$(ENTRYFUZZ),guest=fuzz fuzz-runs=$(FUZZ_RUNS))
FUZZ_ON     = $(if $(filter qemu,$(FUZZ_ENGINE)),QEMU -cpu $(QEMU_CPU),$(MODEL) in Bochs)
FUZZ_BOOT   = $(if $(filter qemu,$(FUZZ_ENGINE)),--cpu $(QEMU_CPU),--model $(MODEL))
FUZZ_NCPUS  = $(if $(ENTRYFUZZ),1,$(FUZZ_CPUS))

# The seed first, then COM1's fuzz lines, failures and the SUMMARY; the
# whole log stays in build/fuzz/serial.log. Fails unless the SUMMARY is PASS.
fuzz: kernel
	@seed="$(SEED)"; [ -n "$$seed" ] || seed=$$(od -An -N4 -tu4 /dev/urandom | tr -d ' '); \
	echo "make fuzz: seed=$$seed, $(FUZZ_WHAT) on $(FUZZ_NCPUS) CPUs of $(FUZZ_ON)"; \
	mkdir -p $(BUILD)/fuzz; \
	scripts/mkiso --gfxpayload text $(KERNEL) $(BUILD)/fuzz/fuzz.iso $(FUZZ_WHAT) seed=$$seed exit=$(FUZZ_ENGINE) >/dev/null && \
	start=$$(date +%s); \
	scripts/boot --engine $(FUZZ_ENGINE) $(FUZZ_BOOT) --cpus $(FUZZ_NCPUS) --iso $(BUILD)/fuzz/fuzz.iso --serial $(BUILD)/fuzz/serial.log --workdir $(BUILD)/fuzz || true; \
	grep -aE '(INFO  fuzz: cpu=[0-9]+ (runs|modes=)|INFO  entry-fuzz: (mutations|known|rules)|ERROR|EXCEPTION|^SUMMARY)' $(BUILD)/fuzz/serial.log; \
	echo "make fuzz: seed=$$seed, $$(( $$(date +%s) - start )) s"; \
	grep -q '^SUMMARY .*result=PASS' $(BUILD)/fuzz/serial.log

# One figure at a time: a native/guest pair timed beside another emulator
# measures the host's load (a 2-CPU pair read native=170 s guest=96 s so).
bench: kernel payload linux-guest debian-guest
	$(CARGO) test -p boottests --test bench -- --ignored --nocapture --test-threads=1

# The Debian system as the guest of 2 CPUs of Bochs corei7_skylake_x (VMX), root
# on ATA: to its poweroff, and with the CPU offline/online cycle; about 10
# minutes each (docs/debian-guest.md).
debian-bochs: kernel debian-guest
	$(CARGO) test -p boottests --test debian -- --ignored --nocapture --test-threads=1 bochs_debian

clean:
	rm -rf $(BUILD)
	$(CARGO) clean
