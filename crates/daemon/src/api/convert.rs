//! The daemon's records as the API types of `ironclaw-api`: `From` for the
//! daemon's own views, functions for the store's and the guest's records
//! (the orphan rule allows no `From` between two other crates' types).

use ironclaw_api as api;

use crate::error::ApiError;

impl From<crate::manager::SandboxView> for api::Sandbox {
    fn from(v: crate::manager::SandboxView) -> Self {
        api::Sandbox {
            name: v.name,
            owner: v.owner,
            state: sandbox_state(v.state),
            backend: v.backend,
            image: v.image,
            vcpus: v.vcpus,
            memory_mib: v.memory_mib,
            disk_mib: v.disk_mib,
            disk_used_bytes: v.disk_used_bytes,
            created_at: v.created_at,
            started_at: v.started_at,
            state_reason: v.state_reason,
            pid: v.pid,
            mounts: v
                .mounts
                .into_iter()
                .map(|m| api::Mount {
                    host: m.host,
                    guest: m.guest,
                    read_only: m.read_only,
                })
                .collect(),
            network: v.network,
            address: v.address.map(|a| a.to_string()),
            egress: egress(&v.egress),
            network_name: v.network_name,
            exposures: v.exposures.into_iter().map(Into::into).collect(),
        }
    }
}

pub fn sandbox_state(s: ironclaw_store::SandboxState) -> api::SandboxState {
    use ironclaw_store::SandboxState as S;
    match s {
        S::Creating => api::SandboxState::Creating,
        S::Running => api::SandboxState::Running,
        S::Stopped => api::SandboxState::Stopped,
        S::Crashed => api::SandboxState::Crashed,
        S::Error => api::SandboxState::Error,
    }
}

pub fn egress(p: &ironclaw_net::EgressPolicy) -> api::Egress {
    api::Egress {
        allow_all: p.allow_all,
        allow_domains: p.allow_domains.clone(),
        allow_cidrs: p.allow_cidrs.iter().map(|c| c.to_string()).collect(),
        deny_cidrs: p.deny_cidrs.iter().map(|c| c.to_string()).collect(),
    }
}

/// A request body of the API as the daemon's own type of the same JSON
/// shape, which checks more (CIDRs, enums): its errors read as a body the
/// JSON extractor refused.
pub fn reparse<A: serde::Serialize, B: serde::de::DeserializeOwned>(a: &A) -> Result<B, ApiError> {
    let v = serde_json::to_value(a).map_err(|e| ApiError::Internal(e.to_string()))?;
    serde_json::from_value(v).map_err(|e| {
        ApiError::BadRequest(format!(
            "Failed to deserialize the JSON body into the target type: {e}"
        ))
    })
}

impl From<crate::exposure::ExposureView> for api::Exposure {
    fn from(e: crate::exposure::ExposureView) -> Self {
        api::Exposure {
            port: e.port,
            public: e.public,
            url: e.url,
        }
    }
}

pub fn user(u: ironclaw_store::User, usage: Option<api::Usage>) -> api::User {
    api::User {
        name: u.name,
        admin: u.admin,
        created_at: u.created_at,
        tokens: u.tokens,
        usage,
    }
}

pub fn usage(u: ironclaw_store::UsageTotals) -> api::Usage {
    api::Usage {
        turns: u.turns,
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cache_read_tokens: u.cache_read_tokens,
        cache_write_tokens: u.cache_write_tokens,
        cost_usd: u.cost_usd,
    }
}

pub fn token(t: ironclaw_store::TokenInfo) -> api::Token {
    api::Token {
        id: t.id,
        user: t.user,
        label: t.label,
        created_at: t.created_at,
    }
}

pub fn ssh_key(k: &ironclaw_store::SshKey) -> api::SshKey {
    api::SshKey {
        id: k.id.clone(),
        user: k.user.clone(),
        fingerprint: k.fingerprint.clone(),
        algorithm: k.algorithm.clone(),
        label: k.label.clone(),
        created_at: k.created_at.clone(),
    }
}

pub fn session(s: ironclaw_store::SessionRecord) -> api::Session {
    api::Session {
        id: s.id,
        user: s.user,
        agent: s.agent,
        title: s.title,
        created_at: s.created_at,
        updated_at: s.updated_at,
        messages: s.messages,
    }
}

pub fn message(m: ironclaw_store::MessageRecord) -> api::Message {
    api::Message {
        id: m.id,
        session_id: m.session_id,
        role: m.role,
        content: m.content,
        summarized_by: m.summarized_by,
        created_at: m.created_at,
    }
}

pub fn task_run(r: ironclaw_store::TaskRunRecord) -> api::TaskRun {
    api::TaskRun {
        id: r.id,
        task_id: r.task_id,
        slot: r.slot,
        state: r.state,
        result: r.result,
        error: r.error,
        started_at: r.started_at,
        finished_at: r.finished_at,
    }
}

