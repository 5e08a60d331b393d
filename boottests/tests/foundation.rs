//! Issue 1/4: the boot foundation. BIOS and UEFI boots, the serial log, the
//! command line, the exception dump and the SUMMARY contract.

use boottests::Boot;

const BSP_ONLINE: &str = "[cpu0] INFO  online: cpu0 APIC ID 0 (initial APIC ID 0) boot processor";
const NO_VMX: &str = "[cpu0] ERROR SVM not supported (CPUID Fn8000_0001_ECX[2]=0)";

#[test]
fn qemu_bios_one_cpu() {
    let log = Boot::qemu("qemu-bios-1").cmdline("loglevel=debug bogus=1 maxcpus=zero").run();
    log.assert_no_exception();
    let boot = log.lines_starting("[cpu0] INFO  boot: hypervisor ");
    if boot.len() != 1 || !boot[0].ends_with(", command line `loglevel=debug bogus=1 maxcpus=zero exit=qemu`") {
        log.fail("boot line with the command line missing");
    }
    log.assert_line("[cpu0] WARN  command line: `bogus=1` ignored: unknown option");
    log.assert_line("[cpu0] WARN  command line: `maxcpus=zero` ignored: maxcpus takes a number of at least 1");
    log.assert_line("[cpu0] INFO  apic: xAPIC mode, registers at 0xfee00000");
    log.assert_line(BSP_ONLINE);
    log.assert_line(NO_VMX);
    log.assert_summary(1, 1, 0, 0, "NO_VMX");
}

#[test]
fn qemu_uefi_ovmf() {
    let log = Boot::qemu("qemu-uefi").uefi().run();
    log.assert_no_exception();
    log.assert_line(BSP_ONLINE);
    log.assert_count("[cpu0] INFO  memory: kernel 0x200000-", 1);
    log.assert_summary(1, 1, 0, 0, "NO_VMX");
}

#[test]
fn bochs_skylake_one_cpu() {
    let log = Boot::bochs("bochs-skylake-1", "corei7_skylake_x").run();
    log.assert_no_exception();
    log.assert_line("[cpu0] INFO  apic: x2APIC mode");
    log.assert_line(BSP_ONLINE);
    log.assert_line("[cpu0] INFO  vmxon ok (revision identifier 0x2b)");
    log.assert_summary(1, 1, 1, 1, "PASS");
}

#[test]
fn injected_ud2_is_dumped_and_fails_the_run() {
    let log = Boot::qemu("qemu-ud2").cmdline("inject=ud2").run();
    log.assert_line("[cpu0] INFO  inject: executing UD2 on purpose");
    log.assert_line("[cpu0] ERROR EXCEPTION #UD (invalid opcode) on cpu0: vector=6 error_code=0x0");
    for prefix in ["[cpu0] ERROR   RIP=0x", "[cpu0] ERROR   CR2=0x", "[cpu0] ERROR   RAX=0x", "[cpu0] ERROR   R13=0x"] {
        log.assert_count(prefix, 1);
    }
    // The RIP is inside the kernel image (linked at 2 MiB).
    let rip = log.lines_starting("[cpu0] ERROR   RIP=0x")[0];
    let addr = u64::from_str_radix(&rip["[cpu0] ERROR   RIP=0x".len()..][..16], 16).unwrap();
    if !(0x20_0000..0x40_0000).contains(&addr) {
        log.fail(&format!("RIP {addr:#x} is not in the kernel"));
    }
    log.assert_line("[cpu0] ERROR run ends early: exception");
    log.assert_summary(1, 1, 0, 0, "FAIL");
}
