//! Host uid/gid ranges of namespace sandboxes' user namespaces.
//!
//! Every sandbox owns a block of [`IDS_PER_SANDBOX`] host ids starting at
//! [`host_base`] of its slot (the store allocates slots). Root inside is
//! the block's first id on the host: an unprivileged uid that owns nothing
//! outside the sandbox. Blocks start at [`FIRST_HOST_ID`], far above the
//! ranges `useradd` and `/etc/subuid` hand out.

/// Ids in one sandbox's block: uid 0-65535 inside, as in a normal container.
pub const IDS_PER_SANDBOX: u32 = ironclaw_proto::IDS_PER_SANDBOX;
/// The first host id of slot 0.
pub const FIRST_HOST_ID: u32 = 1 << 30;
/// Slots that fit below u32::MAX (the kernel reserves (uid_t)-1).
pub const MAX_SLOTS: u32 = (u32::MAX - FIRST_HOST_ID) / IDS_PER_SANDBOX;

/// The first host uid/gid of `slot`'s block.
pub fn host_base(slot: u32) -> u32 {
    FIRST_HOST_ID + slot.min(MAX_SLOTS - 1) * IDS_PER_SANDBOX
}

/// Whether a host uid/gid belongs to some sandbox's block.
pub fn is_sandbox_id(host_id: u32) -> bool {
    host_id >= FIRST_HOST_ID
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_do_not_overlap_and_stay_below_the_reserved_id() {
        assert_eq!(host_base(0), 1 << 30);
        assert_eq!(host_base(1) - host_base(0), IDS_PER_SANDBOX);
        let last = host_base(MAX_SLOTS - 1) as u64 + IDS_PER_SANDBOX as u64 - 1;
        assert!(last < u32::MAX as u64);
        assert!(is_sandbox_id(host_base(3)) && !is_sandbox_id(1000));
    }
}
