//! Booting Linux from the boot modules (GRUB's, or coreboot's CBFS files
//! as bootinfo presents them): the loader's side of the Linux/x86
//! boot protocol (the kernel's Documentation/arch/x86/boot.rst), for its
//! 32-bit entry. The decisions (roles, header checks, placement, e820, the
//! zero page) are `hvlogic::linux`; this module reads the modules, copies,
//! and hands over.
//!
//! `plan` runs before the heap exists, so the heap goes around the kernel's
//! place; `load` runs after the proof guests, and the handoff follows the
//! SUMMARY line: natively (`enter_native`), or as the boot CPU's guest
//! (vmx::os_guest).

use crate::bootinfo::BootInfo;
use core::fmt;
use hvlogic::linux::bzimage::{BzImage, BzImageError};
use hvlogic::linux::e820::{self, TooManyEntries};
use hvlogic::linux::placement;
use hvlogic::linux::roles::{self, RoleError};
use hvlogic::linux::zeropage::{self, Params, ScreenInfo};
use hvlogic::memmap::{self, Range};
use log::{debug, info};

core::arch::global_asm!(include_str!("linux_entry.s"), options(att_syntax));

extern "C" {
    fn linux_enter_native(entry: u32, boot_params: u32, gdtr: *const Gdtr) -> !;
}

/// The boot data the kernel receives: the zero page, the command line, a
/// GDT for the 32-bit entry, and a copy of the RSDP (the RSDP tag's copy
/// lives in the boot information, which an OS guest cannot see).
const BOOT_DATA_PAGES: u64 = 3;
const CMDLINE_AT: u64 = 0x1000;
const GDT_AT: u64 = 0x2000;
const RSDP_AT: u64 = 0x2100;
/// The boot protocol's GDT: null, a 64-bit code segment, __BOOT_CS (0x10)
/// and __BOOT_DS (0x18), flat 4 GiB (the descriptor format of SDM Vol. 3A
/// §3.4.5 "Segment Descriptors").
const GDT: [u64; 4] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9a00_0000_ffff, 0x00cf_9300_0000_ffff];
pub const BOOT_CS: u16 = 0x10;
pub const BOOT_DS: u16 = 0x18;

#[derive(Clone, Copy, Debug)]
pub struct Initrd {
    /// Where the boot loader put it, and where the kernel gets it (the same
    /// unless it had to move below initrd_addr_max or out of the kernel's way).
    pub from: Range,
    pub to: Range,
}

/// What `plan` decided.
pub struct Plan {
    pub bz: BzImage<'static>,
    /// `init_size` bytes from the load address: the kernel decompresses in there.
    pub kernel: Range,
    pub initrd: Option<Initrd>,
    pub cmdline: &'static str,
    pub boot_data: Range,
}

impl Plan {
    /// What the heap and everything else must stay clear of.
    pub fn ranges(&self) -> [Range; 3] {
        [self.kernel, self.initrd.map_or(Range::default(), |i| i.to), self.boot_data]
    }
}

#[derive(Debug)]
pub enum LinuxError {
    Roles(RoleError<'static>),
    BzImage(BzImageError),
    KernelDoesNotFit {
        init_size: u32,
        pref: u64,
    },
    InitrdDoesNotFit {
        size: u64,
        max: u32,
    },
    NoRoomForBootData,
    CmdlineTooLong {
        len: usize,
        max: usize,
    },
    E820(TooManyEntries),
    EmptyInitrd(hvlogic::linux::EmptyInitrd),
    /// An OS in coreboot's CBFS that is not what its file names say.
    Cbfs(hvlogic::cbfs::FileError),
}

impl fmt::Display for LinuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinuxError::Roles(e) => write!(f, "boot modules: {e}"),
            LinuxError::BzImage(e) => write!(f, "the `linux` module is unusable: {e}"),
            LinuxError::KernelDoesNotFit { init_size, pref } => write!(
                f,
                "the kernel does not fit the memory map: it needs {init_size:#x} bytes of free RAM at or above {pref:#x}, below 4 GiB"
            ),
            LinuxError::InitrdDoesNotFit { size, max } => write!(
                f,
                "the initrd does not fit the memory map: {size:#x} bytes of free RAM ending at or below {max:#x} (initrd_addr_max)"
            ),
            LinuxError::NoRoomForBootData => {
                write!(f, "no {BOOT_DATA_PAGES} free pages below 640 KiB for the zero page and command line")
            }
            LinuxError::CmdlineTooLong { len, max } => {
                write!(f, "the Linux command line has {len} bytes; this kernel takes at most {max}")
            }
            LinuxError::E820(e) => write!(f, "{e}"),
            LinuxError::EmptyInitrd(e) => write!(f, "{e}"),
            LinuxError::Cbfs(e) => write!(f, "{e}"),
        }
    }
}

