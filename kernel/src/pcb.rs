//! The processor control block (PCB): one per logical processor, reached
//! through the GS base as in the book (`[gs: PCB.Field]`).
//!
//! A PCB is built before its CPU runs on it and published by `activate`;
//! after that, its plain fields are read-only, other CPUs read the atomics,
//! and the state only its own CPU may change sits behind `own()`.

use crate::idt::Idt;
use alloc::boxed::Box;
use core::arch::asm;
use core::cell::{RefCell, RefMut, UnsafeCell};
use core::mem::{offset_of, MaybeUninit};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use hvlogic::vmx_global::VmxGlobalData;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::{PrivilegeLevel, VirtAddr};

/// CPUID.01H:EDX[7] machine-check exception; CR4.MCE (bit 6).
const CPUID_01_EDX_MCE: u32 = 1 << 7;
const CR4_MCE: u64 = 1 << 6;

/// Most logical processors this kernel starts (more are counted, not started).
pub const MAX_CPUS: usize = 256;

/// `ProcessorStatus` flags.
pub const CPU_STATUS_ONLINE: u32 = 1 << 0;
/// Hardware virtualization is on: VMX root operation (the book's
/// CPU_STATUS_VMXON), or on AMD EFER.SVME with a host save area.
pub const CPU_STATUS_VMXON: u32 = 1 << 1;
/// VMX (or on AMD, SVM) unavailable: not in CPUID, or locked off by firmware.
pub const CPU_STATUS_NO_VMX: u32 = 1 << 2;
/// This CPU's guest ended as intended.
pub const CPU_STATUS_GUEST_OK: u32 = 1 << 3;
/// Something on this CPU failed (reported in the log when it happened).
pub const CPU_STATUS_FAILED: u32 = 1 << 4;
/// Reached VMX root operation (or turned SVM on) during the run (stays set
/// after VMXOFF or EFER.SVME is cleared).
pub const CPU_STATUS_VMX_ROOT_REACHED: u32 = 1 << 6;
/// Did not finish a stage in time; no further work is sent to it.
pub const CPU_STATUS_UNRESPONSIVE: u32 = 1 << 5;
/// This CPU runs the OS guest, or waits for the OS to start it: its VM exits
/// are counted, the OS's INIT and SIPI reach it, and INIT stops it.
pub const CPU_STATUS_OS: u32 = 1 << 7;
/// This CPU is on its way to, or in, the processor's wait-for-SIPI state
/// for the OS (`virt::os::wait_for_sipi`): NMIs that reach the host are dropped.
pub const CPU_STATUS_OS_WAITING: u32 = 1 << 8;

/// Exits counted per CPU, by VMX basic exit reason (SDM Vol. 3D Table C-1
/// "Basic Exit Reasons" names 0-77) or by SVM exit code
/// (`hvlogic::svm::exit_code::counter_index`: 168 slots).
pub const EXIT_REASONS: usize = hvlogic::svm::exit_code::COUNTERS;

/// Selectors of every per-CPU GDT (the same as the boot GDT's code and data).
pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
pub const KERNEL_TR: u16 = 0x18;

pub const IST_STACK_SIZE: usize = 16 * 1024;
pub const KERNEL_STACK_SIZE: usize = 64 * 1024;

