//! SDM Vol. 3C §27.3.1.2 "Checks on Guest Segment Registers": selectors,
//! bases, limits and access rights, per mode (virtual-8086, protected,
//! IA-32e; unrestricted guest). A failure is a VM exit with reason 33.
//! Access-rights format: SDM Vol. 3C §25.4.1 "Guest Register State", Table
//! 25-2 "Format of Access Rights" (type 3:0, S 4, DPL 6:5, P 7, L 13, D/B
//! 14, G 15, unusable 16).

use super::fields::enc;
use super::{rule_def, Ctx, Out, Rule, SEC_GUEST_SEGMENTS as SEC};

rule_def!(TR_TI, "guest.tr.ti", SEC, Guest, "The TI flag (bit 2) of the guest TR selector must be 0");
rule_def!(LDTR_TI, "guest.ldtr.ti", SEC, Guest, "If LDTR is usable, the TI flag (bit 2) of its selector must be 0");
rule_def!(
    SS_RPL,
    "guest.ss.rpl",
    SEC,
    Guest,
    "Outside virtual-8086 mode and without unrestricted guest, the SS selector's RPL must equal the CS selector's RPL"
);
rule_def!(
    V86_BASE,
    "guest.v8086.base",
    SEC,
    Guest,
    "In virtual-8086 mode, the CS, SS, DS, ES, FS and GS bases must be the selector shifted left 4 bits"
);
rule_def!(
    BASE_CANONICAL,
    "guest.base.canonical",
    SEC,
    Guest,
    "The guest TR, FS and GS bases (and LDTR's, if usable) must be canonical"
);
rule_def!(
    BASE_HIGH,
    "guest.base.high",
    SEC,
    Guest,
    "Bits 63:32 of the guest CS base (and of SS, DS and ES, if usable) must be 0"
);
rule_def!(
    V86_LIMIT,
    "guest.v8086.limit",
    SEC,
    Guest,
    "In virtual-8086 mode, the CS, SS, DS, ES, FS and GS limits must be 0000FFFFH"
);
rule_def!(
    V86_AR,
    "guest.v8086.access_rights",
    SEC,
    Guest,
    "In virtual-8086 mode, the CS, SS, DS, ES, FS and GS access rights must be 000000F3H"
);
rule_def!(
    CS_TYPE,
    "guest.cs.type",
    SEC,
    Guest,
    "The CS type must be 9, 11, 13 or 15 (accessed code), or 3 (accessed read/write data) with unrestricted guest"
);
rule_def!(SS_TYPE, "guest.ss.type", SEC, Guest, "If SS is usable, its type must be 3 or 7 (accessed read/write data)");
rule_def!(
    DATA_TYPE,
    "guest.data.type",
    SEC,
    Guest,
    "A usable DS, ES, FS or GS must have type bit 0 (accessed) 1, and a code segment must be readable"
);
rule_def!(SEG_S, "guest.segment.s", SEC, Guest, "CS and every usable SS, DS, ES, FS, GS must have S (bit 4) 1");
rule_def!(CS_DPL, "guest.cs.dpl", SEC, Guest,
    "CS DPL must be 0 for type 3, equal SS DPL for non-conforming code (9, 11), and not exceed SS DPL for conforming code (13, 15)");
rule_def!(
    SS_DPL_RPL,
    "guest.ss.dpl_rpl",
    SEC,
    Guest,
    "Without unrestricted guest, SS DPL must equal the SS selector's RPL"
);
rule_def!(SS_DPL_ZERO, "guest.ss.dpl_zero", SEC, Guest, "SS DPL must be 0 if the CS type is 3 or guest CR0.PE is 0");
rule_def!(
    DATA_DPL,
    "guest.data.dpl",
    SEC,
    Guest,
    "Without unrestricted guest, a usable DS, ES, FS or GS of type 0-11 must have DPL not less than its selector's RPL"
);
rule_def!(SEG_P, "guest.segment.p", SEC, Guest, "CS and every usable SS, DS, ES, FS, GS must have P (bit 7) 1");
rule_def!(
    SEG_RESERVED,
    "guest.segment.reserved",
    SEC,
    Guest,
    "CS and every usable SS, DS, ES, FS, GS must have access-rights bits 11:8 and 31:17 0"
);
rule_def!(CS_DB_L, "guest.cs.db_with_l", SEC, Guest, "For an IA-32e mode guest with CS.L 1, CS.D/B must be 0");
rule_def!(SEG_G, "guest.segment.granularity", SEC, Guest,
    "For CS and every usable SS, DS, ES, FS, GS: G must be 0 if any limit bit 11:0 is 0, and 1 if any limit bit 31:20 is 1");
