//! Command-line definitions (clap derive). No logic lives here.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub const DEFAULT_HOST: &str = "http://127.0.0.1:7777";

#[derive(Debug, Parser)]
#[command(
    name = "ironclaw",
    version,
    about = "Command-line client for ironclawd: create sandboxes, run commands, open consoles, copy files",
    long_about = "Command-line client for ironclawd, the IronClaw daemon.\n\n\
        Talks to the daemon over HTTP/WebSocket only. The daemon is found through --host \
        (or IRONCLAW_HOST, default http://127.0.0.1:7777); the API token through --token \
        (or IRONCLAW_TOKEN), else the file named by IRONCLAW_TOKEN_FILE, else \
        $XDG_CONFIG_HOME/ironclaw/token (~/.config/ironclaw/token), else the daemon's \
        $IRONCLAW_DATA_DIR/admin.token (default /var/lib/ironclaw/admin.token).",
    after_help = "Examples:\n  \
        ironclaw sandbox create --name dev --memory 1G\n  \
        ironclaw exec -it dev -- bash\n  \
        ironclaw console dev\n  \
        ironclaw cp ./app.py dev:/root/app.py\n  \
        ironclaw doctor",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Daemon URL
    #[arg(long, global = true, env = "IRONCLAW_HOST", default_value = DEFAULT_HOST, value_name = "URL")]
    pub host: String,

    /// API token (default: read from a token file, see `ironclaw --help`)
    #[arg(
        long,
        global = true,
        env = "IRONCLAW_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// Act on this user's sandboxes, SSH keys and tasks (admin; sandbox, exec, cp, console, fs, key and task commands). Default: your own
    #[arg(long, global = true, env = "IRONCLAW_OWNER", value_name = "USER")]
    pub owner: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, inspect, start, stop and remove sandboxes
    #[command(subcommand, visible_alias = "sb")]
    Sandbox(SandboxCmd),

    /// Run a command in a sandbox (streams output, exits with the command's exit code)
    Exec(ExecArgs),

    /// Open a persistent shell in a sandbox (detach with Ctrl-], reattach later)
    Console(ConsoleArgs),

    /// Copy files between this machine and a sandbox (streamed; `-` is stdin/stdout)
    Cp(CpArgs),

    /// Inspect and change files inside a sandbox
    #[command(subcommand)]
    Fs(FsCmd),

    /// Build, list and remove sandbox images
    #[command(subcommand)]
    Image(ImageCmd),

    /// Ask your agent one question; the answer streams to stdout
    Ask(AskArgs),

    /// Talk to your agent (streaming REPL; /new starts a fresh session, Ctrl-C stops a turn)
    Chat(ChatArgs),

    /// Manage users and their API tokens (admin)
    #[command(subcommand)]
    User(UserCmd),

    /// Register, list and remove your SSH public keys (for `ssh NAME@HOST -p 2222`)
    #[command(subcommand)]
    Key(KeyCmd),

    /// Open a sandbox's console over SSH, or run a command there (runs the system `ssh`)
    Ssh(SshArgs),
    /// Git-push deploy of a Procfile app into a sandbox, served at its URL
    #[command(subcommand)]
    Deploy(DeployCmd),
    /// Schedule prompts for your agent: once, at an interval or on a cron schedule
    #[command(subcommand)]
    Task(TaskCmd),
    /// Serve the daemon's MCP tools on stdin/stdout (for desktop MCP clients)
    Mcp,

    /// Your agent's memory files: index status, search, reindex
    #[command(subcommand)]
    Memory(MemoryCmd),

    /// Print changes in a sandbox directory as they happen (until Ctrl-C)
    Watch(WatchArgs),

    /// Chat channels (Telegram, Slack, Discord, Matrix, webhook): add, list, status, message log (admin)
    #[command(subcommand)]
    Channel(ChannelCmd),

    /// Pair a chat sender with a user (the code the sender was sent)
    #[command(subcommand)]
    Pair(PairCmd),

    /// Check the daemon host: which backends work, and why the others do not
    Doctor(JsonFlag),

    /// Print the CLI version and the daemon's version
    Version,
}

