//! The heap: it starts in the largest free stretch of the memory map above
//! 1 MiB and inside the identity map, clear of the kernel image (with its page
//! tables and boot stack), the boot information and every boot module, and
//! only ever grows upwards inside that stretch: first to what the boot needs,
//! then to what the processors found need (`size_for`), and past that only on
//! demand (logged). Everything above the heap's top stays free for whatever is
//! loaded next; below 1 MiB stays untouched for the AP trampoline and the firmware.

use alloc::alloc::{alloc_zeroed, GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use hvlogic::memmap::{self, HeapBudget, Range};
use linked_list_allocator::Heap;

pub const PAGE_SIZE: usize = 4096;

/// The heap's first part: the MADT, the start plan, options, the trampoline
/// table and what else the boot CPU allocates once.
const BASE: u64 = 1 << 20;
/// Per CPU with VMX: VMXON region, VMCSs, 256 KiB of guest memory, EPT and
/// guest page tables, I/O and MSR bitmaps, the exit stack and the bench
/// guest's samples (measured in Bochs: 320 KiB a CPU, 400 KiB with guest=bench).
const PER_CPU_VMX: u64 = 448 << 10;
/// Growth on demand goes in steps of at least this much.
const GROW_STEP: u64 = 1 << 20;

struct GrowingHeap {
    heap: spin::Mutex<Heap>,
    /// End of the free stretch the heap may grow into.
    limit: AtomicU64,
    /// Bytes grown past `size_for`'s estimate (0 while the estimate holds).
    grown: AtomicU64,
}

#[global_allocator]
static HEAP: GrowingHeap =
    GrowingHeap { heap: spin::Mutex::new(Heap::empty()), limit: AtomicU64::new(0), grown: AtomicU64::new(0) };

// SAFETY: allocation and release go through linked_list_allocator's Heap under
// a lock; growth only adds free memory of the stretch directly above the top.
unsafe impl GlobalAlloc for GrowingHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut heap = self.heap.lock();
        if let Ok(p) = heap.allocate_first_fit(layout) {
            return p.as_ptr();
        }
        let need = (layout.size() + layout.align()) as u64;
        let by = need.next_multiple_of(GROW_STEP).min(self.limit.load(Ordering::Acquire) - heap.top() as u64);
        if by < need {
            return core::ptr::null_mut();
        }
        // SAFETY: [top, top + by) is inside the free stretch chosen at `init`, unused, identity-mapped.
        unsafe { heap.extend(by as usize) };
        self.grown.fetch_add(by, Ordering::AcqRel);
        heap.allocate_first_fit(layout).map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: the caller passes back what `alloc` returned for this layout.
            unsafe { self.heap.lock().deallocate(p, layout) };
        }
    }
}

/// Set up the heap with `BASE` bytes at the start of the chosen
/// stretch; returns that range and the end of the stretch it may grow to.
pub fn init(available: &[Range], reserved: &[Range]) -> Option<(Range, u64)> {
    let stretch = memmap::choose_heap(available, reserved, crate::boot::IDENTITY_MAPPED, u64::MAX)?;
    let initial = Range::new(stretch.start, stretch.start + BASE.min(stretch.len()));
    HEAP.limit.store(stretch.end, Ordering::Release);
    // SAFETY: the range is available RAM, identity-mapped, and overlaps nothing in use.
    unsafe { HEAP.heap.lock().init(initial.start as *mut u8, initial.len() as usize) };
    Some((initial, stretch.end))
}

/// Grow the heap to what `cpus` processors need, `per_cpu` bytes each (a
/// PCB and its stacks) and their VMX memory when `vmx`, and return its range;
/// growth past this is on demand (see `usage`).
pub fn size_for(cpus: u64, per_cpu: u64, vmx: bool) -> Range {
    let budget = HeapBudget { base: BASE, per_cpu, per_cpu_vmx: PER_CPU_VMX };
    let mut heap = HEAP.heap.lock();
    let start = heap.bottom() as u64;
    let want = (start + budget.need(cpus, vmx)).min(HEAP.limit.load(Ordering::Acquire));
    let top = heap.top() as u64;
    if want > top {
        // SAFETY: [top, want) is inside the free stretch chosen at `init`, unused, identity-mapped.
        unsafe { heap.extend((want - top) as usize) };
    }
    HEAP.grown.store(0, Ordering::Release);
    Range::new(start, heap.top() as u64)
}

/// The heap's range now (RAM this kernel owns and may read), once `init` ran.
pub fn heap_range() -> Option<Range> {
    let (range, _, _) = usage();
    (!range.is_empty()).then_some(range)
}

/// Reads 8 bytes of physical memory a software checker may look at: the
/// heap (every structure this hypervisor points a VMCS or VMCB at) and the
/// first 640 KiB of RAM; None elsewhere, so no device register is ever read.
pub fn read_physical(address: u64) -> Option<u64> {
    let in_heap = heap_range().is_some_and(|h| address >= h.start && address + 8 <= h.end);
    if !(in_heap || address + 8 <= 0xa_0000) || !address.is_multiple_of(8) {
        return None;
    }
    // SAFETY: identity-mapped RAM (the heap or conventional memory), 8-byte aligned.
    Some(unsafe { (address as *const u64).read_volatile() })
}

/// The heap's range now, the bytes in use, and how much it grew on demand
/// past `size_for`'s estimate.
pub fn usage() -> (Range, u64, u64) {
    let heap = HEAP.heap.lock();
    (Range::new(heap.bottom() as u64, heap.top() as u64), heap.used() as u64, HEAP.grown.load(Ordering::Acquire))
}

/// Stop the heap growing, `extra` bytes past its top (what is still to be
/// allocated), and return its final range: before the machine goes to an OS,
/// which gets every byte above it. An allocation that does not fit after
/// this fails (and the run ends, named), rather than taking the OS's memory.
pub fn freeze(extra: u64) -> Range {
    let mut heap = HEAP.heap.lock();
    let top = heap.top() as u64;
    let by = extra.next_multiple_of(PAGE_SIZE as u64).min(HEAP.limit.load(Ordering::Acquire) - top);
    // SAFETY: [top, top + by) is inside the free stretch chosen at `init`, unused, identity-mapped.
    unsafe { heap.extend(by as usize) };
    HEAP.limit.store(heap.top() as u64, Ordering::Release);
    Range::new(heap.bottom() as u64, heap.top() as u64)
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