/// Which module is what, whether the kernel can be booted, and where
/// everything goes, clear of `reserved` (image, boot information, modules).
/// Ok(None): there is no OS to boot.
pub fn plan(boot: &BootInfo, reserved: &[Range]) -> Result<Option<Plan>, LinuxError> {
    if let Some(e) = boot.os_error {
        return Err(LinuxError::Cbfs(e));
    }
    let modules: [Option<&crate::bootinfo::Module>; crate::bootinfo::MAX_MODULES] = {
        let mut all = [None; crate::bootinfo::MAX_MODULES];
        for (slot, m) in all.iter_mut().zip(boot.modules()) {
            *slot = Some(m);
        }
        all
    };
    let Some(os) = roles::assign(boot.modules().map(|m| m.cmdline)).map_err(LinuxError::Roles)? else {
        return Ok(None);
    };
    let module = |i: usize| modules[i].expect("assign only returns indices of modules");
    let kernel_module = module(os.linux);
    // SAFETY: GRUB loaded the module there; the range is reserved from the heap
    // for the whole run and identity-mapped (modules lie below 4 GiB).
    let bytes = unsafe {
        core::slice::from_raw_parts(kernel_module.range.start as *const u8, kernel_module.range.len() as usize)
    };
    let bz = BzImage::parse(bytes).map_err(LinuxError::BzImage)?;
    let h = bz.header;
    let kernel = placement::place_kernel(&h, bz.alignment(), boot.available(), reserved)
        .ok_or(LinuxError::KernelDoesNotFit { init_size: h.init_size, pref: h.pref_address })?;
    let initrd = match os.initrd.map(module) {
        None => None,
        Some(m) => {
            hvlogic::linux::check_initrd(m.range.len()).map_err(LinuxError::EmptyInitrd)?;
            // The initrd's own module may stay put: it is no obstacle to itself.
            let mut others = [Range::default(); 16];
            let mut n = 0;
            for r in reserved.iter().filter(|r| **r != m.range).chain([&kernel]) {
                if n < others.len() {
                    others[n] = *r;
                    n += 1;
                }
            }
            let to = placement::place_initrd(m.range, &h, boot.available(), &others[..n])
                .ok_or(LinuxError::InitrdDoesNotFit { size: m.range.len(), max: h.initrd_addr_max })?;
            Some(Initrd { from: m.range, to })
        }
    };
    let max = (h.cmdline_size as usize).min((GDT_AT - CMDLINE_AT) as usize - 1);
    if os.cmdline.len() > max {
        return Err(LinuxError::CmdlineTooLong { len: os.cmdline.len(), max });
    }
    let taken = [kernel, initrd.map_or(Range::default(), |i| i.to)];
    let mut all = [Range::default(); 16];
    let mut n = 0;
    for r in reserved.iter().chain(taken.iter()) {
        if n < all.len() {
            all[n] = *r;
            n += 1;
        }
    }
    let boot_data = memmap::choose_low_pages(boot.available(), &all[..n], BOOT_DATA_PAGES)
        .map(|p| Range::new(p, p + BOOT_DATA_PAGES * memmap::PAGE))
        .ok_or(LinuxError::NoRoomForBootData)?;
    Ok(Some(Plan { bz, kernel, initrd, cmdline: os.cmdline, boot_data }))
}

/// Where the kernel starts and with what.
#[derive(Clone, Copy, Debug)]
pub struct Handoff {
    /// The 32-bit entry: the load address of the protected-mode kernel.
    pub entry: u32,
    /// The zero page (ESI).
    pub boot_params: u32,
    /// The GDT with __BOOT_CS and __BOOT_DS, and its limit.
    pub gdt: u64,
    pub gdt_limit: u16,
    pub version: &'static str,
}