#[derive(Debug, Args, Clone, Copy)]
pub struct JsonFlag {
    /// Print the raw JSON returned by the API
    #[arg(long)]
    pub json: bool,
}

// ---------------------------------------------------------------- sandbox

#[derive(Debug, Subcommand)]
pub enum SandboxCmd {
    /// Create and start a sandbox
    #[command(visible_alias = "new")]
    Create(CreateArgs),

    /// List sandboxes
    #[command(visible_alias = "list")]
    Ls(JsonFlag),

    /// Show one sandbox in detail
    #[command(visible_alias = "inspect")]
    Show {
        /// Sandbox name
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },

    /// Print a sandbox's recent console log (and its VMM's log, for VMs)
    Logs {
        /// Sandbox name
        name: String,
        /// Most bytes to print
        #[arg(long, default_value_t = 64 * 1024)]
        bytes: u64,
    },

    /// Start a stopped sandbox
    Start {
        /// Sandbox name(s)
        #[arg(required = true)]
        names: Vec<String>,
    },

    /// Stop a running sandbox (its disk is kept)
    Stop {
        /// Sandbox name(s)
        #[arg(required = true)]
        names: Vec<String>,
    },

    /// Show or change a sandbox's egress policy (applied at once while it runs)
    #[command(
        after_help = "Examples:\n  ironclaw sandbox policy dev --deny-all --allow-domain '*.pypi.org' --allow-domain pypi.org\n  \
                            ironclaw sandbox policy dev --allow-all --deny-cidr 203.0.113.0/24\n  \
                            ironclaw sandbox policy dev          (prints it)"
    )]
    Policy {
        /// Sandbox name
        name: String,
        /// Flags add to the current policy; `--deny-all` starts it over
        #[command(flatten)]
        flags: PolicyFlags,
        #[command(flatten)]
        json: JsonFlag,
    },

    /// Remove sandboxes and their disks (running ones are stopped first)
    #[command(visible_alias = "delete")]
    Rm {
        /// Sandbox name(s)
        #[arg(required = true)]
        names: Vec<String>,
        /// Ignore names of sandboxes that do not exist
        #[arg(short, long)]
        force: bool,
    },

    /// Serve a port of a sandbox at http://PORT-NAME.<base domain> (prints the URL)
    Expose {
        /// Sandbox name
        name: String,
        /// Port inside the sandbox (1-65535)
        #[arg(value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        /// Reachable without a token (default: the owner's token or login cookie)
        #[arg(long)]
        public: bool,
        #[command(flatten)]
        json: JsonFlag,
    },

    /// Stop serving an exposed port
    Unexpose {
        /// Sandbox name
        name: String,
        /// The exposed port
        #[arg(value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
    },

    /// List a sandbox's exposed ports and their URLs
    Ports {
        /// Sandbox name
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Sandbox name (DNS label: a-z, 0-9 and '-', 1-63 chars)
    #[arg(long, short = 'n')]
    pub name: String,

    /// Image to boot (default: the daemon's default image)
    #[arg(long)]
    pub image: Option<String>,

    /// Isolation backend (default: the best working one on the host)
    #[arg(long, value_parser = ["namespace", "qemu", "firecracker"])]
    pub backend: Option<String>,

    /// Number of virtual CPUs
    #[arg(long)]
    pub vcpus: Option<u32>,

    /// Memory size, e.g. 512M, 2G, 1.5G (plain numbers are MiB)
    #[arg(long, value_parser = crate::output::parse_size_mib, value_name = "SIZE")]
    pub memory: Option<u64>,

    /// Disk size, e.g. 2G, 10G (plain numbers are MiB)
    #[arg(long, value_parser = crate::output::parse_size_mib, value_name = "SIZE")]
    pub disk: Option<u64>,

    /// Bind a host directory into the sandbox, read-only unless `:rw`
    /// (repeatable; namespace backend; only under the daemon's `mount_roots`)
    #[arg(long = "mount", value_parser = crate::output::parse_mount, value_name = "HOST:GUEST[:ro|:rw]")]
    pub mounts: Vec<crate::output::MountSpec>,

    /// `internet`: a port on the host bridge, egress under the policy;
    /// `none`: loopback only (default: the daemon's `[network] default_mode`)
    #[arg(long, value_parser = ["internet", "none"])]
    pub network: Option<String>,

    /// Join a named network of yours: sandboxes that join the same one
    /// reach each other on any port (others never do)
    #[arg(long, value_name = "NETWORK")]
    pub join: Option<String>,

    /// Egress policy (default: the daemon's `[network] default_policy`)
    #[command(flatten)]
    pub policy: PolicyFlags,

    #[command(flatten)]
    pub json: JsonFlag,
}

