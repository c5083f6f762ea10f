//! Who may log in where: a key reaches only its owner's sandboxes. The SSH
//! user name is the sandbox's name, looked up in the key owner's namespace
//! (the admin's keys too: no key reaches another user's sandbox).
//!
//! Every refusal (unknown key, another user's sandbox, no such sandbox) is
//! the same publickey rejection after the same constant delay (russh's
//! `auth_rejection_time`), so nothing tells them apart.

use crate::auth::Target;
use crate::manager::Manager;

/// The sandbox `ssh_user` names for the holder of the key with
/// `fingerprint`; `None` for every kind of refusal.
pub fn authorize(manager: &Manager, ssh_user: &str, fingerprint: &str) -> Option<Target> {
    let key = match manager.store.ssh_key_by_fingerprint(fingerprint) {
        Ok(Some(k)) => k,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!("ssh: looking up a key: {e}");
            return None;
        }
    };
    // Names are validated on create, so anything else cannot exist.
    ironclaw_sandbox::name::validate(ssh_user).ok()?;
    let r = manager.store.sandbox(&key.user, ssh_user).ok()?;
    Some(Target {
        id: r.id,
        name: r.name,
        owner: r.owner,
    })
}
