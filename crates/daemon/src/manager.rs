//! Sandbox lifecycle: create, start, stop, remove, watch for crashes, and
//! reconcile with what is really running when the daemon starts.
//!
//! The store is the record of intent (`desired_running`) and of the last
//! known state; `live` holds the agent connection of each running sandbox.
//! Lifecycle operations on one sandbox are serialised by a per-sandbox lock.
//!
//! A sandbox's name is unique only within its owner's namespace; inside the
//! manager every sandbox is its global `id` (the key of `live`, `locks`,
//! cgroups and directories). Requests name a sandbox by (owner, name),
//! resolved once by [`Manager::get`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironclaw_sandbox::backend::Availability;
use ironclaw_sandbox::firecracker::{FirecrackerBackend, Jailer};
use ironclaw_sandbox::probe::KvmProber;
use ironclaw_sandbox::{
    image, name, process, AgentClient, Backend, BackendKind, NamespaceBackend, Resources, Running,
    SandboxSpec,
};
use ironclaw_store::{now, SandboxRecord, SandboxState, Store};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::ApiError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub name: String,
    pub image: Option<String>,
    pub backend: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_mib: Option<u64>,
    /// Host directories to bind in (namespace backend only), checked
    /// against the daemon's `[[mount_roots]]`.
    #[serde(default)]
    pub mounts: Vec<crate::mounts::MountRequest>,
    /// `internet` (a port on the bridge, egress under `egress`) or `none`
    /// (loopback only); default from the config.
    pub network: Option<String>,
    /// The egress policy; default from the config.
    pub egress: Option<ironclaw_net::EgressPolicy>,
    /// Join this named network of the owner's: its members reach each other.
    pub join: Option<String>,
}

/// A sandbox as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxView {
    pub name: String,
    pub owner: String,
    pub state: SandboxState,
    pub backend: String,
    pub image: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
    pub disk_used_bytes: u64,
    pub created_at: String,
    pub started_at: Option<String>,
    pub state_reason: Option<String>,
    pub pid: Option<i32>,
    pub mounts: Vec<ironclaw_store::SandboxMount>,
    pub network: String,
    /// Its address on the sandbox bridge (with `network: internet`).
    pub address: Option<std::net::Ipv4Addr>,
    pub egress: ironclaw_net::EgressPolicy,
    /// The named network it joined.
    pub network_name: Option<String>,
    // -- exposed ports (issue 9 part 4): see crate::exposure::views
    pub exposures: Vec<crate::exposure::ExposureView>,
}

struct Live {
    running: Running,
    agent: AgentClient,
    /// Distinguishes this run from later ones, so a stale crash watcher
    /// cannot mark a restarted sandbox as crashed.
    generation: u64,
}

pub struct Manager {
    /// Whether KVM guests boot here; shared by the VM backends.
    pub kvm: Arc<KvmProber>,
    pub store: Arc<Store>,
    /// The bridge, nft table, resolver and egress proxies.
    pub net: Arc<ironclaw_net::host::HostNetwork>,
    pub config: Config,
    pub data_dir: PathBuf,
    pub guest_bin: Option<PathBuf>,
    backends: Vec<Arc<dyn Backend>>,
    /// Running sandboxes by id.
    live: Mutex<HashMap<String, Live>>,
    /// Lifecycle locks by sandbox id.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    generation: std::sync::atomic::AtomicU64,
    /// Held while a create checks its owner's quota and inserts the record,
    /// so two creates cannot both take the last unit.
    quota_lock: Mutex<()>,
}

