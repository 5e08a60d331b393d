//! The heap: the largest free stretch of the memory map above 1 MiB and inside
//! the identity map, clear of the kernel image, its page tables and boot stack
//! (all in the image), and the boot information. Below 1 MiB stays untouched
//! for the AP trampoline and the firmware.

use alloc::alloc::{alloc_zeroed, Layout};
use hvlogic::memmap::{self, Range};
use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Enough for every CPU's stacks, VMX regions and guest memory, and no more:
/// the rest of memory stays free for whatever is loaded next.
const HEAP_MAX: u64 = 64 << 20;
pub const PAGE_SIZE: usize = 4096;

/// Initialise the heap and return its range.
pub fn init(available: &[Range], reserved: &[Range]) -> Option<Range> {
    let heap = memmap::choose_heap(available, reserved, crate::boot::IDENTITY_MAPPED, HEAP_MAX)?;
    // SAFETY: the range is available RAM, identity-mapped, and overlaps nothing in use.
    unsafe { HEAP.lock().init(heap.start as *mut u8, heap.len() as usize) };
    HEAP_RANGE.call_once(|| heap);
    Some(heap)
}

static HEAP_RANGE: spin::Once<Range> = spin::Once::new();

/// The heap's range, once `init` ran: RAM this kernel owns and may read.
pub fn heap_range() -> Option<Range> {
    HEAP_RANGE.get().copied()
}

/// `count` zeroed, 4 KiB-aligned pages for the whole run. Identity mapping
/// makes the address physical too.
pub fn alloc_pages(count: usize) -> &'static mut [u8] {
    let layout = Layout::from_size_align(count * PAGE_SIZE, PAGE_SIZE).expect("page layout");
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc_zeroed(layout) };
    if p.is_null() {
        alloc::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `p` is a fresh allocation of exactly this size, never freed.
    unsafe { core::slice::from_raw_parts_mut(p, count * PAGE_SIZE) }
}

/// A stack of `size` bytes; returns its top (16-byte aligned).
pub fn alloc_stack(size: usize) -> u64 {
    let pages = alloc_pages(size.div_ceil(PAGE_SIZE));
    pages.as_ptr() as u64 + pages.len() as u64
}
