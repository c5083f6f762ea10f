//! ironclawd as a library: configuration, the sandbox manager and the HTTP
//! API. `main.rs` only parses flags and calls [`run`].

#![recursion_limit = "256"]

pub mod api;
pub mod auth;
pub mod channels;
pub mod chat;
pub mod config;
pub mod deploy;
pub mod e2b;
pub mod error;
pub mod exposure;
pub mod history;
pub mod image_start;
pub mod manager;
pub mod mcp;
pub mod memory;
pub mod mounts;
pub mod names;
pub mod network;
pub mod quota;
pub mod ssh;
pub mod tasks;

use std::sync::Arc;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::config::{Args, Config};
use crate::manager::Manager;

#[derive(Clone)]
pub struct AppState {
    pub manager: Arc<Manager>,
    pub chat: Arc<chat::Chat>,
    pub token: Arc<str>,
    /// Per-token request rate (`requests_per_minute` quota).
    pub limiter: Arc<quota::RateLimiter>,
    /// Exposed ports: cookie key, idle clocks.
    pub ports: Arc<exposure::Ports>,
    /// ACME certificates for exposed ports, when `ports_acme_directory` is set.
    pub acme: Option<Arc<exposure::acme::Acme>>,
    /// The SSH endpoint, when it listens.
    pub ssh: Option<Arc<ssh::Info>>,
    /// Scheduled tasks.
    pub tasks: Arc<tasks::Tasks>,
    /// Agent memory: the index of every user's memory files.
    pub memory: Arc<memory::Memory>,
    /// The E2B-compatible API's running processes.
    pub e2b: Arc<e2b::E2b>,
    /// Chat channels.
    pub channels: Arc<channels::Channels>,
}

/// Largest JSON request body: room for an exec argv up to the kernel's
/// ARG_MAX (2 MiB) after JSON escaping. File contents never come as JSON.
const MAX_JSON_BODY: usize = 4 * 1024 * 1024;

