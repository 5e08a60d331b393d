//! Booting Linux: the boot protocol's data, decided without touching hardware.

pub mod bzimage;
pub mod e820;
pub mod placement;
pub mod roles;
pub mod zeropage;
