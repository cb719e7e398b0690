//! This process's effective Linux capabilities, read from `/proc/self/status`: the agent
//! needs `CAP_DAC_READ_SEARCH` to read every volume, restore-init `CAP_CHOWN` to restore
//! owners, when they do not run as uid 0.

/// `CAP_CHOWN`.
pub const CHOWN: u32 = 0;
/// `CAP_DAC_READ_SEARCH`.
pub const DAC_READ_SEARCH: u32 = 2;

/// Whether uid 0, or the capability numbered `bit` is in the effective set.
pub fn root_or(bit: u32) -> bool {
    nix::unistd::geteuid().is_root()
        || std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .is_some_and(|caps| caps & (1 << bit) != 0)
}