pub fn router(state: AppState) -> Router {
    use api::*;
    // Routes under /v1/sandboxes/:name, guarded by ownership.
    let sandbox = Router::new()
        .route(
            "/v1/sandboxes/:name",
            get(sandboxes::show).delete(sandboxes::remove),
        )
        .route("/v1/sandboxes/:name/start", post(sandboxes::start))
        .route("/v1/sandboxes/:name/stop", post(sandboxes::stop))
        .route("/v1/sandboxes/:name/egress", put(sandboxes::set_egress))
        .route("/v1/sandboxes/:name/info", get(sandboxes::info))
        .route("/v1/sandboxes/:name/logs", get(sandboxes::logs))
        .route("/v1/sandboxes/:name/exec", post(exec::exec))
        .route("/v1/sandboxes/:name/exec/ws", get(exec::exec_ws))
        .route("/v1/sandboxes/:name/console", get(console::list))
        .route("/v1/sandboxes/:name/console/ws", get(console::attach))
        .route(
            "/v1/sandboxes/:name/console/:session",
            delete(console::kill),
        )
        .route(
            "/v1/sandboxes/:name/files",
            get(files::download).put(files::upload),
        )
        .route("/v1/sandboxes/:name/fs/stat", get(files::stat))
        .route("/v1/sandboxes/:name/fs/list", get(files::list))
        .route("/v1/sandboxes/:name/fs/mkdir", post(files::mkdir))
        .route("/v1/sandboxes/:name/fs/remove", post(files::remove))
        .route("/v1/sandboxes/:name/fs/rename", post(files::rename))
        .route(
            "/v1/sandboxes/:name/ports",
            get(ports::list).post(ports::expose),
        )
        .route("/v1/sandboxes/:name/ports/:port", delete(ports::unexpose))
        .route("/v1/sandboxes/:name/deploy", post(deploy::init))
        .route("/v1/sandboxes/:name/deploy/releases", get(deploy::releases))
        .route("/v1/sandboxes/:name/deploy/logs", get(deploy::logs))
        .route(
            "/v1/sandboxes/:name/deploy/rollback",
            post(deploy::rollback),
        )
        .route(
            "/v1/sandboxes/:name/git/info/refs",
            get(crate::deploy::http::serve),
        )
        .route(
            "/v1/sandboxes/:name/git/git-upload-pack",
            post(crate::deploy::http::serve),
        )
        .route(
            "/v1/sandboxes/:name/git/git-receive-pack",
            post(crate::deploy::http::serve),
        )
        .route("/v1/sandboxes/:name/watch", get(watch::watch))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::sandbox_access,
        ));
    let authed = Router::new()
        .route("/v1/host", get(host::report))
        .route(
            "/v1/sandboxes",
            get(sandboxes::list).post(sandboxes::create),
        )
        .merge(sandbox)
        .route("/v1/images", get(images::list).post(images::build))
        .route("/v1/images/:name", delete(images::remove))
        .route("/v1/users", get(users::list).post(users::add))
        .route("/v1/users/:name", delete(users::remove))
        .route(
            "/v1/users/:name/tokens",
            get(users::tokens)
                .post(users::issue_token)
                .delete(users::revoke_all),
        )
        .route("/v1/users/:name/tokens/:id", delete(users::revoke))
        .route("/v1/me", get(users::me))
        .route("/v1/keys", get(keys::list).post(keys::add))
        .route("/v1/keys/:id", delete(keys::remove))
        .route("/v1/sessions", get(chat::list).post(chat::create))
        .route("/v1/sessions/:id", get(chat::show).delete(chat::remove))
        .route("/v1/chat/ws", get(chat::ws))
        .route("/v1/tasks", get(tasks::list).post(tasks::create))
        .route("/v1/tasks/:name", get(tasks::show).delete(tasks::remove))
        .route("/v1/tasks/:name/runs", get(tasks::runs))
        .route("/v1/tasks/:name/runs/:id", get(tasks::run))
        .route("/v1/memory/status", get(memory::status))
        .route("/v1/memory/search", post(memory::search))
        .route("/v1/memory/reindex", post(memory::reindex))
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::completions))
        .route_service("/mcp", mcp::service(state.clone()))
        .route("/v1/channels", get(channels::list).post(channels::add))
        .route(
            "/v1/channels/:name",
            get(channels::show).delete(channels::remove),
        )
        .route("/v1/channels/:name/messages", get(channels::messages))
        .route("/v1/pairings/approve", post(channels::approve))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/v1/health", get(host::health))
        .route("/v1/openapi.json", get(openapi::spec))
        // Called by chat services: the channel checks their signature.
        .route("/v1/channels/:name/events", post(channels::events))
        .merge(api::ui::routes())
        .merge(authed)
        .merge(e2b::control_routes())
        .fallback(|| async { error::ApiError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        // E2B's envd calls, told apart by their `E2b-Sandbox-Id` header.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            e2b::route_envd,
        ))
        // Outermost: hosts under the base domain never reach the API.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            exposure::gate::route_host,
        ))
        // HTTP-01 answers for any Host, even one under the base domain.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            exposure::acme::serve_challenge,
        ))
        .with_state(state)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args)?;
    let data_dir = &args.data_dir;
    std::fs::create_dir_all(data_dir.join("images"))
        .with_context(|| format!("creating {}", data_dir.display()))?;
    std::fs::create_dir_all(data_dir.join("sandboxes"))?;
    let token = auth::load_or_create_token(data_dir)?;
    let store = Arc::new(
        ironclaw_store::Store::open(&data_dir.join("ironclaw.db"))
            .context("opening the database")?,
    );
    let guest_bin = config::find_guest_bin(args.guest_bin.as_deref());
    if guest_bin.is_none() {
        tracing::warn!(
            "no ironclaw-guest binary found: image builds will fail until --guest-bin is given"
        );
    }
    let net =
        network::host_network(&config, data_dir).map_err(|e| anyhow::anyhow!("[network]: {e}"))?;
    // Bound first: exposure URLs carry the real port (`--listen :0`).
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let mut config = config;
    config.listen = addr;
    exposure::resolve(&mut config)?;
    let ports_tls = match config.ports_tls_listen {
        Some(a) => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("ports_tls_listen {a}"))?;
            config.ports_tls_listen = Some(l.local_addr()?);
            Some(l)
        }
        None => None,
    };
    let ssh_listener = bind_ssh(&config).await?;
    let manager = Manager::new(store, net, config.clone(), data_dir.clone(), guest_bin);
    if let Ok(n @ 1..) = manager.store.fail_building_releases() {
        tracing::warn!("{n} release(s) were building when the daemon stopped: marked failed");
    }
    manager.reconcile().await;
    // Learn once (per host boot; cached) whether KVM guests boot, so the
    // default backend is right from the first create. Needs a cached kernel.
    let kvm = manager.kvm.clone();
    tokio::task::spawn_blocking(move || kvm.get());
    let tasks = tasks::Tasks::new(manager.store.clone(), config.tasks.clone());
    // The secrets file is read (and its mode checked) only when an
    // embeddings key is to come from it, as for providers.
    let memory_secrets = match (&config.memory.embedder, &config.memory.api_key_env) {
        (memory::EmbedderKind::Openai, Some(_)) => config.secrets()?,
        _ => ironclaw_agent::Secrets::env_only(),
    };
    let memory =
        memory::Memory::open(&config.memory, data_dir, &memory_secrets).context("[memory]")?;
    let chat = chat::Chat::new(manager.clone(), &config, tasks.clone(), memory.clone())
        .context("configuring LLM providers")?;
    tasks::runner::spawn(tasks.clone(), chat.clone()).context("starting scheduled tasks")?;
    chat.spawn_idle_reaper(std::time::Duration::from_secs(config.agent_idle_stop_secs));

    let ports = Arc::new(exposure::Ports::new(
        exposure::cookie::Key::load_or_create(data_dir).context("the port cookie key")?,
    ));
    let acme = match config.acme() {
        Some(a) => Some(exposure::acme::Acme::new(a, data_dir).context("ACME")?),
        None => None,
    };
    tracing::info!(%addr, data_dir = %data_dir.display(), "ironclawd listening");
    // One machine-readable line on stdout for scripts and tests.
    println!("ironclawd listening on http://{addr}");
    let ssh = match ssh_listener {
        Some(l) => {
            let key = ssh::hostkey::load_or_create(data_dir).context("the SSH host key")?;
            let info = ssh::Info {
                listen: l.local_addr()?,
                fingerprint: ssh::hostkey::fingerprint(&key),
                host_key: ssh::hostkey::public_line(&key),
            };
            eprintln!(
                "ironclawd: ssh on {} (host key {})",
                info.listen, info.fingerprint
            );
            ssh::spawn(l, key, manager.clone());
            Some(Arc::new(info))
        }
        None => None,
    };
    let channels = channels::Channels::new(manager.store.clone(), chat.clone());
    channels.start_all();
    let state = AppState {
        manager,
        chat,
        token: token.into(),
        limiter: Arc::default(),
        ports,
        acme,
        ssh,
        tasks,
        memory,
        e2b: e2b::E2b::new(),
        channels,
    };
    e2b::timeout::spawn(state.manager.clone(), state.e2b.clone());
    if let Some(a) = args.e2b_listen {
        let l = tokio::net::TcpListener::bind(a)
            .await
            .with_context(|| format!("--e2b-listen {a}"))?;
        eprintln!("ironclawd: E2B API on http://{}", l.local_addr()?);
        let app = e2b::router(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(l, app).tcp_nodelay(true).await;
        });
    }
    if let Some(l) = ports_tls {
        let (tls, fingerprint) = exposure::tls::server_config(
            data_dir,
            &exposure::base_domain(&config),
            config.ports_tls_cert.as_deref(),
            config.ports_tls_key.as_deref(),
            state.acme.clone(),
        )
        .context("ports TLS")?;
        let at = l.local_addr()?;
        match fingerprint {
            Some(f) if state.acme.is_some() => eprintln!(
                "ironclawd: exposed ports on https://{at} with ACME certificates; until one is issued, a self-signed one with SHA-256 fingerprint {f}"
            ),
            Some(f) => eprintln!(
                "ironclawd: exposed ports on https://{at} with a self-signed certificate, SHA-256 fingerprint {f}"
            ),
            None => tracing::info!(%at, "exposed ports on HTTPS"),
        }
        exposure::tls::spawn(l, tls, router(state.clone()));
    }
    if let Some(acme) = &state.acme {
        tracing::info!(
            directory = acme.directory(),
            "exposed ports get ACME certificates"
        );
        exposure::acme::spawn_watcher(
            acme.clone(),
            state.manager.clone(),
            config.ports_acme_base_domain,
        );
    }
    exposure::spawn_idle_stopper(
        state.manager.clone(),
        state.ports.clone(),
        std::time::Duration::from_secs(config.network.expose_idle_stop_secs),
    );
    // Streams are many small frames (text deltas): Nagle plus the peer's
    // delayed ACK would stall each turn by ~40 ms. Peer addresses are for
    // the port proxy's X-Forwarded-For.
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .tcp_nodelay(true)
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    tracing::info!(
        "ironclawd stopped; running sandboxes keep running and are re-adopted on the next start"
    );
    Ok(())
}

/// The SSH endpoint's socket. The default address is taken only if free.
async fn bind_ssh(config: &Config) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    match config.ssh_listen()? {
        config::SshListen::Off => Ok(None),
        config::SshListen::Explicit(a) => Ok(Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("ssh_listen {a}"))?,
        )),
        config::SshListen::Default(a) => match tokio::net::TcpListener::bind(a).await {
            Ok(l) => Ok(Some(l)),
            Err(e) => {
                tracing::warn!(
                    "ssh endpoint off: the default {a} is not free ({e}); set ssh_listen or --ssh-listen"
                );
                Ok(None)
            }
        },
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
