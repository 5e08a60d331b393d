//! Which boot module is what: the first word of a module's string names its
//! role (`module2 /boot/vmlinuz linux console=ttyS0` is the kernel with the
//! command line `console=ttyS0`; `module2 /boot/initrd.img initrd` its initrd).

use core::fmt;

/// The OS the boot modules describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OsModules<'a> {
    /// Index of the `linux` module and the Linux command line after the role.
    pub linux: usize,
    pub cmdline: &'a str,
    pub initrd: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleError<'a> {
    /// A module whose first word is not a role this loader knows.
    Unknown {
        index: usize,
        role: &'a str,
    },
    TwoLinux,
    TwoInitrd,
    InitrdWithoutLinux,
}

impl fmt::Display for RoleError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoleError::Unknown { index, role: "" } => {
                write!(f, "module {index} has no role: its string must start with `linux` or `initrd`")
            }
            RoleError::Unknown { index, role } => {
                write!(f, "module {index} has the unknown role `{role}`: the roles are `linux` and `initrd`")
            }
            RoleError::TwoLinux => f.write_str("two `linux` modules: which kernel to boot is ambiguous"),
            RoleError::TwoInitrd => f.write_str("two `initrd` modules: the boot protocol takes one initrd"),
            RoleError::InitrdWithoutLinux => f.write_str("an `initrd` module without a `linux` module"),
        }
    }
}

/// Sort the module strings into an OS to boot: Ok(None) when there is none.
pub fn assign<'a>(strings: impl IntoIterator<Item = &'a str>) -> Result<Option<OsModules<'a>>, RoleError<'a>> {
    let mut linux: Option<(usize, &str)> = None;
    let mut initrd = None;
    for (index, s) in strings.into_iter().enumerate() {
        let s = s.trim_start();
        let (role, rest) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
        match role {
            "linux" if linux.is_some() => return Err(RoleError::TwoLinux),
            "linux" => linux = Some((index, rest.trim())),
            "initrd" if initrd.is_some() => return Err(RoleError::TwoInitrd),
            "initrd" => initrd = Some(index),
            _ => return Err(RoleError::Unknown { index, role }),
        }
    }
    match (linux, initrd) {
        (Some((linux, cmdline)), initrd) => Ok(Some(OsModules { linux, cmdline, initrd })),
        (None, Some(_)) => Err(RoleError::InitrdWithoutLinux),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_the_command_line() {
        assert_eq!(assign([]), Ok(None));
        assert_eq!(
            assign(["linux console=ttyS0,115200 quiet", "initrd"]),
            Ok(Some(OsModules { linux: 0, cmdline: "console=ttyS0,115200 quiet", initrd: Some(1) }))
        );
        assert_eq!(assign(["initrd", "linux"]), Ok(Some(OsModules { linux: 1, cmdline: "", initrd: Some(0) })));
    }

    #[test]
    fn bad_combinations_are_named() {
        assert_eq!(assign(["linux a", "linux b"]), Err(RoleError::TwoLinux));
        assert_eq!(assign(["initrd", "initrd", "linux"]), Err(RoleError::TwoInitrd));
        assert_eq!(assign(["initrd"]), Err(RoleError::InitrdWithoutLinux));
        assert_eq!(assign(["linux", "firmware x"]), Err(RoleError::Unknown { index: 1, role: "firmware" }));
        assert_eq!(assign([""]), Err(RoleError::Unknown { index: 0, role: "" }));
        assert_eq!(
            alloc::format!("{}", RoleError::Unknown { index: 1, role: "firmware" }),
            "module 1 has the unknown role `firmware`: the roles are `linux` and `initrd`"
        );
    }
}
