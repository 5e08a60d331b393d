//! The local APIC: x2APIC mode (MSRs) where CPUID offers it, xAPIC (MMIO)
//! otherwise. Used to send INIT, SIPI and NMI IPIs; interrupts stay off.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use x86::msr::{rdmsr, wrmsr, IA32_APIC_BASE};

/// IA32_APIC_BASE bits (SDM Vol. 3A §11.4.4 "Local APIC Status and Location",
/// §11.12.1 "Detecting and Enabling x2APIC Mode").
const APIC_BASE_EXTD: u64 = 1 << 10;
const APIC_BASE_EN: u64 = 1 << 11;
const APIC_BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// x2APIC MSRs (SDM Vol. 3A §11.12.1.2 "x2APIC Register Address Space", Table
/// 11-6 "Local APIC Register Address Map Supported by x2APIC").
const X2APIC_ID: u32 = 0x802;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_SVR: u32 = 0x80f;
const X2APIC_ICR: u32 = 0x830;
/// xAPIC register offsets (SDM Vol. 3A Table 11-1 "Local APIC Register Address
/// Map").
const XAPIC_ID: u64 = 0x20;
const XAPIC_EOI: u64 = 0xb0;
const XAPIC_SVR: u64 = 0xf0;
const XAPIC_ICR_LOW: u64 = 0x300;
const XAPIC_ICR_HIGH: u64 = 0x310;
/// Timer registers (SDM Vol. 3A §11.5.4 "APIC Timer", Figure 11-8): LVT
/// timer, initial count, current count, divide configuration; and the first
/// IRR register (SDM Vol. 3A §11.8.4 "Interrupt Acceptance for Fixed
/// Interrupts", Table 11-1 "Local APIC Register Address Map"). x2APIC MSR =
/// 0x800 + offset / 16.
const LVT_TIMER: u64 = 0x320;
const TIMER_INITIAL_COUNT: u64 = 0x380;
const TIMER_CURRENT_COUNT: u64 = 0x390;
const TIMER_DIVIDE: u64 = 0x3e0;
const IRR: u64 = 0x200;
const ISR: u64 = 0x100;
/// Divide configuration 1011b: divide by 1.
const DIVIDE_BY_1: u32 = 0b1011;
/// LVT timer bit 16: masked.
const LVT_MASKED: u32 = 1 << 16;

/// ICR fields (SDM Vol. 3A §11.6.1 "Interrupt Command Register (ICR)", Figure
/// 11-12 "Interrupt Command Register (ICR)").
const ICR_DELIVERY_FIXED: u32 = 0b000 << 8;
const ICR_DELIVERY_NMI: u32 = 0b100 << 8;
const ICR_DELIVERY_INIT: u32 = 0b101 << 8;
const ICR_DELIVERY_STARTUP: u32 = 0b110 << 8;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
/// The wake-up IPI an idle AP halts for (smp.rs); priority class 15, so the
/// task priority an AP keeps while it works (CR8 = 15) holds it pending.
pub const WAKE_VECTOR: u8 = 0xf0;
/// The local-APIC timer's vector when it bounds a guest's time (the guest
/// fuzzer on CPUs without a VMX-preemption timer); class 15 like the wake-up
/// IPI, and acknowledged by the same handler when it reaches the host.
pub const TIMER_VECTOR: u8 = 0xf1;
/// The local APIC's spurious-interrupt vector (SVR[7:0]).
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// SVR: APIC software enable, the spurious vector (SDM Vol. 3A §11.9 "Spurious
/// Interrupt").
const SVR_ENABLE: u32 = 1 << 8 | SPURIOUS_VECTOR as u32;

const MODE_NONE: u8 = 0;
const MODE_XAPIC: u8 = 1;
const MODE_X2APIC: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(MODE_NONE);
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    XApic { base: u64 },
    X2Apic,
}

/// CPUID.01H:ECX[21].
pub fn x2apic_supported() -> bool {
    raw_cpuid::cpuid!(1).ecx & (1 << 21) != 0
}

/// Mask both legacy 8259 PICs (OCW1 = 0xff on ports 0x21 and 0xa1). Firmware
/// may leave the PIT's IRQ 0 unmasked; interrupts stay off in this kernel, but
/// a guest runs with external-interrupt exiting, so a pending IRQ would end it.
fn mask_legacy_pics() {
    // SAFETY: the 8259 interrupt-mask registers; masking has no other effect.
    unsafe {
        x86_64::instructions::port::Port::<u8>::new(0x21).write(0xff);
        x86_64::instructions::port::Port::<u8>::new(0xa1).write(0xff);
    }
}