impl Manager {
    pub fn new(
        store: Arc<Store>,
        net: Arc<ironclaw_net::host::HostNetwork>,
        config: Config,
        data_dir: PathBuf,
        guest_bin: Option<PathBuf>,
    ) -> Arc<Self> {
        // One probe, shared by the VM backends; its kernel is the newest in
        // the data dir's kernel cache (fetched by the first image build).
        let kvm = Arc::new(KvmProber::new(
            config.kvm_probe_cache.clone(),
            ironclaw_sandbox::qemu::kernel_source(&data_dir),
        ));
        // Jailed by default when a `jailer` sits next to the binary.
        let mut firecracker = FirecrackerBackend::new(config.firecracker_bin.clone(), kvm.clone())
            .with_jailer_user(config.firecracker_uid, config.firecracker_gid);
        if let Some(bin) = &config.firecracker_jailer {
            firecracker = firecracker.with_jailer(Jailer {
                bin: bin.clone(),
                uid: config.firecracker_uid,
                gid: config.firecracker_gid,
            });
        }
        let backends: Vec<Arc<dyn Backend>> = vec![
            Arc::new(firecracker),
            Arc::new(
                ironclaw_sandbox::qemu::QemuBackend::new(&data_dir, kvm.clone())
                    .with_user(config.qemu_uid, config.qemu_gid),
            ),
            Arc::new(NamespaceBackend::new().with_guest(guest_bin.clone())),
        ];
        Arc::new(Manager {
            kvm,
            net,
            store,
            config,
            data_dir,
            guest_bin,
            backends,
            live: Mutex::default(),
            locks: Mutex::default(),
            generation: Default::default(),
            quota_lock: Mutex::default(),
        })
    }

    pub fn images_dir(&self) -> PathBuf {
        self.data_dir.join("images")
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("sandboxes").join(id)
    }

    /// Doctor's warnings: each VMM that would run as root here.
    pub fn privilege_warnings(&self) -> Vec<String> {
        self.backends
            .iter()
            .filter_map(|b| b.privilege_warning())
            .collect()
    }

    /// Every backend kind with whether it works here.
    pub fn backend_report(&self) -> Vec<(BackendKind, Availability)> {
        BackendKind::ALL
            .iter()
            .map(|k| match self.backends.iter().find(|b| b.kind() == *k) {
                Some(b) => (*k, b.availability()),
                None => (
                    *k,
                    Availability {
                        available: false,
                        reason: "backend not built into this version yet".into(),
                    },
                ),
            })
            .collect()
    }

    /// The best backend that works on this host: Firecracker, then QEMU
    /// when KVM guests boot, else namespaces (QEMU under TCG only when asked).
    pub fn default_backend(&self) -> Option<BackendKind> {
        BackendKind::ALL.into_iter().find(|k| {
            self.backends
                .iter()
                .find(|b| b.kind() == *k)
                .is_some_and(|b| b.default_eligible() && b.availability().available)
        })
    }

    /// The backend of that kind, whether or not it can start sandboxes now
    /// (stopping, listing and removing must work regardless).
    fn backend(&self, kind: &str) -> Result<Arc<dyn Backend>, ApiError> {
        let kind: BackendKind = kind.parse().map_err(ApiError::BadRequest)?;
        self.backends
            .iter()
            .find(|b| b.kind() == kind)
            .cloned()
            .ok_or_else(|| {
                ApiError::Unavailable(format!("backend {kind} is not built into this version yet"))
            })
    }

    /// The backend of that kind if it can start sandboxes on this host.
    /// VM backends need the KVM probe's answer: run it first if nobody has.
    async fn usable_backend(&self, kind: &str) -> Result<Arc<dyn Backend>, ApiError> {
        let b = self.backend(kind)?;
        if b.kind() != BackendKind::Namespace && self.kvm.known().is_none() {
            let kvm = self.kvm.clone();
            let _ = tokio::task::spawn_blocking(move || kvm.get()).await;
        }
        let a = b.availability();
        if !a.available {
            return Err(ApiError::Unavailable(format!(
                "backend {} is not available on this host: {}",
                b.kind(),
                a.reason
            )));
        }
        Ok(b)
    }

    pub(crate) fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    fn spec(&self, r: &SandboxRecord) -> SandboxSpec {
        SandboxSpec {
            id: r.id.clone(),
            name: r.name.clone(),
            image_rootfs: image::rootfs(&self.images_dir(), &r.image),
            dir: self.sandbox_dir(&r.id),
            resources: Resources {
                vcpus: r.vcpus,
                memory_mib: r.memory_mib,
                disk_mib: r.disk_mib,
                pids: r.pids,
            },
            uid_base: ironclaw_sandbox::userns::host_base(r.uid_slot),
            mounts: Vec::new(),
            network: self.attachment(r),
        }
    }

