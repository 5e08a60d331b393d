//! The interrupt descriptor table: 256 gates, the 32 exception vectors
//! present, each pointing at its stub in exceptions.s (which saves the
//! registers and calls `exception_dispatch` in exceptions.rs).

use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

core::arch::global_asm!(include_str!("exceptions.s"), options(att_syntax));

extern "C" {
    static EXCEPTION_STUBS: [u64; 32];
    fn wake_stub();
    fn spurious_stub();
}

/// The wake-up IPI (and a fuzz time-budget timer interrupt that fired after
/// its guest had exited): acknowledge it; the AP's idle loop does the rest.
#[no_mangle]
extern "C" fn wake_interrupt() {
    crate::apic::end_of_interrupt();
}

/// Interrupt-stack-table slots (TSS.IST1..3, SDM Vol. 3A §6.14.5 "Interrupt
/// Stack Table"): the exceptions that must report even on an overflowed or
/// unusable stack.
pub const IST_DOUBLE_FAULT: u16 = 0;
pub const IST_NMI: u16 = 1;
pub const IST_MACHINE_CHECK: u16 = 2;

/// The per-CPU IDT: all 256 vectors; the 32 exceptions, the wake-up IPI and
/// the spurious vector present. Interrupts are only ever on while an idle AP
/// halts; a stray vector finds a not-present gate and is reported as #NP
/// naming it (after a VM exit the IDTR limit is 0xFFFF, SDM Vol. 3C §28.5.2
/// "Loading Host Segment and Descriptor-Table Registers", so the table must
/// cover every vector).
#[repr(C, align(16))]
pub struct Idt([IdtGate; 256]);

/// A 64-bit interrupt gate (SDM Vol. 3A §6.14.1 "64-Bit Mode IDT", Figure 6-8
/// "64-Bit IDT Gate Descriptors").
#[repr(C)]
#[derive(Clone, Copy)]
struct IdtGate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

/// Present, DPL 0, type 0xE (64-bit interrupt gate: IF cleared on entry).
const INTERRUPT_GATE: u8 = 0x8e;
const NOT_PRESENT: IdtGate =
    IdtGate { offset_low: 0, selector: 0, ist: 0, type_attr: 0, offset_mid: 0, offset_high: 0, reserved: 0 };

impl Idt {
    /// All 32 vectors point at their stubs (through `code_selector`, the GDT's
    /// 64-bit code segment); NMI, #DF and #MC switch to their own
    /// IST stacks (TSS.IST1-3), so they report even on an overflowed stack.
    pub fn new(code_selector: u16) -> Idt {
        // SAFETY: EXCEPTION_STUBS is a read-only table emitted by exceptions.s.
        let stubs = unsafe { &EXCEPTION_STUBS };
        Idt(core::array::from_fn(|vector| {
            let addr = match vector {
                0..32 => stubs[vector],
                v if v == crate::apic::WAKE_VECTOR as usize || v == crate::apic::TIMER_VECTOR as usize => {
                    wake_stub as *const () as u64
                }
                v if v == crate::apic::SPURIOUS_VECTOR as usize => spurious_stub as *const () as u64,
                _ => return NOT_PRESENT,
            };
            let ist = match vector {
                2 => IST_NMI + 1,
                8 => IST_DOUBLE_FAULT + 1,
                18 => IST_MACHINE_CHECK + 1,
                _ => 0,
            };
            IdtGate {
                offset_low: addr as u16,
                selector: code_selector,
                ist: ist as u8,
                type_attr: INTERRUPT_GATE,
                offset_mid: (addr >> 16) as u16,
                offset_high: (addr >> 32) as u32,
                reserved: 0,
            }
        }))
    }

    /// Load this IDT on the running CPU.
    ///
    /// # Safety
    /// The IDT must stay in place, unchanged, while it is loaded (it lives in a 'static PCB).
    pub unsafe fn load(&self) {
        let ptr =
            DescriptorTablePointer { limit: (core::mem::size_of::<Idt>() - 1) as u16, base: VirtAddr::from_ptr(self) };
        // SAFETY: the caller keeps the IDT in place; its gates point at valid handlers.
        unsafe { lidt(&ptr) };
    }
}
