//! VM-instruction error numbers, read from the VM-instruction error field
//! (VMCS encoding 0x4400) after a VMX instruction fails with VMfailValid.
//! SDM Vol. 3C §31.4 "VM Instruction Error Numbers", Table 31-1
//! "VM-Instruction Error Numbers".
//! Numbers 14, 21 and 27 are not assigned in that table.

/// Description of a VM-instruction error number (SDM Vol. 3C Table 31-1
/// "VM-Instruction Error Numbers").
pub fn name(error: u32) -> &'static str {
    match error {
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        6 => "VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and VMRESUME)",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        16 => "VM entry with invalid executive-VMCS pointer",
        17 => "VM entry with non-launched executive VMCS",
        18 => {
            "VM entry with executive-VMCS pointer not VMXON pointer \
               (when attempting to deactivate the dual-monitor treatment of SMIs and SMM)"
        }
        19 => {
            "VMCALL with non-clear VMCS \
               (when attempting to activate the dual-monitor treatment of SMIs and SMM)"
        }
        20 => "VMCALL with invalid VM-exit control fields",
        22 => {
            "VMCALL with incorrect MSEG revision identifier \
               (when attempting to activate the dual-monitor treatment of SMIs and SMM)"
        }
        23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
        24 => {
            "VMCALL with invalid SMM-monitor features \
               (when attempting to activate the dual-monitor treatment of SMIs and SMM)"
        }
        25 => {
            "VM entry with invalid VM-execution control fields in executive VMCS \
               (when attempting to return from SMM)"
        }
        26 => "VM entry with events blocked by MOV SS",
        28 => "invalid operand to INVEPT/INVVPID",
        _ => "unknown VM-instruction error",
    }
}

#[cfg(test)]
mod tests {
    use super::name;

    #[test]
    fn known_errors() {
        assert_eq!(name(7), "VM entry with invalid control field(s)");
        assert_eq!(name(8), "VM entry with invalid host-state field(s)");
        assert_eq!(name(15), "VMXON executed in VMX root operation");
        assert_eq!(name(1), "VMCALL executed in VMX root operation");
        assert_eq!(name(26), "VM entry with events blocked by MOV SS");
        assert_eq!(name(28), "invalid operand to INVEPT/INVVPID");
    }

    #[test]
    fn unassigned_and_out_of_range() {
        for e in [0u32, 14, 21, 27, 29, 0xffff_ffff] {
            assert_eq!(name(e), "unknown VM-instruction error", "error {e}");
        }
    }

    #[test]
    fn line_continuations_do_not_leave_runs_of_spaces() {
        for e in 1..=28 {
            assert!(!name(e).contains("  "), "error {e}: {:?}", name(e));
        }
    }
}