    /// What host directories may be mounted, as the config says now.
    fn mount_policy(&self) -> crate::mounts::Policy<'_> {
        crate::mounts::Policy {
            roots: &self.config.mount_roots,
            data_dir: &self.data_dir,
            secrets_file: self.config.secrets_file.as_deref(),
        }
    }

    /// The spec to start `r` with: its mounts resolved and checked against
    /// the allowlist again (a symlink swapped since create must not escape).
    fn boot_spec(&self, r: &SandboxRecord) -> Result<SandboxSpec, ApiError> {
        let mut spec = self.spec(r);
        spec.mounts = self.mount_policy().resolve_all(&r.mounts)?;
        Ok(spec)
    }

    pub fn view(&self, r: &SandboxRecord) -> SandboxView {
        let spec = self.spec(r);
        let disk_used_bytes = self
            .backend(&r.backend)
            .map(|b| b.disk_used(&spec))
            .unwrap_or(0);
        let pid = self.live.lock().unwrap().get(&r.id).map(|l| l.running.pid);
        SandboxView {
            name: r.name.clone(),
            owner: r.owner.clone(),
            state: r.state,
            backend: r.backend.clone(),
            image: r.image.clone(),
            vcpus: r.vcpus,
            memory_mib: r.memory_mib,
            disk_mib: r.disk_mib,
            disk_used_bytes,
            created_at: r.created_at.clone(),
            started_at: r.started_at.clone(),
            state_reason: r.state_reason.clone(),
            pid,
            mounts: r.mounts.clone(),
            network: r.network.clone(),
            address: self.sandbox_address(r),
            egress: Self::egress_of(r),
            network_name: r.net_group.clone(),
            exposures: crate::exposure::views(self, r),
        }
    }

    /// The sandbox `name` of `owner`. Another owner's sandbox of that name
    /// is the same 404 as a name nobody has.
    pub fn get(&self, owner: &str, name: &str) -> Result<SandboxRecord, ApiError> {
        Ok(self.store.sandbox(owner, name)?)
    }

    /// A sandbox by its global id (ids never come from requests).
    pub fn by_id(&self, id: &str) -> Result<SandboxRecord, ApiError> {
        self.store.sandbox_by_id(id).map_err(|e| match e {
            ironclaw_store::StoreError::NotFound(_) => {
                ApiError::NotFound("sandbox not found (it was removed)".into())
            }
            other => other.into(),
        })
    }

    /// The quotas of `user` (the admin has only explicit ones).
    pub fn limits_of(&self, user: &str) -> crate::quota::Limits {
        let admin = self.store.user(user).map(|u| u.admin).unwrap_or(false);
        self.config.quotas.for_user(user, admin)
    }

    /// Create and start a sandbox in `owner`'s namespace.
    pub async fn create(
        self: &Arc<Self>,
        req: CreateRequest,
        owner: &str,
    ) -> Result<SandboxRecord, ApiError> {
        self.create_inner(req, owner, None).await
    }

    /// Create and start `user`'s agent sandbox, bound to them in the store.
    pub async fn create_agent_sandbox(
        self: &Arc<Self>,
        req: CreateRequest,
        user: &str,
    ) -> Result<SandboxRecord, ApiError> {
        self.create_inner(req, user, Some(user.to_string())).await
    }

    async fn create_inner(
        self: &Arc<Self>,
        req: CreateRequest,
        owner: &str,
        agent_of: Option<String>,
    ) -> Result<SandboxRecord, ApiError> {
        name::validate(&req.name).map_err(|e| ApiError::InvalidName(e.to_string()))?;
        let image_name = req
            .image
            .clone()
            .unwrap_or_else(|| self.config.default_image.clone());
        name::validate(&image_name).map_err(|e| ApiError::InvalidName(e.to_string()))?;
        let vcpus = req.vcpus.unwrap_or(self.config.default_vcpus);
        let memory_mib = req.memory_mib.unwrap_or(self.config.default_memory_mib);
        let disk_mib = req.disk_mib.unwrap_or(self.config.default_disk_mib);
        if !(1..=64).contains(&vcpus) {
            return Err(ApiError::BadRequest(format!(
                "vcpus must be between 1 and 64, got {vcpus}"
            )));
        }
        if !(16..=1 << 20).contains(&memory_mib) {
            return Err(ApiError::BadRequest(format!(
                "memory_mib must be between 16 and 1048576, got {memory_mib}"
            )));
        }
        if !(64..=1 << 24).contains(&disk_mib) {
            return Err(ApiError::BadRequest(format!(
                "disk_mib must be between 64 and 16777216, got {disk_mib}"
            )));
        }
        let backend_name = match &req.backend {
            Some(b) => b.clone(),
            None => self
                .default_backend()
                .ok_or_else(|| {
                    ApiError::Unavailable(
                        "no sandbox backend works on this host; run `ironclaw doctor`".into(),
                    )
                })?
                .to_string(),
        };
        let mounts = self.mount_policy().check_request(&req.mounts)?;
        if !mounts.is_empty() && backend_name != BackendKind::Namespace.as_str() {
            return Err(ApiError::BadRequest(format!(
                "host directory mounts are supported on the namespace backend only for now \
                 (backend {backend_name} would need virtio-fs or 9p); use --backend namespace"
            )));
        }
        let net =
            self.network_choice(req.network.as_deref(), req.egress.clone(), req.join.clone())?;
        let backend = self.usable_backend(&backend_name).await?;
        image::get(&self.images_dir(), &image_name).map_err(|_| {
            ApiError::NotFound(format!(
                "image '{image_name}' not found; build it with `ironclaw image build {image_name} --from busybox|debian|code-interpreter`"
            ))
        })?;
        crate::mounts::check_in_image(&image::rootfs(&self.images_dir(), &image_name), &mounts)?;
        if self.store.sandbox(owner, &req.name).is_ok() {
            return Err(ApiError::Conflict(format!(
                "sandbox '{}' already exists",
                req.name
            )));
        }
        if self.store.sandboxes()?.len() >= self.config.max_sandboxes {
            return Err(ApiError::Unavailable(format!(
                "sandbox limit reached ({} sandboxes); remove one or raise max_sandboxes",
                self.config.max_sandboxes
            )));
        }
        let id: String = (0..6)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let now = now();
        let record = SandboxRecord {
            id,
            name: req.name.clone(),
            backend: backend_name,
            image: image_name,
            vcpus,
            memory_mib,
            disk_mib,
            pids: self.config.pids_limit,
            state: SandboxState::Creating,
            state_reason: None,
            desired_running: true,
            runtime: None,
            created_at: now.clone(),
            started_at: None,
            updated_at: now,
            owner: owner.to_string(),
            uid_slot: 0,
            agent_of,
            mounts,
            network: net.mode.as_str().into(),
            egress: serde_json::to_string(&net.policy)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
            net_group: net.group,
        };
        let lock = self.lock_for(&record.id);
        let _g = lock.lock().await;
        {
            let _q = self.quota_lock.lock().unwrap_or_else(|p| p.into_inner());
            let limits = self.limits_of(owner);
            crate::quota::check_sandbox(
                &limits,
                owner,
                &self.store.sandboxes_of(owner)?,
                vcpus,
                memory_mib,
                disk_mib,
            )?;
            self.store.insert_sandbox(&record)?;
        }
        // The uid slot is allocated by the insert.
        let record = self.by_id(&record.id)?;
        let spec = self.spec(&record);
        let booted = match self.boot_spec(&record) {
            Ok(s) => self.boot(&*backend, &s, &record).await,
            Err(e) => Err(e),
        };
        match booted {
            Ok(()) => self.by_id(&record.id),
            // Kept, as `crashed`, so its logs can be read.
            Err(e @ ApiError::Crashed(_)) => Err(e),
            Err(e) => {
                // A create that fails leaves nothing behind.
                let _ = backend.destroy(&spec).await;
                let _ = self.store.delete_sandbox(&record.id);
                self.locks.lock().unwrap().remove(&record.id);
                Err(e)
            }
        }
    }

    /// Start the sandbox's process and record it as running. A sandbox
    /// that crashes while booting is kept as `crashed` with the reason, so
    /// its logs can be read.
    async fn boot(
        self: &Arc<Self>,
        backend: &dyn Backend,
        spec: &SandboxSpec,
        record: &SandboxRecord,
    ) -> Result<(), ApiError> {
        self.net_prepare(record).await?;
        let started = backend.start(spec).await;
        let activated = match &started {
            Ok(_) => self.net_activate(record).await,
            Err(_) => Ok(()),
        };
        if started.is_err() || activated.is_err() {
            self.net_release(record).await;
        }
        if let (Ok((running, _)), Err(e)) = (&started, activated) {
            let grace = Duration::from_secs(2);
            let _ = backend.stop(spec, running, None, grace).await;
            return Err(e);
        }
        let (running, agent) = match started {
            Ok(started) => started,
            Err(ironclaw_sandbox::BackendError::Crashed(report)) => {
                let reason = format!("crashed while starting: {report}");
                self.store.set_sandbox_state(
                    &spec.id,
                    SandboxState::Crashed,
                    Some(&reason),
                    None,
                )?;
                return Err(ApiError::Crashed(format!(
                    "sandbox '{}' crashed while starting (see `ironclaw sandbox logs {}`): {report}",
                    spec.name, spec.name
                )));
            }
            Err(e @ ironclaw_sandbox::BackendError::Unavailable(..)) => {
                return Err(ApiError::Unavailable(e.to_string()))
            }
            Err(other) => {
                return Err(ApiError::Internal(format!(
                    "sandbox '{}' failed to start: {other}",
                    spec.name
                )))
            }
        };
        let runtime =
            serde_json::to_string(&running).map_err(|e| ApiError::Internal(e.to_string()))?;
        self.store
            .set_sandbox_state(&spec.id, SandboxState::Running, None, Some(&runtime))?;
        self.adopt(spec.id.clone(), running, agent.clone());
        self.run_image_start(record, &agent).await;
        Ok(())
    }

    /// The image's start command, if it has one. Its failure is logged,
    /// not fatal: the sandbox runs, only what the server offered is missing.
    async fn run_image_start(&self, record: &SandboxRecord, agent: &AgentClient) {
        let Some(cmd) = image::get(&self.images_dir(), &record.image)
            .ok()
            .and_then(|m| m.start)
        else {
            return;
        };
        if let Err(e) = crate::image_start::run(agent, &cmd).await {
            tracing::warn!(sandbox = %record.name, image = %record.image, "image start command: {e}");
        }
    }

    /// The sandbox's recent logs.
    pub fn logs(&self, id: &str, max_bytes: u64) -> Result<String, ApiError> {
        let r = self.by_id(id)?;
        let spec = self.spec(&r);
        Ok(match self.backend(&r.backend) {
            Ok(b) => b.logs(&spec, max_bytes),
            Err(_) => spec.console_tail(max_bytes),
        })
    }

    /// Track a running sandbox and watch its process for an unexpected exit.
    fn adopt(self: &Arc<Self>, id: String, running: Running, agent: AgentClient) {
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = running.pid;
        self.live.lock().unwrap().insert(
            id.clone(),
            Live {
                running,
                agent,
                generation,
            },
        );
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let status = process::wait_exit(pid).await;
            let Some(me) = me.upgrade() else { return };
            let was_live = {
                let mut live = me.live.lock().unwrap();
                match live.get(&id) {
                    Some(l) if l.generation == generation => live.remove(&id).is_some(),
                    _ => false,
                }
            };
            if was_live {
                me.on_crash(&id, status).await;
            }
        });
    }

    async fn on_crash(&self, id: &str, status: Option<i32>) {
        let Ok(r) = self.store.sandbox_by_id(id) else {
            return;
        };
        let spec = self.spec(&r);
        let tail = self
            .backend(&r.backend)
            .map(|b| b.crash_report(&spec))
            .unwrap_or_default();
        let reason = format!(
            "sandbox init exited unexpectedly{}{}",
            status.map(|s| format!(" (status {s})")).unwrap_or_default(),
            if tail.is_empty() {
                String::new()
            } else {
                format!("; console: {tail}")
            }
        );
        tracing::warn!(sandbox = %r.name, owner = %r.owner, id, "{reason}");
        let _ = match self.backend(&r.backend) {
            Ok(b) => b.reap(&spec).await,
            Err(_) => ironclaw_sandbox::backend::reap(&r.id).await,
        };
        self.net_release(&r).await;
        let _ = self
            .store
            .set_sandbox_state(id, SandboxState::Crashed, Some(&reason), None);
    }

    /// Start the sandbox with that id (see [`Manager::get`]).
    pub async fn start(self: &Arc<Self>, id: &str) -> Result<SandboxRecord, ApiError> {
        let lock = self.lock_for(id);
        let _g = lock.lock().await;
        let r = self.by_id(id)?;
        self.store.set_sandbox_desired(id, true)?;
        if r.state == SandboxState::Running && self.live.lock().unwrap().contains_key(id) {
            return Ok(r);
        }
        let spec = match self.boot_spec(&r) {
            Ok(spec) => spec,
            Err(e) => {
                // Say why on the sandbox too (`sandbox show`).
                if r.state != SandboxState::Running {
                    let reason = format!("could not start: {e}");
                    let _ = self.store.set_sandbox_state(
                        id,
                        r.state,
                        Some(&reason),
                        r.runtime.as_deref(),
                    );
                }
                return Err(e);
            }
        };
        let backend = self.usable_backend(&r.backend).await?;
        self.boot(&*backend, &spec, &r).await?;
        crate::deploy::revive_soon(self.clone(), id.to_string());
        self.by_id(id)
    }

    pub async fn stop(self: &Arc<Self>, id: &str) -> Result<SandboxRecord, ApiError> {
        let lock = self.lock_for(id);
        let _g = lock.lock().await;
        let r = self.by_id(id)?;
        self.store.set_sandbox_desired(id, false)?;
        self.stop_locked(&r).await?;
        self.by_id(id)
    }

    async fn stop_locked(&self, r: &SandboxRecord) -> Result<(), ApiError> {
        let live = self.live.lock().unwrap().remove(&r.id);
        let running = match (&live, &r.runtime) {
            (Some(l), _) => Some(l.running.clone()),
            (None, Some(rt)) => serde_json::from_str::<Running>(rt).ok(),
            _ => None,
        };
        if let (Some(running), Ok(backend)) = (running, self.backend(&r.backend)) {
            let grace = Duration::from_secs(self.config.stop_grace_secs);
            backend
                .stop(
                    &self.spec(r),
                    &running,
                    live.as_ref().map(|l| &l.agent),
                    grace,
                )
                .await?;
        }
        self.net_release(r).await;
        if r.state != SandboxState::Stopped || r.runtime.is_some() {
            let reason = if r.state == SandboxState::Crashed {
                r.state_reason.as_deref()
            } else {
                None
            };
            let state = if r.state == SandboxState::Crashed {
                SandboxState::Crashed
            } else {
                SandboxState::Stopped
            };
            self.store.set_sandbox_state(&r.id, state, reason, None)?;
        }
        Ok(())
    }

    pub async fn remove(self: &Arc<Self>, id: &str) -> Result<(), ApiError> {
        let lock = self.lock_for(id);
        let _g = lock.lock().await;
        let r = self.by_id(id)?;
        self.stop_locked(&r).await?;
        if let Ok(b) = self.backend(&r.backend) {
            b.destroy(&self.spec(&r)).await?;
        } else {
            let _ = std::fs::remove_dir_all(self.sandbox_dir(&r.id));
        }
        let _ = std::fs::remove_dir_all(crate::deploy::repo_path(&self.data_dir, id));
        self.store.delete_sandbox(id)?;
        self.locks.lock().unwrap().remove(id);
        Ok(())
    }

    /// The agent of a running sandbox, reconnecting if the connection dropped.
    pub async fn agent(&self, id: &str) -> Result<AgentClient, ApiError> {
        let live = |id: &str| {
            self.live
                .lock()
                .unwrap()
                .get(id)
                .map(|l| (l.agent.clone(), l.running.clone()))
        };
        let existing = match live(id) {
            Some(e) => Some(e),
            None => {
                // Not live. If the store still says running, a stop (or a
                // start) holds the sandbox's lock right now: wait for it
                // and look again, so the answer is the state it ends in,
                // never "is running; start it".
                let r = self.by_id(id)?;
                if matches!(r.state, SandboxState::Running | SandboxState::Creating) {
                    let lock = self.lock_for(id);
                    let _g = lock.lock().await;
                }
                live(id)
            }
        };
        let Some((agent, running)) = existing else {
            return Err(not_running(&self.by_id(id)?));
        };
        if !agent.is_closed() {
            return Ok(agent);
        }
        let r = self.by_id(id)?;
        let fresh = self
            .backend(&r.backend)?
            .connect(&self.spec(&r), &running)
            .await?;
        if let Some(l) = self.live.lock().unwrap().get_mut(id) {
            l.agent = fresh.clone();
        }
        Ok(fresh)
    }

    /// The answer for a request whose agent connection closed under it
    /// (`connection to the guest agent closed`): a stop or restart in
    /// progress is waited for, so the caller learns the state it ends in,
    /// as [`Manager::agent`] answers, rather than a bare 503.
    pub async fn agent_closed(&self, id: &str) -> ApiError {
        let lock = self.lock_for(id);
        let _g = lock.lock().await;
        let live = self.live.lock().unwrap().contains_key(id);
        match self.by_id(id) {
            Ok(r) if !live => not_running(&r),
            Ok(_) => ApiError::from(ironclaw_sandbox::AgentError::Closed),
            Err(e) => e,
        }
    }

    /// Bring the world in line with the store after a daemon (re)start:
    /// adopt sandboxes whose process survived, restart the ones that should
    /// run, and mark the rest stopped with the reason.
    pub async fn reconcile(self: &Arc<Self>) {
        let records = match self.store.sandboxes() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("reconcile: {e}");
                return;
            }
        };
        for r in records {
            let running: Option<Running> = r
                .runtime
                .as_deref()
                .and_then(|rt| serde_json::from_str(rt).ok());
            if let (Some(run), Ok(backend)) = (&running, self.backend(&r.backend)) {
                if process::is_same_process(run.pid, run.pid_start) {
                    match backend.connect(&self.spec(&r), run).await {
                        Ok(agent) => {
                            tracing::info!(sandbox = %r.name, owner = %r.owner, pid = run.pid, "re-adopted running sandbox");
                            if r.state != SandboxState::Running {
                                let _ = self.store.set_sandbox_state(
                                    &r.id,
                                    SandboxState::Running,
                                    None,
                                    r.runtime.as_deref(),
                                );
                            }
                            if let Err(e) = self.net_activate(&r).await {
                                tracing::warn!(sandbox = %r.name, "re-attaching its network: {e}");
                            }
                            self.adopt(r.id.clone(), run.clone(), agent);
                            crate::deploy::revive_soon(self.clone(), r.id.clone());
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(sandbox = %r.name, "running but agent unreachable ({e}); restarting it")
                        }
                    }
                }
            }
            // Whatever is left of an earlier run goes, so nothing is orphaned.
            if let (Some(run), Ok(b)) = (&running, self.backend(&r.backend)) {
                let _ = b
                    .stop(&self.spec(&r), run, None, Duration::from_secs(2))
                    .await;
            }
            if r.desired_running {
                let lock = self.lock_for(&r.id);
                let _g = lock.lock().await;
                let res = match self.usable_backend(&r.backend).await {
                    Ok(b) => match self.boot_spec(&r) {
                        Ok(spec) => self.boot(&*b, &spec, &r).await,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                match res {
                    Ok(()) => {
                        tracing::info!(sandbox = %r.name, "restarted after daemon restart");
                        crate::deploy::revive_soon(self.clone(), r.id.clone());
                    }
                    Err(e) => {
                        let reason = format!("could not be restarted after a daemon restart: {e}");
                        tracing::warn!(sandbox = %r.name, "{reason}");
                        let _ = self.store.set_sandbox_state(
                            &r.id,
                            SandboxState::Stopped,
                            Some(&reason),
                            None,
                        );
                    }
                }
            } else if r.state != SandboxState::Stopped && r.state != SandboxState::Crashed {
                let _ = self.store.set_sandbox_state(
                    &r.id,
                    SandboxState::Stopped,
                    Some("stopped while the daemon was down"),
                    None,
                );
            }
        }
        // What a crashed run left (bridge, nft table) goes when no sandbox
        // needs it.
        if let Err(e) = self.net.reset().await {
            tracing::warn!("cleaning up the sandbox network: {e}");
        }
    }
}

/// A request for a sandbox that does not run, in the words the CLI uses.
fn not_running(r: &SandboxRecord) -> ApiError {
    ApiError::Conflict(format!(
        "sandbox '{name}' is {}; start it with `ironclaw sandbox start {name}`",
        r.state.as_str(),
        name = r.name
    ))
}