#[repr(C)]
pub struct Pcb {
    /// The PCB's own address: `gs:[0]` yields it (the book's `PCB.Base`).
    base: *const Pcb,
    /// 0 for the boot CPU, then in start-up order. Read by the log prefix.
    pub processor_index: u32,
    /// Local APIC ID (x2APIC ID in x2APIC mode); `apic_id()`.
    apic_id: AtomicU32,
    pub is_bsp: bool,
    /// `ProcessorStatus`: CPU_STATUS_* flags.
    pub status: AtomicU32,
    /// Set while this CPU reports an exception, to catch a fault in the reporter.
    pub in_exception: AtomicBool,
    /// NMIs for the OS guest that reached the host and wait for a VM entry
    /// (at most 2: one to deliver, one latched behind it, as a CPU holds them).
    pub nmi_pending: AtomicU8,
    /// The OS guest's VMCS may activate the VMX-preemption timer, which
    /// brings a set-aside NMI back in (`vmx::os_vcpu::nmi_in_host`).
    pub nmi_timer: AtomicBool,
    /// The OS guest's VM exits on this CPU by basic reason (SVM: by exit
    /// code's counter slot). Only this CPU writes them; the CPU that reports
    /// the end reads them.
    pub exits: [AtomicU32; EXIT_REASONS],
    /// TSC ticks this CPU spent in the OS guest's exit handler (from its
    /// entry to its return; the world switch and the fast paths in entry.s
    /// are not in it). Written and read as `exits` is.
    pub exit_ticks: AtomicU64,
    /// The vector of the OS's last start-up IPI to this CPU (with bit 8 set
    /// once there is one), which the hypervisor sent to its own trampoline
    /// instead; the CPU starts the OS there when it arrives (`virt::os`).
    pub os_sipi: AtomicU32,
    /// Where this CPU is between the OS's INIT and its SIPI
    /// (`virt::os::filter_ipi`): 0 running the OS, 1 an INIT sent to it, else
    /// the TSC when it left virtualization for wait-for-SIPI.
    pub os_wait_since: AtomicU64,
    /// What only this CPU reads and writes, through `own()`. The RefCell's
    /// borrow flag, like the rest, is only touched by this CPU.
    own: RefCell<Own>,
    pub kernel_stack_top: u64,
    /// Work sent by the boot CPU (posted here, announced by a wake IPI).
    pub mailbox: Mailbox,
    pub gdt: GlobalDescriptorTable,
    pub tss: TaskStateSegment,
    pub idt: Idt,
}

/// The part of a PCB only its own CPU touches.
#[derive(Default)]
pub struct Own {
    /// CPUID.01H:EBX[31:24].
    pub initial_apic_id: u32,
    /// CPUID.01H:ECX and EDX (the book's `FeatureEcx`, `FeatureEdx`).
    pub feature_ecx: u32,
    pub feature_edx: u32,
    /// Physical-address width, CPUID.80000008H:EAX[7:0].
    pub maxphyaddr: u32,
    /// The local APIC runs in x2APIC mode (the book's `IsLx2ApicEnable`).
    pub x2apic: bool,
    /// IA32_APIC_BASE as firmware (or, for an AP, INIT) left it, restored
    /// before an OS gets this CPU.
    pub firmware_apic_base: u64,
    /// The VMX global data of `get_vmx_global_data`.
    pub vmx: VmxGlobalData,
    /// Physical address of the VMXON region (`VmxonPhysicalPointer`), 0 if none.
    pub vmxon_region: u64,
    /// AMD: CPUID Fn8000_000A, SVM's features (what `get_vmx_global_data`
    /// gathers for VMX), and VM_CR as found.
    pub svm: hvlogic::svm::features::SvmFeatures,
    pub vm_cr: u64,
    /// AMD: the host save area VM_HSAVE_PA points at (the VMXON region's
    /// counterpart), and the page VMSAVE keeps the host's FS, GS, TR, LDTR
    /// and system-call MSRs in while a guest runs; 0 if none.
    pub host_save_area: u64,
    pub host_state: u64,
}

// SAFETY: the plain fields are read-only once published, the shared ones are
// atomics, and `own` (its RefCell borrow flag included) is only reached by its
// CPU (checked in `own()`).
unsafe impl Sync for Pcb {}

/// Work sent to a CPU by the boot CPU: a function it runs on its own PCB. The
/// boot CPU posts it here and sends a wake IPI (`apic::WAKE_VECTOR`); an idle
/// AP halts until one arrives and then looks at its mailbox.
pub type Work = fn(&Pcb);

/// One CPU's mailbox: the boot CPU posts work under a new generation number;
/// the CPU runs it and reports that generation done. Only atomics: a CPU that
/// is withdrawn or parked halfway leaves nothing locked.
pub struct Mailbox {
    work: AtomicUsize,
    request: AtomicU32,
    done: AtomicU32,
    /// TSC when the last request was finished.
    done_tsc: AtomicU64,
}

impl Mailbox {
    pub const fn new() -> Mailbox {
        Mailbox {
            work: AtomicUsize::new(0),
            request: AtomicU32::new(0),
            done: AtomicU32::new(0),
            done_tsc: AtomicU64::new(0),
        }
    }

