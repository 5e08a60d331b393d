//! A VMCB in memory: a zeroed, 4 KiB-aligned page of the heap (identity
//! mapped: its physical address is its address), read and written at the
//! offsets of `hvlogic::svm::vmcb`.

use hvlogic::svm::vmcb::{event, save};

/// One VMCB (or a VMCB-format area VMSAVE and VMLOAD use).
#[derive(Clone, Copy)]
pub struct Vmcb(u64);

impl Vmcb {
    pub fn new() -> Vmcb {
        Vmcb(crate::memory::alloc_pages(1).as_ptr() as u64)
    }

    /// Every field zero.
    pub fn clear(&self) {
        for offset in (0..hvlogic::svm::vmcb::SIZE).step_by(8) {
            self.set_u64(offset, 0);
        }
    }

    /// Its physical address (for VMRUN, VMLOAD, VMSAVE).
    pub fn pa(&self) -> u64 {
        self.0
    }

    pub fn read<T: Copy>(&self, offset: usize) -> T {
        debug_assert!(offset + core::mem::size_of::<T>() <= 4096);
        // SAFETY: inside the VMCB page, naturally aligned (every field is), which
        // only this CPU uses; the CPU's own writes happen inside VMRUN.
        unsafe { core::ptr::read_volatile((self.0 + offset as u64) as *const T) }
    }

    pub fn write<T: Copy>(&self, offset: usize, value: T) {
        debug_assert!(offset + core::mem::size_of::<T>() <= 4096);
        // SAFETY: as for `read`.
        unsafe { core::ptr::write_volatile((self.0 + offset as u64) as *mut T, value) }
    }

    pub fn u64(&self, offset: usize) -> u64 {
        self.read(offset)
    }

    pub fn set_u64(&self, offset: usize, value: u64) {
        self.write(offset, value)
    }

    pub fn u32(&self, offset: usize) -> u32 {
        self.read(offset)
    }

    pub fn set_u32(&self, offset: usize, value: u32) {
        self.write(offset, value)
    }

    /// Copy a whole VMCB image (`hvlogic::svm::vmcb::Vmcb`) into this page.
    pub fn load(&self, image: &hvlogic::svm::vmcb::Vmcb) {
        for (i, chunk) in image.bytes().chunks_exact(8).enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.set_u64(i * 8, u64::from_le_bytes(word));
        }
    }

    /// A segment of the state save area: selector, attributes, limit, base.
    pub fn set_segment(&self, segment: usize, selector: u16, attrib: u16, limit: u32, base: u64) {
        self.write(segment + save::SEL, selector);
        self.write(segment + save::ATTRIB, attrib);
        self.write(segment + save::LIMIT, limit);
        self.write(segment + save::BASE, base);
    }

    /// Queue an event for the next VMRUN (APM Vol. 2 §15.20 "Event Injection").
    pub fn inject(&self, e: u64) {
        self.set_u64(hvlogic::svm::vmcb::control::EVENTINJ, e);
    }

    pub fn inject_exception(&self, vector: u8, error_code: Option<u32>) {
        self.inject(event::exception(vector, error_code));
    }
}
