//! The machine itself: port I/O on behalf of a guest, and resetting it the
//! ways a PC can be reset.

use hvlogic::power::{Ports, KBC_COMMAND_PORT, RESET_CONTROL_PORT};
use x86_64::instructions::port::Port;

/// IN of `size` bytes (1, 2 or 4) from `port`.
pub fn port_in(port: u16, size: u8) -> u32 {
    // SAFETY: a port the guest itself was going to read; the hypervisor only
    // traps ports it passes on unchanged (or that end the machine).
    unsafe {
        match size {
            1 => Port::<u8>::new(port).read() as u32,
            2 => Port::<u16>::new(port).read() as u32,
            _ => Port::<u32>::new(port).read(),
        }
    }
}

/// OUT of `size` bytes (1, 2 or 4) of `value` to `port`.
pub fn port_out(port: u16, size: u8, value: u32) {
    // SAFETY: as in `port_in`: what the guest asked for, done for it.
    unsafe {
        match size {
            1 => Port::<u8>::new(port).write(value as u8),
            2 => Port::<u16>::new(port).write(value as u16),
            _ => Port::<u32>::new(port).write(value),
        }
    }
}

/// Reset the machine, the most thorough way first: the reset control
/// register as a full reset (0xCF9: SYS_RST, then SYS_RST|RST_CPU|FULL_RST,
/// Intel PCH datasheets), the FADT's reset register (ACPI 6.5 §4.8.3.6), the
/// keyboard controller's reset pulse, and last a triple fault.
pub fn reset(ports: &Ports) -> ! {
    port_out(RESET_CONTROL_PORT, 1, 0x02);
    crate::logger::delay_us(50);
    port_out(RESET_CONTROL_PORT, 1, 0x0e);
    crate::logger::delay_us(50_000);
    if let Some((port, value)) = ports.reset {
        port_out(port, 1, value as u32);
        crate::logger::delay_us(50_000);
    }
    port_out(KBC_COMMAND_PORT, 1, 0xfe);
    crate::logger::delay_us(50_000);
    triple_fault()
}

/// Shut this processor down the way a triple fault does (a PC then resets):
/// leave VMX operation, load an empty IDT and raise an exception.
pub fn triple_fault() -> ! {
    if crate::pcb::has_pcb() && crate::pcb::this_cpu().has(crate::pcb::CPU_STATUS_VMXON) {
        crate::virt::leave_for_park();
    }
    let empty = x86_64::structures::DescriptorTablePointer { limit: 0, base: x86_64::VirtAddr::new(0) };
    // SAFETY: deliberately makes every exception undeliverable; the INT3 that
    // follows becomes #GP, #DF, then shutdown. Nothing runs after it.
    unsafe {
        x86_64::instructions::tables::lidt(&empty);
        core::arch::asm!("int3", options(noreturn));
    }
}