/// An egress policy on the command line. Everything the host network
/// always denies (the host, 127/8, 169.254/16, other sandboxes) stays
/// denied; private ranges need `--allow-cidr`.
#[derive(Debug, Args, Default, Clone)]
pub struct PolicyFlags {
    /// Start from nothing allowed
    #[arg(long, conflicts_with = "allow_all")]
    pub deny_all: bool,
    /// Allow every public address and name
    #[arg(long)]
    pub allow_all: bool,
    /// Allow a name (`example.com`) or the names under one (`*.pypi.org`);
    /// reached on ports 80/443 through the egress proxy (repeatable)
    #[arg(long = "allow-domain", value_name = "DOMAIN")]
    pub allow_domains: Vec<String>,
    /// Allow an address range on any port, e.g. 203.0.113.0/24 (repeatable)
    #[arg(long = "allow-cidr", value_name = "CIDR")]
    pub allow_cidrs: Vec<String>,
    /// Deny an address range, over any allow (repeatable)
    #[arg(long = "deny-cidr", value_name = "CIDR")]
    pub deny_cidrs: Vec<String>,
}

impl PolicyFlags {
    pub fn is_empty(&self) -> bool {
        !self.deny_all
            && !self.allow_all
            && self.allow_domains.is_empty()
            && self.allow_cidrs.is_empty()
            && self.deny_cidrs.is_empty()
    }
}

// ---------------------------------------------------------------- exec

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  ironclaw exec dev -- uname -a\n  ironclaw exec -it dev -- bash\n  \
                  echo hi | ironclaw exec -i dev -- cat\n  ironclaw exec -e DEBUG=1 -w /srv dev -- make test\n\n\
                  Exit status: the command's exit code; 128+N if it was killed by signal N; \
                  124 if it timed out; 1 on API errors."
)]
pub struct ExecArgs {
    /// Sandbox name
    pub name: String,

    /// Forward standard input to the command
    #[arg(short, long)]
    pub interactive: bool,

    /// Allocate a pseudo-terminal (needs a terminal on stdin; combine with -i for interactive programs)
    #[arg(short, long)]
    pub tty: bool,

    /// Set an environment variable (repeatable)
    #[arg(short, long = "env", value_name = "K=V", value_parser = parse_env_pair)]
    pub env: Vec<(String, String)>,

    /// Working directory inside the sandbox
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,

    /// Run as this user of the sandbox: a name in its /etc/passwd or a uid (default root)
    #[arg(short, long, value_name = "NAME")]
    pub user: Option<String>,

    /// Kill the command after this long, e.g. 30s, 5m (exit status 124)
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,

    /// The command and its arguments (after `--`)
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub argv: Vec<String>,
}

pub fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected K=V, got '{s}'")),
    }
}

// ---------------------------------------------------------------- console

#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  ironclaw console dev                 attach to (or start) session 'main'\n  \
                  ironclaw console dev --session build\n  ironclaw console ls dev\n  \
                  ironclaw console kill dev build\n\n\
                  Press Ctrl-] to detach; the shell keeps running and can be reattached later."
)]
pub struct ConsoleArgs {
    #[command(subcommand)]
    pub command: Option<ConsoleCmd>,