rule_def!(
    TR_TYPE,
    "guest.tr.type",
    SEC,
    Guest,
    "The TR type must be 11 (busy 64-bit TSS) for an IA-32e mode guest, else 3 or 11 (busy 16/32-bit TSS)"
);
rule_def!(TR_S, "guest.tr.s", SEC, Guest, "TR S (bit 4) must be 0");
rule_def!(TR_P, "guest.tr.p", SEC, Guest, "TR P (bit 7) must be 1");
rule_def!(TR_RESERVED, "guest.tr.reserved", SEC, Guest, "TR access-rights bits 11:8 and 31:17 must be 0");
rule_def!(
    TR_G,
    "guest.tr.granularity",
    SEC,
    Guest,
    "TR G must be 0 if any limit bit 11:0 is 0, and 1 if any limit bit 31:20 is 1"
);
rule_def!(TR_UNUSABLE, "guest.tr.unusable", SEC, Guest, "TR must be usable (access-rights bit 16 0)");
rule_def!(LDTR_TYPE, "guest.ldtr.type", SEC, Guest, "If LDTR is usable, its type must be 2 (LDT)");
rule_def!(LDTR_S, "guest.ldtr.s", SEC, Guest, "If LDTR is usable, S (bit 4) must be 0");
rule_def!(LDTR_P, "guest.ldtr.p", SEC, Guest, "If LDTR is usable, P (bit 7) must be 1");
rule_def!(
    LDTR_RESERVED,
    "guest.ldtr.reserved",
    SEC,
    Guest,
    "If LDTR is usable, access-rights bits 11:8 and 31:17 must be 0"
);
rule_def!(
    LDTR_G,
    "guest.ldtr.granularity",
    SEC,
    Guest,
    "If LDTR is usable: G must be 0 if any limit bit 11:0 is 0, and 1 if any limit bit 31:20 is 1"
);

pub static RULES: &[&Rule] = &[
    &TR_TI,
    &LDTR_TI,
    &SS_RPL,
    &V86_BASE,
    &BASE_CANONICAL,
    &BASE_HIGH,
    &V86_LIMIT,
    &V86_AR,
    &CS_TYPE,
    &SS_TYPE,
    &DATA_TYPE,
    &SEG_S,
    &CS_DPL,
    &SS_DPL_RPL,
    &SS_DPL_ZERO,
    &DATA_DPL,
    &SEG_P,
    &SEG_RESERVED,
    &CS_DB_L,
    &SEG_G,
    &TR_TYPE,
    &TR_S,
    &TR_P,
    &TR_RESERVED,
    &TR_G,
    &TR_UNUSABLE,
    &LDTR_TYPE,
    &LDTR_S,
    &LDTR_P,
    &LDTR_RESERVED,
    &LDTR_G,
];

/// RFLAGS.VM (bit 17): the guest will be in virtual-8086 mode.
pub const RFLAGS_VM: u64 = 1 << 17;
pub const AR_UNUSABLE: u64 = 1 << 16;

/// One guest segment register's fields.
#[derive(Clone, Copy)]
pub struct Seg {
    pub name: &'static str,
    pub selector: u64,
    pub base: u64,
    pub limit: u64,
    pub ar: u64,
}

impl Seg {
    pub(crate) fn read(c: &Ctx, name: &'static str, sel: u32, base: u32, limit: u32, ar: u32) -> Seg {
        Seg { name, selector: c.get(sel), base: c.get(base), limit: c.get(limit), ar: c.get(ar) }
    }
    pub fn usable(&self) -> bool {
        self.ar & AR_UNUSABLE == 0
    }
    pub fn kind(&self) -> u64 {
        self.ar & 0xf
    }
    pub fn s(&self) -> bool {
        self.ar & (1 << 4) != 0
    }
    pub fn dpl(&self) -> u64 {
        (self.ar >> 5) & 3
    }
    pub fn p(&self) -> bool {
        self.ar & (1 << 7) != 0
    }
    pub fn rpl(&self) -> u64 {
        self.selector & 3
    }
    pub fn reserved_clear(&self) -> bool {
        self.ar & 0xf00 == 0 && self.ar & 0xfffe_0000 == 0
    }
    /// The limit/G consistency (a limit with bits 11:0 not all 1 needs G 0;
    /// one with any of bits 31:20 set needs G 1).
    pub fn granularity_ok(&self) -> bool {
        let g = self.ar & (1 << 15) != 0;
        (self.limit & 0xfff == 0xfff || !g) && (self.limit & 0xfff0_0000 == 0 || g)
    }
}

