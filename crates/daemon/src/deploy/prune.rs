//! Old releases off the sandbox's disk: after each release only the
//! newest `deploy_keep_releases` release directories stay in
//! `/app/releases`, plus the live one and the one a rollback would switch
//! to. Their rows stay in the store (history); a rollback skips releases
//! whose directory is gone.

use std::collections::BTreeSet;
use std::time::Duration;

use ironclaw_sandbox::agent::AgentClient;
use ironclaw_store::{ReleaseRecord, ReleaseStatus};

use super::supervisor::{self, quote, release_dir};

const RELEASES: &str = "/app/releases";

/// Release numbers to keep on disk out of `all` (ordered by number).
pub fn keep(all: &[ReleaseRecord], n: usize) -> BTreeSet<u32> {
    let mut keep: BTreeSet<u32> = all.iter().rev().take(n).map(|r| r.number).collect();
    if let Some(live) = all.iter().find(|r| r.status == ReleaseStatus::Live) {
        keep.insert(live.number);
        if let Some(back) = candidates(all, live.number).next() {
            keep.insert(back.number);
        }
    }
    keep
}

/// Releases a rollback from `live` may switch to, best first.
pub fn candidates(all: &[ReleaseRecord], live: u32) -> impl Iterator<Item = &ReleaseRecord> {
    all.iter()
        .rev()
        .filter(move |r| r.number < live && r.status == ReleaseStatus::Superseded)
}

/// The release a rollback from `live` switches to: the newest good one
/// before it whose directory is still on disk.
pub async fn rollback_target(
    agent: &AgentClient,
    all: &[ReleaseRecord],
    live: u32,
) -> Option<ReleaseRecord> {
    for r in candidates(all, live) {
        if agent.stat(&release_dir(r.number)).await.is_ok() {
            return Some(r.clone());
        }
    }
    None
}

/// Remove the release directories not kept; returns the numbers removed.
pub async fn prune(
    agent: &AgentClient,
    all: &[ReleaseRecord],
    n: usize,
) -> Result<Vec<u32>, String> {
    let keep = keep(all, n);
    let newest = all.last().map_or(0, |r| r.number);
    let on_disk = agent
        .list(RELEASES)
        .await
        .map_err(|e| format!("listing {RELEASES}: {e}"))?;
    // Only directories named by a release number this sandbox has had: a
    // newer one would be a release being built.
    let gone: Vec<u32> = on_disk
        .iter()
        .filter_map(|e| e.name.parse::<u32>().ok())
        .filter(|n| *n <= newest && !keep.contains(n))
        .collect();
    if gone.is_empty() {
        return Ok(gone);
    }
    let dirs: Vec<String> = gone.iter().map(|n| quote(&release_dir(*n))).collect();
    let o = supervisor::sh(
        agent,
        &format!("rm -rf {}", dirs.join(" ")),
        None,
        Duration::from_secs(120),
    )
    .await?;
    if o.status.code != 0 {
        return Err(format!(
            "removing old releases: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(number: u32, status: ReleaseStatus) -> ReleaseRecord {
        ReleaseRecord {
            sandbox_id: "s".into(),
            number,
            commit_sha: "c".into(),
            status,
            port: 20000 + number as u16,
            web: String::new(),
            log_tail: String::new(),
            created_at: String::new(),
        }
    }

    #[test]
    fn keeps_the_newest_the_live_one_and_the_rollback_target() {
        use ReleaseStatus::*;
        let mut all: Vec<_> = (1..=9).map(|n| rel(n, Failed)).collect();
        all[1].status = Superseded; // 2: the rollback target
        all[2].status = Live; // 3
        let k = keep(&all, 3);
        assert_eq!(k.into_iter().collect::<Vec<_>>(), vec![2, 3, 7, 8, 9]);
        // Nothing live (only failures): the newest.
        let all: Vec<_> = (1..=4).map(|n| rel(n, Failed)).collect();
        assert_eq!(keep(&all, 2).into_iter().collect::<Vec<_>>(), vec![3, 4]);
    }
}
