//! The OS guest's physical memory as EPT shows it to the guest: 1:1, except
//! the hypervisor's own pages (holes), which read as one blank page. The
//! host reads guest memory (the guest's page tables, the instruction that
//! wrote the APIC, PAE PDPTEs) only through this view, so nothing the guest
//! points at makes the host read hypervisor memory or an MMIO register.

use hvlogic::memmap::Range;
use spin::Once;

struct View {
    holes: alloc::vec::Vec<Range>,
    blank: u64,
    /// RAM the guest may name (the memory map's available ranges).
    ram: alloc::vec::Vec<Range>,
}

static VIEW: Once<View> = Once::new();

/// Set the view once, before any CPU runs the OS (os_guest::prepare).
/// `holes` must be whole pages.
pub fn set(holes: &[Range], blank: u64, ram: &[Range]) {
    VIEW.call_once(|| View { holes: holes.to_vec(), blank, ram: ram.to_vec() });
}

/// The host address where the guest sees `gpa` (8 bytes, aligned): the
/// blank page for a hole, the address itself for RAM; None for anything
/// else (MMIO, or no view yet).
fn host_address(gpa: u64) -> Option<u64> {
    let view = VIEW.get()?;
    let gpa = gpa & !7;
    if view.holes.iter().any(|h| h.start <= gpa && gpa < h.end) {
        return Some(view.blank + (gpa & 0xfff));
    }
    view.ram.iter().any(|r| r.start <= gpa && gpa + 8 <= r.end).then_some(gpa)
}

/// Read 8 bytes of guest-physical memory as the guest would see them; None
/// where the guest would reach something other than RAM.
pub fn read_u64(gpa: u64) -> Option<u64> {
    let host = host_address(gpa)?;
    if host + 8 > crate::boot::IDENTITY_MAPPED {
        crate::paging::identity_map(host, 8).ok()?;
    }
    // SAFETY: RAM (or the blank page), identity-mapped above, 8-byte aligned.
    Some(unsafe { core::ptr::read_volatile(host as *const u64) })
}