pub(crate) fn check(c: &Ctx, out: &mut Out<'_>) {
    use enc::*;
    let cs = Seg::read(c, "CS", GUEST_CS_SELECTOR, GUEST_CS_BASE, GUEST_CS_LIMIT, GUEST_CS_AR);
    let ss = Seg::read(c, "SS", GUEST_SS_SELECTOR, GUEST_SS_BASE, GUEST_SS_LIMIT, GUEST_SS_AR);
    let ds = Seg::read(c, "DS", GUEST_DS_SELECTOR, GUEST_DS_BASE, GUEST_DS_LIMIT, GUEST_DS_AR);
    let es = Seg::read(c, "ES", GUEST_ES_SELECTOR, GUEST_ES_BASE, GUEST_ES_LIMIT, GUEST_ES_AR);
    let fs = Seg::read(c, "FS", GUEST_FS_SELECTOR, GUEST_FS_BASE, GUEST_FS_LIMIT, GUEST_FS_AR);
    let gs = Seg::read(c, "GS", GUEST_GS_SELECTOR, GUEST_GS_BASE, GUEST_GS_LIMIT, GUEST_GS_AR);
    let tr = Seg::read(c, "TR", GUEST_TR_SELECTOR, GUEST_TR_BASE, GUEST_TR_LIMIT, GUEST_TR_AR);
    let ldtr = Seg::read(c, "LDTR", GUEST_LDTR_SELECTOR, GUEST_LDTR_BASE, GUEST_LDTR_LIMIT, GUEST_LDTR_AR);
    let v86 = c.get(GUEST_RFLAGS) & RFLAGS_VM != 0;
    let ug = c.unrestricted_guest();
    let ia32e = c.ia32e_guest();
    let pe = c.get(GUEST_CR0) & 1 != 0;
    let six = [cs, ss, ds, es, fs, gs];
    let data = [ds, es, fs, gs];

    // Selectors.
    out.check(tr.selector & 4 == 0, &TR_TI, "");
    if ldtr.usable() {
        out.check(ldtr.selector & 4 == 0, &LDTR_TI, "");
    }
    if !v86 && !ug {
        out.check(ss.rpl() == cs.rpl(), &SS_RPL, "");
    }

    // Bases.
    if v86 {
        for s in six {
            out.check(s.base == (s.selector & 0xffff) << 4, &V86_BASE, s.name);
        }
    }
    for s in [tr, fs, gs] {
        out.check(c.canonical(s.base), &BASE_CANONICAL, s.name);
    }
    if ldtr.usable() {
        out.check(c.canonical(ldtr.base), &BASE_CANONICAL, "LDTR");
    }
    out.check(cs.base >> 32 == 0, &BASE_HIGH, "CS");
    for s in [ss, ds, es] {
        if s.usable() {
            out.check(s.base >> 32 == 0, &BASE_HIGH, s.name);
        }
    }

    if v86 {
        for s in six {
            out.check(s.limit == 0xffff, &V86_LIMIT, s.name);
        }
        for s in six {
            out.check(s.ar == 0xf3, &V86_AR, s.name);
        }
    } else {
        // Types.
        let cs_type_ok = matches!(cs.kind(), 9 | 11 | 13 | 15) || (ug && cs.kind() == 3);
        out.check(cs_type_ok, &CS_TYPE, "");
        if ss.usable() {
            out.check(matches!(ss.kind(), 3 | 7), &SS_TYPE, "");
        }
        for s in data {
            if s.usable() {
                let t = s.kind();
                out.check(t & 1 != 0 && (t & 8 == 0 || t & 2 != 0), &DATA_TYPE, s.name);
            }
        }
        // S.
        for s in six {
            if s.name == "CS" || s.usable() {
                out.check(s.s(), &SEG_S, s.name);
            }
        }
        // DPL.
        let cs_dpl_ok = match cs.kind() {
            3 => cs.dpl() == 0,
            9 | 11 => cs.dpl() == ss.dpl(),
            13 | 15 => cs.dpl() <= ss.dpl(),
            _ => true,
        };
        out.check(cs_dpl_ok, &CS_DPL, "");
        if !ug {
            out.check(ss.dpl() == ss.rpl(), &SS_DPL_RPL, "");
        }
        if cs.kind() == 3 || !pe {
            out.check(ss.dpl() == 0, &SS_DPL_ZERO, "");
        }
        if !ug {
            for s in data {
                if s.usable() && s.kind() <= 11 {
                    out.check(s.dpl() >= s.rpl(), &DATA_DPL, s.name);
                }
            }
        }
        for s in six {
            if s.name == "CS" || s.usable() {
                out.check(s.p(), &SEG_P, s.name);
                out.check(s.reserved_clear(), &SEG_RESERVED, s.name);
            }
        }
        if ia32e && cs.ar & (1 << 13) != 0 {
            out.check(cs.ar & (1 << 14) == 0, &CS_DB_L, "");
        }
        for s in six {
            if s.name == "CS" || s.usable() {
                out.check(s.granularity_ok(), &SEG_G, s.name);
            }
        }
    }

    // TR.
    out.check(if ia32e { tr.kind() == 11 } else { matches!(tr.kind(), 3 | 11) }, &TR_TYPE, "");
    out.check(!tr.s(), &TR_S, "");
    out.check(tr.p(), &TR_P, "");
    out.check(tr.reserved_clear(), &TR_RESERVED, "");
    out.check(tr.granularity_ok(), &TR_G, "");
    out.check(tr.usable(), &TR_UNUSABLE, "");

    // LDTR.
    if ldtr.usable() {
        out.check(ldtr.kind() == 2, &LDTR_TYPE, "");
        out.check(!ldtr.s(), &LDTR_S, "");
        out.check(ldtr.p(), &LDTR_P, "");
        out.check(ldtr.reserved_clear(), &LDTR_RESERVED, "");
        out.check(ldtr.granularity_ok(), &LDTR_G, "");
    }
}