    /// Post `work` as request `generation` (the boot CPU).
    pub fn post(&self, work: Work, generation: u32) {
        self.work.store(work as usize, Ordering::Release);
        self.request.store(generation, Ordering::Release);
    }

    /// Work posted after request `seen`, with its generation (the owning CPU).
    pub fn take(&self, seen: u32) -> Option<(Work, u32)> {
        let request = self.request.load(Ordering::Acquire);
        if request == seen {
            return None;
        }
        let work = self.work.load(Ordering::Acquire);
        // SAFETY: `work` was stored from a `Work` fn pointer by `post`, before `request`.
        Some((unsafe { core::mem::transmute::<usize, Work>(work) }, request))
    }

    /// Report request `generation` done (the owning CPU).
    pub fn finish(&self, generation: u32) {
        self.done_tsc.store(crate::tsc::rdtsc(), Ordering::Release);
        self.done.store(generation, Ordering::Release);
    }

    /// The TSC when the last finished request ended.
    pub fn done_tsc(&self) -> u64 {
        self.done_tsc.load(Ordering::Acquire)
    }

    pub fn is_done(&self, generation: u32) -> bool {
        self.done.load(Ordering::Acquire) == generation
    }
}

/// All PCBs by processor index, published by the boot CPU as it builds them
/// (before the CPU runs); whether a CPU is up is its CPU_STATUS_ONLINE flag.
static PCBS: [AtomicPtr<Pcb>; MAX_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];

/// The boot CPU's PCB and IST stacks live in .bss: they are needed before the heap.
struct BspStorage(UnsafeCell<MaybeUninit<Pcb>>);
// SAFETY: written once by the boot CPU before any other CPU runs.
unsafe impl Sync for BspStorage {}
static BSP_PCB: BspStorage = BspStorage(UnsafeCell::new(MaybeUninit::uninit()));

#[repr(C, align(16))]
struct IstStacks([[u8; IST_STACK_SIZE]; 3]);
struct BspIst(UnsafeCell<IstStacks>);
// SAFETY: only the boot CPU uses these stacks, through its TSS.
unsafe impl Sync for BspIst {}
static BSP_IST: BspIst = BspIst(UnsafeCell::new(IstStacks([[0; IST_STACK_SIZE]; 3])));

/// GS base before any PCB exists: a zeroed block, so `gs:[8]` reads index 0.
static EARLY_GS: [u64; 2] = [0; 2];

/// Point GS at a zero block so the log prefix works from the first line.
pub fn init_early_gs() {
    // SAFETY: IA32_GS_BASE takes any canonical address; EARLY_GS outlives the kernel.
    unsafe { x86::msr::wrmsr(x86::msr::IA32_GS_BASE, EARLY_GS.as_ptr() as u64) };
}

/// The running CPU's processor index, straight from `gs:[8]`.
#[inline]
pub fn this_cpu_index() -> u32 {
    let index: u32;
    // SAFETY: GS base always points at a PCB or at EARLY_GS (set first thing on every CPU).
    unsafe {
        asm!("mov {0:e}, gs:[{off}]", out(reg) index, off = const offset_of!(Pcb, processor_index),
             options(nostack, readonly, preserves_flags))
    };
    index
}

/// The running CPU's PCB.
#[inline]
pub fn this_cpu() -> &'static Pcb {
    let base: *const Pcb;
    // SAFETY: `gs:[0]` holds the PCB's own address once `activate` ran on this CPU.
    unsafe { asm!("mov {}, gs:[0]", out(reg) base, options(nostack, readonly, preserves_flags)) };
    assert!(!base.is_null(), "PCB used before activate()");
    // SAFETY: published PCBs are 'static and only shared references are handed out.
    unsafe { &*base }
}

/// Whether this CPU has a PCB yet (false during early boot).
pub fn has_pcb() -> bool {
    let base: u64;
    // SAFETY: as in `this_cpu`; EARLY_GS reads 0 at offset 0.
    unsafe { asm!("mov {}, gs:[0]", out(reg) base, options(nostack, readonly, preserves_flags)) };
    base != 0
}

/// The PCB of processor `index`, once it has come up.
pub fn get(index: u32) -> Option<&'static Pcb> {
    let p = PCBS.get(index as usize)?.load(Ordering::Acquire);
    // SAFETY: published pointers are 'static PCBs.
    unsafe { p.as_ref() }
}

