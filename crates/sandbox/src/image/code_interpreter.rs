//! The code-interpreter image: the Debian image plus a venv with a Jupyter
//! kernel (ipykernel, jupyter_client, pinned, from PyPI at build time) and
//! our server for E2B's Code Interpreter SDK on port 49999
//! (`code_interpreter/server.py`: one kernel per context, each output
//! message streamed as one NDJSON line). The image's [`StartCommand`] has
//! the daemon start that server in every sandbox of it.

use std::path::Path;

use super::debian::{self, Extras};
use super::{write_file, ImageError, Progress, StartCommand};

/// Where the venv and the server live in the image.
const HOME: &str = "/opt/ironclaw/code-interpreter";
/// The port E2B's SDK sends its requests to (its `JUPYTER_PORT`).
pub const PORT: u16 = 49999;
/// The Python packages: ipykernel and jupyter_client, pinned with all
/// they pull in (what pip resolves for CPython 3.11, bookworm's python3),
/// installed with `--no-deps` so nothing unpinned slips in.
const REQUIREMENTS: &[&str] = &[
    "asttokens==3.0.2",
    "comm==0.2.3",
    "debugpy==1.8.22",
    "executing==2.3.0",
    "ipykernel==7.4.0",
    "ipython==9.18.1",
    "ipython_pygments_lexers==1.1.1",
    "jedi==0.20.1",
    "jupyter_client==8.10.0",
    "jupyter_core==5.9.1",
    "matplotlib-inline==0.2.2",
    "nest-asyncio2==1.7.4",
    "packaging==26.4",
    "parso==0.8.7",
    "pexpect==4.9.0",
    "platformdirs==4.14.9",
    "prompt_toolkit==3.0.53",
    "psutil==7.2.2",
    "ptyprocess==0.7.0",
    "pure_eval==0.2.4",
    "Pygments==2.21.0",
    "python-dateutil==4.0.0",
    "pyzmq==27.3.0",
    "stack-data==0.6.3",
    "tornado==6.6.1",
    "traitlets==5.16.1",
    "typing_extensions==4.16.0",
    "tzdata==2026.6",
    "wcwidth==0.9.4",
];
/// The CA bundle of Debian (and of the host, when it is Debian-like).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Where the host's bundle sits in the rootfs while pip runs.
const HOST_CA: &str = "/tmp/ironclaw-build-ca.pem";
const SERVER: &str = include_str!("code_interpreter/server.py");

pub(super) async fn build(
    root: &Path,
    guest_bin: &Path,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(), ImageError> {
    let venv = format!("{HOME}/venv");
    // The host's CA settings name host paths: in the chroot they are
    // Debian's bundle, or nothing (requests prefers REQUESTS_CA_BUNDLE to
    // `--cert`), so every one of them is the copied host bundle here.
    let pip = format!(
        "env -u CURL_CA_BUNDLE -u SSL_CERT_DIR -u PIP_FIND_LINKS \
         REQUESTS_CA_BUNDLE={HOST_CA} SSL_CERT_FILE={HOST_CA} PIP_CERT={HOST_CA} \
         chroot \"$1\" {venv}/bin/pip install --no-cache-dir --disable-pip-version-check \
         --progress-bar off --no-deps {}",
        REQUIREMENTS.join(" ")
    );
    let extras = Extras {
        // ensurepip, which Debian ships apart from python3.
        packages: &["python3-venv"],
        customize_hooks: vec![
            format!("chroot \"$1\" python3 -m venv {venv}"),
            // pip trusts what the host trusts (a proxy's CA, say), for
            // the build only.
            format!(
                "if [ -f {CA_BUNDLE} ]; then cp {CA_BUNDLE} \"$1{HOST_CA}\"; \
                 else cp \"$1{CA_BUNDLE}\" \"$1{HOST_CA}\"; fi"
            ),
            pip,
            format!("rm -f \"$1{HOST_CA}\""),
        ],
    };
    debian::build_with(root, guest_bin, &extras, progress).await?;
    write_file(root, &format!("{HOME}/server.py"), SERVER, 0o644)
}

/// The server, started after each boot; ready when it accepts on [`PORT`].
pub(super) fn start_command() -> StartCommand {
    StartCommand {
        name: "code-interpreter".into(),
        argv: vec![
            format!("{HOME}/venv/bin/python"),
            format!("{HOME}/server.py"),
        ],
        env: vec![
            ("HOME".into(), "/root".into()),
            (
                "PATH".into(),
                format!("{HOME}/venv/bin:/usr/local/bin:/usr/bin:/bin"),
            ),
        ],
        cwd: Some("/root".into()),
        log: "/var/log/code-interpreter.log".into(),
        ready_port: Some(PORT),
    }
}
