//! What the host's VM image builder and the guest's initramfs stage agree
//! on: where the module list lives and the benchmark's marker line. The
//! kernel command line words (`ironclaw.transport=` and friends) are read
//! by the guest alone and documented there.

/// Path inside the initramfs (no leading `/`) of the module load order:
/// module names, one a line. Its presence marks an IronClaw initramfs.
pub const MODULE_ORDER: &str = "lib/modules/ironclaw.order";

/// Printed on the console instead of starting the agent when the command
/// line holds `ironclaw.marker=1`: the boot benchmark's reference point.
pub const BOOT_MARKER: &str = "IRONCLAW-REF-BOOTED";