    #[command(flatten)]
    pub attach: AttachArgs,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Sandbox name
    #[arg(required = true)]
    pub name: Option<String>,

    /// Session name; created (login shell) if it does not exist
    #[arg(long, short, default_value = "main")]
    pub session: String,

    /// Start a new session's shell as this user of the sandbox (a name in its /etc/passwd or a uid; default root)
    #[arg(long, short, value_name = "NAME")]
    pub user: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConsoleCmd {
    /// Attach to a session (the default when no subcommand is given)
    Attach {
        /// Sandbox name
        name: String,
        /// Session name
        #[arg(long, short, default_value = "main")]
        session: String,
        /// Start a new session's shell as this user of the sandbox
        #[arg(long, short, value_name = "NAME")]
        user: Option<String>,
    },
    /// List console sessions of a sandbox
    Ls {
        /// Sandbox name
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Kill a console session (its shell and processes)
    Kill {
        /// Sandbox name
        name: String,
        /// Session name
        session: String,
    },
}

// ---------------------------------------------------------------- cp / fs

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  ironclaw cp ./app.py dev:/root/app.py\n  \
                  ironclaw cp ./app.py dev:/root/          (keeps the name app.py)\n  \
                  ironclaw cp dev:/root/app.py ./back.py\n  \
                  tar cz src | ironclaw cp - dev:/root/src.tgz\n  \
                  ironclaw cp dev:/var/log/app.log - | less")]
pub struct CpArgs {
    /// Source: a local path, `-` for stdin, or NAME:/path in a sandbox
    pub src: String,
    /// Destination: a local path, `-` for stdout, or NAME:/path in a sandbox
    pub dst: String,
}

#[derive(Debug, Subcommand)]
pub enum FsCmd {
    /// List a directory
    Ls {
        /// NAME:/path
        target: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one file's metadata
    Stat {
        /// NAME:/path
        target: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Create a directory
    Mkdir {
        /// NAME:/path
        target: String,
        /// Create parent directories as needed
        #[arg(short, long)]
        parents: bool,
    },
    /// Remove a file or directory
    Rm {
        /// NAME:/path
        target: String,
        /// Remove directories and their contents
        #[arg(short, long)]
        recursive: bool,
    },
    /// Rename or move a file within a sandbox
    Mv {
        /// NAME:/from
        from: String,
        /// NAME:/to or just /to (same sandbox)
        to: String,
    },
}

// ---------------------------------------------------------------- image

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Build an image from a base distribution (shows progress)
    Build {
        /// Image name (DNS label)
        name: String,
        /// Base to build from
        #[arg(long, value_parser = ["busybox", "debian", "code-interpreter"])]
        from: String,
    },
    /// List images
    #[command(visible_alias = "list")]
    Ls(JsonFlag),
    /// Remove images
    Rm {
        /// Image name(s)
        #[arg(required = true)]
        names: Vec<String>,
    },
}

// ---------------------------------------------------------------- user

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Add a user and print their first API token (shown once)
    Add {
        /// User name (lowercase letters, digits, '-')
        name: String,
    },
    /// List users with their token count and usage
    #[command(visible_alias = "list")]
    Ls(JsonFlag),
    /// Issue a new token for a user, or revoke their tokens with --revoke
    Token {
        /// User name
        name: String,
        /// Revoke every token of the user instead of issuing one
        #[arg(long, conflicts_with = "label")]
        revoke: bool,
        /// A note to remember the token by
        #[arg(long)]
        label: Option<String>,
    },
    /// Remove users, with their sandboxes, sessions and tokens
    #[command(visible_alias = "delete")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

// ---------------------------------------------------------------- ssh

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Register a public key (a .pub file, `-` for stdin); it then logs in to your sandboxes
    Add {
        /// The public key file, e.g. ~/.ssh/id_ed25519.pub
        file: std::path::PathBuf,
        /// A note to remember the key by (default: the key's comment)
        #[arg(long)]
        label: Option<String>,
    },
    /// List your keys with their fingerprints
    #[command(visible_alias = "list")]
    Ls(JsonFlag),
    /// Remove keys by id (see `ironclaw key ls`)
    #[command(visible_alias = "delete")]
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// Sandbox name
    pub name: String,
    /// Force a terminal for a command (ssh -t)
    #[arg(short = 't')]
    pub tty: bool,
    /// Log in with this private key only (ssh -i FILE -o IdentitiesOnly=yes)
    #[arg(short = 'i', long, value_name = "FILE")]
    pub identity: Option<std::path::PathBuf>,
    /// Print the ssh command line instead of running it
    #[arg(long)]
    pub print: bool,
    /// Command to run instead of the console
    #[arg(last = true)]
    pub command: Vec<String>,
}

// ---------------------------------------------------------------- deploy

#[derive(Debug, Subcommand)]
pub enum DeployCmd {
    /// Make a sandbox a deploy target and print its git remote (idempotent)
    Init {
        /// Sandbox name
        name: String,
        /// The port the app's URL serves (the live release behind it)
        #[arg(long, default_value_t = 8000)]
        port: u16,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List a sandbox's releases
    #[command(visible_alias = "list")]
    Ls {
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Print the live release's process log
    Logs {
        name: String,
        /// Keep printing new lines
        #[arg(short, long)]
        follow: bool,
        /// Lines of history to print
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: u32,
    },
    /// Switch back to the previous good release (started before the switch)
    Rollback { name: String },
}

// ---------------------------------------------------------------- task

#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// Schedule a task: PROMPT runs as a fresh agent turn in your agent's sandbox
    #[command(group(clap::ArgGroup::new("when").required(true).multiple(false)))]
    #[command(
        after_help = "Examples:\n  ironclaw task add report --prompt 'Summarise /root/log.txt' --every 1h\n  \
        ironclaw task add backup --prompt 'Run /root/backup.sh' --cron '0 3 * * *' --tz Europe/Berlin\n  \
        ironclaw task add remind --prompt 'Check the build' --at 2030-01-31T09:00:00Z"
    )]
    Add {
        /// Task name (lowercase letters, digits, '-')
        name: String,
        /// What the agent is asked at each run (at most 16 KiB)
        #[arg(long)]
        prompt: String,
        /// Once, at this time: RFC 3339, or a local YYYY-MM-DDTHH:MM[:SS] in --tz
        #[arg(long, group = "when", value_name = "TIME")]
        at: Option<String>,
        /// At this interval: 30s, 5m, 1h, 1d
        #[arg(long, group = "when", value_name = "DURATION")]
        every: Option<String>,
        /// On this cron schedule: 5 fields, or 6 with seconds first
        #[arg(long, group = "when", value_name = "EXPR")]
        cron: Option<String>,
        /// IANA time zone of --cron and a local --at (default UTC)
        #[arg(long, value_name = "ZONE")]
        tz: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List tasks with their next and last run
    #[command(visible_alias = "list")]
    Ls(JsonFlag),
    /// Cancel (remove) a task and its run history
    #[command(visible_alias = "delete")]
    Rm { name: String },
    /// A task's runs, newest first, with their result or why they failed
    Runs {
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

// ---------------------------------------------------------------- memory

#[derive(Debug, Subcommand)]
pub enum MemoryCmd {
    /// What is indexed, and how search ranks (hybrid, or text only and why)
    Status {
        /// Whose memory (admin; default: your own)
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Search memory: path, line range, score and snippet of the best chunks
    #[command(after_help = "Example:\n  ironclaw memory search what is the wifi password")]
    Search {
        /// The query (words are joined with spaces)
        #[arg(required = true)]
        query: Vec<String>,
        /// Most results (1-50, default 6)
        #[arg(long, short = 'n', value_name = "N")]
        max: Option<usize>,
        /// Whose memory (admin; default: your own)
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Reread the memory files from the agent's sandbox and index what changed
    Reindex {
        /// Whose memory (admin; default: your own)
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

// ---------------------------------------------------------------- agent

#[derive(Debug, Args)]
pub struct AskArgs {
    /// The question (words are joined with spaces)
    #[arg(required = true)]
    pub text: Vec<String>,
    /// Continue this session instead of the latest one
    #[arg(long)]
    pub session: Option<String>,
    /// Start a fresh session
    #[arg(long, conflicts_with = "session")]
    pub new: bool,
    /// Model to use for this turn (default: the agent's)
    #[arg(long)]
    pub model: Option<String>,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Continue this session instead of the latest one
    #[arg(long)]
    pub session: Option<String>,
    /// Start a fresh session
    #[arg(long, conflicts_with = "session")]
    pub new: bool,
}

// ---------------------------------------------------------------- watch

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Sandbox name
    pub name: String,
    /// Directory in the sandbox
    pub path: String,
    /// Its subdirectories too
    #[arg(short, long)]
    pub recursive: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

// ---------------------------------------------------------------- channel

#[derive(Debug, Subcommand)]
pub enum ChannelCmd {
    /// Add a channel; credentials stay in the daemon's environment (VAR names)
    #[command(
        after_help = "Examples:\n  ironclaw channel add telegram --name tg --token-env TELEGRAM_BOT_TOKEN\n  \
        ironclaw channel add telegram --name tg --token-env TELEGRAM_BOT_TOKEN --secret-env TG_WEBHOOK_SECRET --public-url https://claw.example.com\n  \
        ironclaw channel add webhook --name hook --secret-env HOOK_SECRET --callback-url https://example.com/replies --access open"
    )]
    Add(Box<ChannelAddArgs>),
    /// List channels with their status
    #[command(visible_alias = "list")]
    Ls(JsonFlag),
    /// Remove a channel (its messages and queue go with it)
    #[command(visible_alias = "delete")]
    Rm { name: String },
    /// Connected, last error and queue depth (all channels, or one)
    Status {
        name: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// A channel's messages and the delivery log of each reply
    Log {
        name: String,
        /// At most this many messages
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum PairCmd {
    /// Link the sender who was sent CODE to user NAME
    Approve {
        code: String,
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Args)]
pub struct ChannelAddArgs {
    /// telegram, slack, discord, matrix or webhook
    pub kind: String,
    #[arg(long)]
    pub name: String,
    /// Env var of ironclawd holding the bot token
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    /// Env var of ironclawd holding the signing secret (webhook, slack) or the webhook secret token (telegram webhook mode)
    #[arg(long, value_name = "VAR", visible_alias = "webhook-secret-env")]
    pub secret_env: Option<String>,
    /// Telegram webhook mode: the daemon's public base URL; Telegram then pushes to URL/v1/channels/NAME/events (needs --secret-env)
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// The service's API base (default: the real service)
    #[arg(long, value_name = "URL")]
    pub api_base: Option<String>,
    /// Where replies are POSTed (webhook)
    #[arg(long, value_name = "URL")]
    pub callback_url: Option<String>,
    /// pairing (default), allowlist or open
    #[arg(long)]
    pub access: Option<String>,
    /// A sender id let in by --access allowlist (repeatable)
    #[arg(long = "allow", value_name = "ID")]
    pub allow: Vec<String>,
    /// A group chat id the bot answers in (repeatable)
    #[arg(long = "group", value_name = "ID")]
    pub groups: Vec<String>,
    /// In groups: answer messages containing this (e.g. @Andy) besides mentions
    #[arg(long)]
    pub trigger: Option<String>,
    /// Session per sender, chat (default) or thread
    #[arg(long)]
    pub scope: Option<String>,
    /// User that allowlisted and open messages run as (default: you); each group gets its own agent
    #[arg(long)]
    pub user: Option<String>,
    #[command(flatten)]
    pub json: JsonFlag,
}