impl From<crate::tasks::TaskView> for api::Task {
    fn from(t: crate::tasks::TaskView) -> Self {
        api::Task {
            name: t.name,
            owner: t.owner,
            prompt: t.prompt,
            at: t.at,
            every: t.every,
            cron: t.cron,
            tz: t.tz,
            next_run: t.next_run,
            created_at: t.created_at,
            last_run: t.last_run.map(task_run),
            deliver_to: t.deliver_to.map(|d| api::TaskDelivery {
                channel: d.channel,
                chat: d.chat,
                thread: d.thread,
            }),
        }
    }
}

impl From<crate::channels::ChannelView> for api::Channel {
    fn from(c: crate::channels::ChannelView) -> Self {
        api::Channel {
            name: c.name,
            kind: c.kind,
            owner: c.owner,
            settings: c.settings,
            running: c.running,
            connected: c.connected,
            last_error: c.last_error,
            queue_depth: c.queue_depth,
            created_at: c.created_at,
        }
    }
}

pub fn pairing(p: ironclaw_store::Pairing) -> api::Pairing {
    api::Pairing {
        channel: p.channel,
        sender: p.sender,
        code: p.code,
        user: p.user,
        created_at: p.created_at,
    }
}

pub fn search_mode(m: ironclaw_memory::SearchMode) -> api::SearchMode {
    use ironclaw_memory::SearchMode as M;
    match m {
        M::Hybrid => api::SearchMode::Hybrid,
        M::Text => api::SearchMode::Text,
        M::Vector => api::SearchMode::Vector,
    }
}

impl From<crate::memory::MemoryStatus> for api::MemoryStatus {
    fn from(s: crate::memory::MemoryStatus) -> Self {
        api::MemoryStatus {
            user: s.user,
            embedder: s.embedder,
            mode: search_mode(s.mode),
            fallback: s.fallback,
            files: s.files as u64,
            chunks: s.chunks as u64,
            with_vectors: s.with_vectors as u64,
            paths: s.paths,
            weights: api::MemoryWeights {
                vector: s.weights.vector,
                text: s.weights.text,
            },
        }
    }
}

impl From<crate::memory::SearchView> for api::MemorySearch {
    fn from(s: crate::memory::SearchView) -> Self {
        api::MemorySearch {
            user: s.user,
            mode: search_mode(s.result.mode),
            fallback: s.result.fallback,
            hits: s
                .result
                .hits
                .into_iter()
                .map(|h| api::MemoryHit {
                    path: h.path,
                    start_line: h.start_line as u64,
                    end_line: h.end_line as u64,
                    snippet: h.snippet,
                    score: h.score,
                })
                .collect(),
        }
    }
}

impl From<crate::memory::ReindexReport> for api::MemoryReindex {
    fn from(r: crate::memory::ReindexReport) -> Self {
        api::MemoryReindex {
            user: r.user,
            files: r.files as u64,
            indexed: r.indexed as u64,
            unchanged: r.unchanged as u64,
            skipped: r.skipped as u64,
            removed: r.removed as u64,
            embedded: r.embedded as u64,
            problems: r.problems,
            note: r.note,
        }
    }
}

pub fn file_kind(k: ironclaw_sandbox::types::FileKind) -> api::FileKind {
    use ironclaw_sandbox::types::FileKind as K;
    match k {
        K::File => api::FileKind::File,
        K::Dir => api::FileKind::Dir,
        K::Symlink => api::FileKind::Symlink,
        K::Other => api::FileKind::Other,
    }
}

pub fn file_stat(s: &ironclaw_sandbox::types::FileStat) -> api::FileStat {
    api::FileStat {
        path: s.path.clone(),
        kind: file_kind(s.kind),
        size: s.size,
        mode: s.mode,
        mtime: s.mtime,
    }
}

pub fn dir_entry(e: &ironclaw_sandbox::types::DirEntry) -> api::DirEntry {
    api::DirEntry {
        name: e.name.clone(),
        kind: file_kind(e.kind),
        size: e.size,
        mode: e.mode,
        mtime: e.mtime,
    }
}

pub fn guest_info(i: ironclaw_sandbox::types::GuestInfo) -> api::GuestInfo {
    api::GuestInfo {
        agent_version: i.agent_version,
        protocol_version: i.protocol_version,
        hostname: i.hostname,
        kernel: i.kernel,
        uptime_ms: i.uptime_ms,
        cpus: i.cpus,
        mem_total_bytes: i.mem_total_bytes,
        mem_used_bytes: i.mem_used_bytes,
        disk_total_bytes: i.disk_total_bytes,
        disk_used_bytes: i.disk_used_bytes,
        pid1: i.pid1,
    }
}
