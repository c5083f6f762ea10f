//! Capabilities: Docker's default set, and nothing can add to it later.

use caps::{CapSet, Capability, CapsHashSet};

use super::ConfineError;

/// Docker's default capability list (moby's `oci/caps/defaults.go`). They
/// hold inside the sandbox's user namespace only; everything the kernel
/// checks against the host's namespaces stays out of reach.
pub const DEFAULT: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

fn caps_err(e: caps::errors::CapsError) -> ConfineError {
    ConfineError::Caps(e.to_string())
}

/// Drop every capability outside [`DEFAULT`] from the bounding, effective
/// and permitted sets, clear the inheritable and ambient sets and set
/// `no_new_privs`, so neither execve of a setuid or file-capability binary
/// nor anything else can gain a capability back. The inheritable set is
/// empty as in runc since CVE-2022-24769: a process that drops to another
/// uid would otherwise keep it, and with it a file-inheritable binary's
/// capabilities.
pub fn restrict() -> Result<(), ConfineError> {
    let keep: CapsHashSet = DEFAULT.iter().copied().collect();
    for cap in caps::runtime::procfs_all_supported(None).unwrap_or_else(|_| caps::all()) {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(caps_err)?;
        }
    }
    // Effective first: it must stay a subset of permitted at every step.
    for set in [CapSet::Effective, CapSet::Permitted] {
        caps::set(None, set, &keep).map_err(caps_err)?;
    }
    // Ambient caps must be in inheritable: cleared first.
    caps::clear(None, CapSet::Ambient).map_err(caps_err)?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_err)?;
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(ConfineError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    Ok(())
}