/// Every published PCB, by processor index (online or not: check the status).
pub fn all() -> impl Iterator<Item = &'static Pcb> {
    (0..MAX_CPUS as u32).filter_map(get)
}

fn publish(pcb: &'static Pcb) {
    PCBS[pcb.processor_index as usize].store(pcb.base as *mut Pcb, Ordering::Release);
}

impl Pcb {
    /// A PCB for processor `processor_index`, built in place at `slot` (its
    /// GDT must point at its own TSS, so it needs its final address).
    fn build(
        slot: &'static mut MaybeUninit<Pcb>,
        processor_index: u32,
        is_bsp: bool,
        kernel_stack_top: u64,
        ist_tops: [u64; 3],
    ) -> &'static Pcb {
        let mut tss = TaskStateSegment::new();
        for (i, top) in ist_tops.into_iter().enumerate() {
            tss.interrupt_stack_table[i] = VirtAddr::new(top);
        }
        let pcb = slot.write(Pcb {
            base: core::ptr::null(),
            processor_index,
            apic_id: AtomicU32::new(0),
            is_bsp,
            status: AtomicU32::new(0),
            in_exception: AtomicBool::new(false),
            nmi_pending: AtomicU8::new(0),
            nmi_timer: AtomicBool::new(false),
            exits: [const { AtomicU32::new(0) }; EXIT_REASONS],
            exit_ticks: AtomicU64::new(0),
            os_sipi: AtomicU32::new(0),
            os_wait_since: AtomicU64::new(0),
            own: RefCell::new(Own::default()),
            kernel_stack_top,
            mailbox: Mailbox::new(),
            gdt: GlobalDescriptorTable::new(),
            tss,
            idt: Idt::new(KERNEL_CS),
        });
        pcb.base = pcb as *const Pcb;
        let tss: *const TaskStateSegment = &pcb.tss;
        let code = pcb.gdt.append(Descriptor::kernel_code_segment());
        let data = pcb.gdt.append(Descriptor::kernel_data_segment());
        // SAFETY: the TSS lives in the same 'static PCB as the GDT.
        let tr = pcb.gdt.append(unsafe { Descriptor::tss_segment_unchecked(tss) });
        debug_assert_eq!((code.0, data.0, tr.0), (KERNEL_CS, KERNEL_DS, KERNEL_TR));
        pcb
    }

    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Acquire)
    }

    pub fn set_apic_id(&self, id: u32) {
        self.apic_id.store(id, Ordering::Release);
    }

    /// This CPU's private state. Only the CPU this PCB belongs to may ask
    /// (checked); a second borrow while one is alive panics (RefCell), so two
    /// `&mut Own` never exist at once. Exception handlers never ask.
    pub fn own(&self) -> RefMut<'_, Own> {
        assert_eq!(this_cpu_index(), self.processor_index, "another CPU's private PCB state");
        self.own.borrow_mut()
    }

    /// Add `ticks` to this CPU's time in the exit handler (`exit_ticks`;
    /// single writer, as `count_exit`).
    #[inline(always)]
    pub fn count_exit_ticks(&self, ticks: u64) {
        self.exit_ticks.store(self.exit_ticks.load(Ordering::Relaxed).wrapping_add(ticks), Ordering::Relaxed);
    }

    /// Count a VM exit of the OS guest (single writer: a plain load and store).
    #[inline(always)]
    pub fn count_exit(&self, basic_reason: u32) {
        if let Some(c) = self.exits.get(basic_reason as usize) {
            c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }

    pub fn has(&self, flag: u32) -> bool {
        self.status.load(Ordering::Acquire) & flag != 0
    }

    pub fn set(&self, flag: u32) {
        self.status.fetch_or(flag, Ordering::AcqRel);
    }

    pub fn clear(&self, flag: u32) {
        self.status.fetch_and(!flag, Ordering::AcqRel);
    }
}

/// Build the boot CPU's PCB in .bss and activate it.
pub fn init_bsp() -> &'static Pcb {
    let stack_top = core::ptr::addr_of!(crate::boot::boot_stack_bottom) as u64 + crate::boot::BOOT_STACK_SIZE;
    let ist = BSP_IST.0.get() as u64;
    let tops = [0, 1, 2].map(|i| ist + (i + 1) * IST_STACK_SIZE as u64);
    // SAFETY: runs once, on the boot CPU, before anything reads BSP_PCB.
    let slot = unsafe { &mut *BSP_PCB.0.get() };
    let pcb = activate(Pcb::build(slot, 0, true, stack_top, tops));
    publish(pcb);
    pcb
}