/// Set the boot CPU's mode: x2APIC where offered, else xAPIC; every AP then
/// follows. With `keep_firmware_mode` (an OS follows the run), the mode
/// firmware left stays: the OS finds the APIC as it would without the
/// hypervisor, and no APIC has to go back through the disabled state, which
/// some implementations (Bochs, P6-family CPUs) do not leave until reset
/// (SDM Vol. 3A §11.4.3 "Enabling or Disabling the Local APIC").
/// Returns the mode, and IA32_APIC_BASE as firmware left it.
pub fn init_bsp(keep_firmware_mode: bool) -> (Mode, u64) {
    mask_legacy_pics();
    // SAFETY: IA32_APIC_BASE exists on every CPU with a local APIC (CPUID.01H:EDX[9]).
    let firmware = unsafe { rdmsr(IA32_APIC_BASE) };
    let x2apic = if keep_firmware_mode { firmware & APIC_BASE_EXTD != 0 } else { x2apic_supported() };
    let mode = if x2apic { MODE_X2APIC } else { MODE_XAPIC };
    XAPIC_BASE.store(firmware & APIC_BASE_ADDR_MASK, Ordering::Relaxed);
    MODE.store(mode, Ordering::Release);
    init_this_cpu();
    (mode_now().expect("mode just set"), firmware)
}

/// Put this CPU's local APIC in the run's mode and software-enable it;
/// returns IA32_APIC_BASE as it was (for `restore_firmware_mode`).
pub fn init_this_cpu() -> u64 {
    // SAFETY: IA32_APIC_BASE exists on every CPU with a local APIC.
    let before = unsafe { rdmsr(IA32_APIC_BASE) };
    // SAFETY: enabling the APIC (EN) and then x2APIC (EXTD) is the architectural
    // order (SDM Vol. 3A §11.12.5 "x2APIC State Transitions"); the SVR write
    // only enables the APIC.
    unsafe {
        let v = rdmsr(IA32_APIC_BASE);
        if v & APIC_BASE_EN == 0 {
            wrmsr(IA32_APIC_BASE, v | APIC_BASE_EN);
        }
        if MODE.load(Ordering::Acquire) == MODE_X2APIC {
            let v = rdmsr(IA32_APIC_BASE);
            if v & APIC_BASE_EXTD == 0 {
                wrmsr(IA32_APIC_BASE, v | APIC_BASE_EN | APIC_BASE_EXTD);
            }
        }
    }
    write_svr(SVR_ENABLE);
    before
}

/// Give this CPU's local APIC back in the mode firmware left it, before an OS
/// takes the CPU: an OS finds the APIC as it would without the hypervisor.
/// From x2APIC mode the way back to xAPIC mode goes through the disabled
/// state (SDM Vol. 3A §11.12.5 "x2APIC State Transitions"), which also
/// resets the APIC's registers, as firmware's INIT would have.
pub fn restore_firmware_mode(firmware: u64) {
    // SAFETY: IA32_APIC_BASE exists; the writes follow the allowed transitions:
    // x2APIC -> disabled -> xAPIC (or the unchanged value).
    unsafe {
        let now = rdmsr(IA32_APIC_BASE);
        if now == firmware {
            return;
        }
        if now & APIC_BASE_EXTD != 0 && firmware & APIC_BASE_EXTD == 0 {
            wrmsr(IA32_APIC_BASE, now & !(APIC_BASE_EN | APIC_BASE_EXTD));
        }
        wrmsr(IA32_APIC_BASE, firmware);
    }
}

pub fn mode_now() -> Option<Mode> {
    match MODE.load(Ordering::Acquire) {
        MODE_X2APIC => Some(Mode::X2Apic),
        MODE_XAPIC => Some(Mode::XApic { base: XAPIC_BASE.load(Ordering::Relaxed) }),
        _ => None,
    }
}

/// This CPU's local APIC ID (32-bit x2APIC ID, or the 8-bit xAPIC ID).
pub fn id() -> u32 {
    match mode_now() {
        // SAFETY: the x2APIC ID MSR is readable in x2APIC mode.
        Some(Mode::X2Apic) => unsafe { rdmsr(X2APIC_ID) as u32 },
        Some(Mode::XApic { base }) => mmio_read(base + XAPIC_ID) >> 24,
        None => raw_cpuid::cpuid!(1).ebx >> 24,
    }
}

