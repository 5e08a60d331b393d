//! A guest's general registers as the backends' entry code saves them: RSP
//! (and on SVM, RAX) live in the VMCS or VMCB, not here.

/// The guest's general registers, in the order the exit stubs push them
/// (lowest address first; the register numbering of the instruction
/// encoding, RSP excepted: SDM Vol. 3C Table 28-3 "Exit Qualification for
/// Control-Register Accesses").
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct GuestRegs {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

impl GuestRegs {
    /// Register `n` (0 RAX ... 15 R15) but RSP (4), which the caller reads
    /// from its VMCS or VMCB.
    pub fn gpr(&self, n: u8) -> u64 {
        debug_assert_ne!(n, 4, "RSP lives in the VMCS or VMCB");
        self.as_array()[Self::index(n)]
    }

    pub fn set_gpr(&mut self, n: u8, value: u64) {
        debug_assert_ne!(n, 4, "RSP lives in the VMCS or VMCB");
        let mut all = self.as_array();
        all[Self::index(n)] = value;
        *self = Self::from_array(all);
    }

    fn index(n: u8) -> usize {
        (if n > 4 { n - 1 } else { n } as usize).min(14)
    }

    fn as_array(&self) -> [u64; 15] {
        let r = self;
        [r.rax, r.rcx, r.rdx, r.rbx, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15]
    }

    fn from_array(a: [u64; 15]) -> GuestRegs {
        let [rax, rcx, rdx, rbx, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15] = a;
        GuestRegs { rax, rcx, rdx, rbx, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15 }
    }
}