/// Copy the kernel (and the initrd, if it moves) into place and write the
/// boot data: the zero page with the e820 table, where `hypervisor` (its own
/// RAM) is marked reserved, the command line, the GDT and the RSDP copy.
pub fn load(
    plan: &Plan,
    boot: &BootInfo,
    hypervisor: &[Range],
    screen: Option<ScreenInfo>,
) -> Result<Handoff, LinuxError> {
    let pm = plan.bz.protected_mode();
    // SAFETY: `plan.kernel` is free RAM reserved for the kernel (plan), larger
    // than the protected-mode code (init_size covers it), and identity-mapped.
    unsafe { core::ptr::copy_nonoverlapping(pm.as_ptr(), plan.kernel.start as *mut u8, pm.len()) };
    if let Some(i) = plan.initrd.filter(|i| i.from != i.to) {
        // SAFETY: both ranges are identity-mapped RAM of the same length; `to` was
        // chosen clear of `from` (plan), so they do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(i.from.start as *const u8, i.to.start as *mut u8, i.from.len() as usize)
        };
    }
    let base = plan.boot_data.start;
    // SAFETY: the boot-data pages were chosen free, below 1 MiB, reserved for this.
    let data = unsafe { core::slice::from_raw_parts_mut(base as *mut u8, plan.boot_data.len() as usize) };
    data.fill(0);
    data[CMDLINE_AT as usize..][..plan.cmdline.len()].copy_from_slice(plan.cmdline.as_bytes());
    for (i, d) in GDT.iter().enumerate() {
        data[GDT_AT as usize + 8 * i..][..8].copy_from_slice(&d.to_le_bytes());
    }
    let rsdp = boot.rsdp_bytes.map(|b| {
        data[RSDP_AT as usize..][..b.len()].copy_from_slice(b);
        base + RSDP_AT
    });
    let mut withheld = alloc::vec::Vec::from(hypervisor);
    withheld.push(plan.boot_data);
    let table = e820::build(boot.areas(), &withheld).map_err(LinuxError::E820)?;
    for e in &table {
        debug!("linux: e820 {:#012x}-{:#012x} type {}", e.addr, e.addr + e.size, e.kind);
    }
    let page: &mut [u8; zeropage::SIZE] = (&mut data[..zeropage::SIZE]).try_into().expect("a page");
    let params = Params {
        kernel: plan.kernel.start as u32,
        cmd_line: base + CMDLINE_AT,
        initrd: plan.initrd.map(|i| (i.to.start, i.to.len())),
        rsdp,
        e820: &table,
        screen,
    };
    zeropage::build(page, &plan.bz, &params);
    info!(
        "linux: kernel at {:#x}-{:#x}, initrd at {}, zero page at {base:#x}, command line `{}`",
        plan.kernel.start,
        plan.kernel.end,
        plan.initrd.map_or(alloc::string::String::from("none"), |i| alloc::format!(
            "{:#x}-{:#x}",
            i.to.start,
            i.to.end
        )),
        plan.cmdline
    );
    Ok(Handoff {
        entry: plan.kernel.start as u32,
        boot_params: base as u32,
        gdt: base + GDT_AT,
        gdt_limit: (core::mem::size_of_val(&GDT) - 1) as u16,
        version: plan.bz.version,
    })
}

/// A GDTR image for LGDT in 64-bit mode: limit, then the 64-bit base.
#[repr(C, packed)]
struct Gdtr {
    limit: u16,
    base: u64,
}

/// Hand the machine to Linux without the hypervisor (VMX is off on every CPU
/// and the application processors wait for SIPI).
pub fn enter_native(h: &Handoff) -> ! {
    crate::apic::set_task_priority(0);
    let gdtr = Gdtr { limit: h.gdt_limit, base: h.gdt };
    // SAFETY: the kernel, zero page, command line and GDT are in place (load);
    // this CPU is out of VMX operation; nothing of this kernel runs after it.
    unsafe { linux_enter_native(h.entry, h.boot_params, &gdtr) }
}