fn write_svr(v: u32) {
    match mode_now() {
        // SAFETY: SVR write in x2APIC mode.
        Some(Mode::X2Apic) => unsafe { wrmsr(X2APIC_SVR, v as u64) },
        Some(Mode::XApic { base }) => mmio_write(base + XAPIC_SVR, v),
        None => {}
    }
}

fn mmio_read(addr: u64) -> u32 {
    // SAFETY: the xAPIC page is identity-mapped (first 4 GiB) and 4-byte aligned.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn mmio_write(addr: u64, v: u32) {
    // SAFETY: as in mmio_read.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

/// The mode this CPU's local APIC is in now, read from IA32_APIC_BASE: after
/// a handoff the OS may have switched it (xAPIC to x2APIC).
fn live_mode() -> Option<Mode> {
    mode_now()?;
    // SAFETY: IA32_APIC_BASE exists on every CPU with a local APIC (mode_now says there is one).
    let base = unsafe { rdmsr(IA32_APIC_BASE) };
    match (base & APIC_BASE_EN != 0, base & APIC_BASE_EXTD != 0) {
        (true, true) => Some(Mode::X2Apic),
        (true, false) => Some(Mode::XApic { base: base & APIC_BASE_ADDR_MASK }),
        _ => None,
    }
}

/// Send an IPI with ICR low word `low` to `dest`; in xAPIC mode wait until the
/// APIC has taken it (delivery status idle).
fn send_ipi(dest: u32, low: u32) {
    match live_mode() {
        // SAFETY: MFENCE and LFENCE only order: WRMSR to the x2APIC ICR does
        // not wait for earlier stores (SDM Vol. 3A §11.12.3), which the target
        // may read; then a single 64-bit ICR write sends the IPI (11.12.9).
        Some(Mode::X2Apic) => unsafe {
            core::arch::asm!("mfence", "lfence", options(nostack, preserves_flags));
            wrmsr(X2APIC_ICR, (dest as u64) << 32 | low as u64)
        },
        Some(Mode::XApic { base }) => {
            mmio_write(base + XAPIC_ICR_HIGH, dest << 24);
            mmio_write(base + XAPIC_ICR_LOW, low);
            while mmio_read(base + XAPIC_ICR_LOW) & ICR_DELIVERY_PENDING != 0 {
                core::hint::spin_loop();
            }
        }
        None => {}
    }
}

/// INIT (level assert) to one processor: it resets into wait-for-SIPI.
pub fn send_init(apic_id: u32) {
    send_ipi(apic_id, ICR_DELIVERY_INIT | ICR_LEVEL_ASSERT);
}

/// Start-up IPI: the AP starts in real mode at `page << 12`.
pub fn send_startup(apic_id: u32, page: u8) {
    send_ipi(apic_id, ICR_DELIVERY_STARTUP | ICR_LEVEL_ASSERT | page as u32);
}

/// A fixed interrupt with `vector` to one processor (the wake-up IPI).
pub fn send_fixed(apic_id: u32, vector: u8) {
    send_ipi(apic_id, ICR_DELIVERY_FIXED | ICR_LEVEL_ASSERT | vector as u32);
}

/// Set this CPU's task-priority class (CR8 = TPR[7:4], SDM Vol. 3A §11.8.3.1
/// "Task and Processor Priorities"): the local APIC holds back every interrupt
/// whose vector's class is not above it.
pub fn set_task_priority(class: u8) {
    // SAFETY: MOV to CR8 only changes which interrupts the local APIC presents.
    unsafe { core::arch::asm!("mov cr8, {}", in(reg) class as u64 & 0xf, options(nostack, preserves_flags)) };
}

/// This CPU's task-priority class (CR8).
pub fn task_priority() -> u8 {
    let cr8: u64;
    // SAFETY: reading CR8 at CPL 0 has no side effect.
    unsafe { core::arch::asm!("mov {}, cr8", out(reg) cr8, options(nomem, nostack, preserves_flags)) };
    cr8 as u8
}

/// NMI to one processor (used to halt the others when the run ends). Never
/// broadcast: CPUs this kernel did not start may sit in firmware code whose
/// IDT is gone, and an NMI there would reset the machine.
pub fn send_nmi(apic_id: u32) {
    send_ipi(apic_id, ICR_DELIVERY_NMI | ICR_LEVEL_ASSERT);
}

/// Write EOI for an interrupt this CPU acknowledged (SDM Vol. 3A §11.8.5
/// "Signaling Interrupt Servicing Completion").
pub fn end_of_interrupt() {
    match mode_now() {
        // SAFETY: the x2APIC EOI MSR takes 0.
        Some(Mode::X2Apic) => unsafe { wrmsr(X2APIC_EOI, 0) },
        Some(Mode::XApic { base }) => mmio_write(base + XAPIC_EOI, 0),
        None => {}
    }
}

/// Read a local-APIC register by its xAPIC offset, in either mode.
fn read_reg(offset: u64) -> u32 {
    match mode_now() {
        // SAFETY: x2APIC MSR 0x800 + offset/16 is the register at `offset` (SDM Vol. 3A Table 11-6
        // "Local APIC Register Address Map Supported by x2APIC").
        Some(Mode::X2Apic) => unsafe { rdmsr(0x800 + (offset >> 4) as u32) as u32 },
        Some(Mode::XApic { base }) => mmio_read(base + offset),
        None => 0,
    }
}

fn write_reg(offset: u64, v: u32) {
    match mode_now() {
        // SAFETY: as in read_reg; the timer registers and the LVT are writable.
        Some(Mode::X2Apic) => unsafe { wrmsr(0x800 + (offset >> 4) as u32, v as u64) },
        Some(Mode::XApic { base }) => mmio_write(base + offset, v),
        None => {}
    }
}

/// Start the local-APIC timer in one-shot mode, dividing by 1: TIMER_VECTOR
/// after `count` timer ticks (SDM Vol. 3A §11.5.4 "APIC Timer").
pub fn timer_one_shot(count: u32) {
    write_reg(TIMER_DIVIDE, DIVIDE_BY_1);
    write_reg(LVT_TIMER, TIMER_VECTOR as u32);
    write_reg(TIMER_INITIAL_COUNT, count);
}

/// Stop the timer (initial count 0) and mask it.
pub fn timer_stop() {
    write_reg(TIMER_INITIAL_COUNT, 0);
    write_reg(LVT_TIMER, LVT_MASKED | TIMER_VECTOR as u32);
}

pub fn timer_current() -> u32 {
    read_reg(TIMER_CURRENT_COUNT)
}

/// Local-APIC timer ticks (divide by 1) in `us` microseconds, counted
/// against the TSC over a millisecond. A guest's time budget where the CPU
/// has no VMX-preemption timer (and on SVM, which has none).
pub fn timer_count_for(us: u64) -> u32 {
    const SAMPLE_US: u64 = 1_000;
    timer_stop();
    timer_one_shot(u32::MAX);
    let begin = crate::tsc::rdtsc();
    let wait = crate::tsc::micros_to_ticks(SAMPLE_US);
    while crate::tsc::rdtsc() - begin < wait {
        core::hint::spin_loop();
    }
    let elapsed = u32::MAX - timer_current();
    timer_stop();
    ((elapsed as u64 * us / SAMPLE_US).clamp(1, u32::MAX as u64)) as u32
}

/// A timer interrupt that fired after its guest had exited waits in the IRR
/// (or, on SVM, was held by the interrupt intercept): take it now (its
/// handler sends EOI) so it cannot end the next run. Leaves the task
/// priority at 0.
pub fn take_pending_timer() {
    if requested(TIMER_VECTOR) {
        set_task_priority(0);
        // SAFETY: interrupts are on for one instruction; the IDT has a gate for
        // TIMER_VECTOR (EOI only), the only vector that can be pending above class 0 here.
        unsafe { core::arch::asm!("sti", "nop", "cli", options(nomem, nostack)) };
    }
}

/// Whether `vector` waits in the IRR (requested, not yet taken).
pub fn requested(vector: u8) -> bool {
    read_reg(IRR + 0x10 * (vector as u64 / 32)) & (1 << (vector % 32)) != 0
}

/// The highest vector in service (accepted, not yet ended by EOI), if any
/// (ISR, SDM Vol. 3A §11.8.4 "Interrupt Acceptance for Fixed Interrupts").
pub fn in_service() -> Option<u8> {
    (0..8u64).rev().find_map(|i| {
        let bits = read_reg(ISR + 0x10 * i);
        (bits != 0).then(|| (i * 32 + 31 - bits.leading_zeros() as u64) as u8)
    })
}
