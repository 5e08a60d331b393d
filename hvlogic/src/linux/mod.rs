//! Booting Linux: the boot protocol's data, decided without touching hardware.

pub mod bzimage;
pub mod e820;
pub mod placement;
pub mod roles;
pub mod zeropage;

use core::fmt;

/// An `initrd` module of zero bytes: handed over, Linux would find no
/// initramfs and panic looking for its root (a failed copy leaves such a file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmptyInitrd;

impl fmt::Display for EmptyInitrd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the `initrd` module is empty (0 bytes)")
    }
}

/// Whether an initrd of `len` bytes can be handed over.
pub fn check_initrd(len: u64) -> Result<(), EmptyInitrd> {
    if len == 0 {
        Err(EmptyInitrd)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_empty_initrd_is_refused() {
        assert_eq!(super::check_initrd(0), Err(super::EmptyInitrd));
        assert_eq!(alloc::format!("{}", super::EmptyInitrd), "the `initrd` module is empty (0 bytes)");
        assert_eq!(super::check_initrd(1), Ok(()));
    }
}
