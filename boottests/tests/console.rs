//! Issue 12: the log and the SUMMARY on the screen. Each boot ends with
//! `exit=halt`, QEMU's monitor saves the screen (`screendump`), and the test
//! looks at it as a person would: OCR (tesseract) must read the SUMMARY line,
//! the rows under it must have the result's colour, and the log must be there.

use boottests::{normalize, Boot, Log};

const NO_VMX_1: &str = "SUMMARY cpus=1 online=1 vmx_root=0 guests_ok=0 result=NO_VMX virt=none";

/// The log lines a person should see above the SUMMARY (OCR, normalized).
/// Phrases without "cpu0": OCR reads this font's dotted zero after "cpu" as two characters.
fn assert_log_on_screen(log: &Log, words: &[&str]) {
    let text = normalize(&log.screen_text());
    for w in words {
        if !text.contains(&normalize(w)) {
            log.fail(&format!("the screen does not show {w:?}; OCR read:\n{text}"));
        }
    }
}

/// The serial SUMMARY (the contract) is also the one on the screen.
fn assert_screen_matches_serial(log: &Log) {
    let summary = log.summary().to_string();
    log.assert_screen_summary(&summary);
}

#[test]
fn bios_vbe_framebuffer() {
    let log = Boot::qemu("screen-bios").screendump().run();
    log.assert_no_exception();
    log.assert_summary(1, 1, 0, 0, "NO_VMX");
    log.assert_count("[cpu0] INFO  console: framebuffer 1280x800 32 bpp at 0x", 1);
    assert_screen_matches_serial(&log);
    assert_log_on_screen(&log, &["boot: hypervisor", "boot processor", "not supported"]);
}

#[test]
fn uefi_gop_framebuffer() {
    let log = Boot::qemu("screen-uefi").uefi().cpus(2).screendump().run();
    log.assert_no_exception();
    log.assert_summary(2, 2, 0, 0, "NO_VMX");
    log.assert_count("[cpu0] INFO  console: framebuffer ", 1);
    assert_screen_matches_serial(&log);
    assert_log_on_screen(&log, &["boot: hypervisor", "APIC ID 1 (initial APIC ID 1)"]);
}

/// GRUB left VGA text mode: the SUMMARY in yellow; 8 CPUs log more lines than
/// the 25 rows hold, so the screen has scrolled.
#[test]
fn ega_text_mode_scrolls() {
    let log = Boot::qemu("screen-text").machine("q35").cpus(8).gfxpayload("text").screendump().run();
    log.assert_summary(8, 8, 0, 0, "NO_VMX");
    log.assert_line("[cpu0] INFO  console: EGA text 80x25 at 0xb8000");
    assert_screen_matches_serial(&log);
    assert_scrolled(&log);
}

/// The first line has scrolled off the screen; the lines just before the SUMMARY are there.
fn assert_scrolled(log: &Log) {
    let text = normalize(&log.screen_text());
    if text.contains(&normalize("boot: hypervisor")) {
        log.fail(&format!("the first line should have scrolled off the screen; OCR read:\n{text}"));
    }
    if !text.contains(&normalize("processors online")) || !text.contains(&normalize("not supported")) {
        log.fail(&format!("the last lines before the SUMMARY should be on the screen; OCR read:\n{text}"));
    }
}

#[test]
fn fail_is_red_at_16_bpp() {
    let log = Boot::qemu("screen-16bpp-fail").gfxpayload("800x600x16").cmdline("inject=ud2").screendump().run();
    log.assert_summary(1, 1, 0, 0, "FAIL");
    log.assert_count("[cpu0] INFO  console: framebuffer 800x600 16 bpp at 0x", 1);
    assert_screen_matches_serial(&log);
    assert_log_on_screen(&log, &["EXCEPTION #UD", "run ends early: exception"]);
}

#[test]
fn fifteen_bpp() {
    let log = Boot::qemu("screen-15bpp").gfxpayload("640x480x15").screendump().run();
    log.assert_summary(1, 1, 0, 0, "NO_VMX");
    log.assert_count("[cpu0] INFO  console: framebuffer 640x480 15 bpp at 0x", 1);
    assert_screen_matches_serial(&log);
}

/// 640x480 at 24 bpp holds 30 rows of 91 characters; 12 CPUs log more, so the
/// grid jumps (scrolls several rows at once) and the SUMMARY still ends on screen.
#[test]
fn scrolling_at_24_bpp() {
    let log = Boot::qemu("screen-24bpp-scroll").machine("q35").cpus(12).gfxpayload("640x480x24").screendump().run();
    log.assert_no_exception();
    log.assert_summary(12, 12, 0, 0, "NO_VMX");
    log.assert_count("[cpu0] INFO  console: framebuffer 640x480 24 bpp at 0x", 1);
    assert_screen_matches_serial(&log);
    assert_scrolled(&log);
}

/// console=serial: the screen shows nothing of the run (GRUB's blank screen).
#[test]
fn console_serial_leaves_the_screen_alone() {
    let log = Boot::qemu("screen-console-serial").cmdline("console=serial").screendump().run();
    log.assert_summary(1, 1, 0, 0, "NO_VMX");
    log.assert_line("[cpu0] INFO  console: screen left alone (console=serial)");
    let text = normalize(&log.screen_text());
    for w in ["SUMMARY", "INFO", "cpu"] {
        if text.contains(&normalize(w)) {
            log.fail(&format!("console=serial, yet the screen shows {w:?}:\n{text}"));
        }
    }
    let screen = log.screen();
    for colour in [boottests::Colour::Yellow, boottests::Colour::Green, boottests::Colour::Red] {
        if !screen.rows_with(colour, 20).is_empty() {
            log.fail(&format!("console=serial, yet the screen has {colour:?} rows"));
        }
    }
}

/// console=screen: COM1 stops once the command line is read; the screen has it all.
#[test]
fn console_screen_only() {
    let log = Boot::qemu("screen-console-screen").cmdline("console=screen").screendump().run();
    if log.lines.iter().any(|l| l.starts_with("SUMMARY") || l.contains("online: cpu0")) {
        log.fail("console=screen, yet COM1 carried the log past the command line");
    }
    log.assert_count("[cpu0] INFO  boot: hypervisor ", 1);
    log.assert_screen_summary(NO_VMX_1);
    assert_log_on_screen(&log, &["boot processor", "console: framebuffer"]);
}