/// Build an application processor's PCB and stacks on the boot CPU, before
/// its SIPI, and publish it; the AP activates it itself.
pub fn new_ap(processor_index: u32, apic_id: u32) -> &'static Pcb {
    assert!((processor_index as usize) < MAX_CPUS);
    let kernel_stack = crate::memory::alloc_stack(KERNEL_STACK_SIZE);
    let tops = [0; 3].map(|_| crate::memory::alloc_stack(IST_STACK_SIZE));
    let pcb = Pcb::build(Box::leak(Box::new_uninit()), processor_index, false, kernel_stack, tops);
    pcb.set_apic_id(apic_id);
    publish(pcb);
    pcb
}

/// Heap bytes one processor's PCB and stacks take (for the heap estimate),
/// with room for the allocator's alignment.
pub const PER_CPU_BYTES: u64 = (core::mem::size_of::<Pcb>() + KERNEL_STACK_SIZE + 3 * IST_STACK_SIZE + 8192) as u64;

/// A CPU that INIT reset and an OS's SIPI sent back through the trampoline
/// (SVM's OS guest): its TSS descriptor is still marked busy from the first
/// LTR, which LTR refuses (#GP; SDM Vol. 3A §7.2.2 "TSS Descriptor"), so the
/// busy bit is cleared, then the PCB activated again.
pub fn reactivate(pcb: &'static Pcb) -> &'static Pcb {
    const TSS_BUSY: u64 = 1 << 41;
    let descriptor = pcb.gdt.entries().as_ptr() as *mut u64;
    // SAFETY: the GDT is this CPU's own, in its 'static PCB; entry KERNEL_TR >> 3
    // is the low half of its TSS descriptor, and only the CPU itself (through
    // LTR) writes the busy bit, which no other CPU reads.
    unsafe {
        let entry = descriptor.add((KERNEL_TR >> 3) as usize);
        entry.write_volatile(entry.read_volatile() & !TSS_BUSY);
    }
    activate(pcb)
}

/// On the CPU the PCB belongs to: load its GDT, TSS and IDT, point GS at it,
/// and fill in what only this CPU can tell (CPUID). Touches nothing shared.
pub fn activate(pcb: &'static Pcb) -> &'static Pcb {
    // SAFETY: the GDT, TSS and IDT are 'static and never change after this (the
    // CPU itself sets the TSS busy bit); the selectors index the descriptors
    // `build` appended; GS base then points at the PCB.
    unsafe {
        pcb.gdt.load_unsafe();
        CS::set_reg(SegmentSelector::new(KERNEL_CS >> 3, PrivilegeLevel::Ring0));
        let ds = SegmentSelector::new(KERNEL_DS >> 3, PrivilegeLevel::Ring0);
        SS::set_reg(ds);
        DS::set_reg(ds);
        ES::set_reg(ds);
        load_tss(SegmentSelector::new(KERNEL_TR >> 3, PrivilegeLevel::Ring0));
        pcb.idt.load();
        x86::msr::wrmsr(x86::msr::IA32_GS_BASE, pcb.base as u64);
    }
    let leaf1 = raw_cpuid::cpuid!(1);
    let mut own = pcb.own();
    own.initial_apic_id = leaf1.ebx >> 24;
    own.feature_ecx = leaf1.ecx;
    own.feature_edx = leaf1.edx;
    own.maxphyaddr = raw_cpuid::cpuid!(0x8000_0008).eax & 0xff;
    // CR4.MCE: without it a machine check shuts the processor down (SDM Vol. 3A
    // §6.15 "Exception and Interrupt Reference", interrupt 18) instead of
    // reaching the #MC handler.
    if leaf1.edx & CPUID_01_EDX_MCE != 0 {
        // SAFETY: CPUID says the CPU has machine-check exceptions, so the bit exists.
        unsafe { x86_64::registers::control::Cr4::write_raw(x86_64::registers::control::Cr4::read_raw() | CR4_MCE) };
    }
    drop(own);
    pcb
}
