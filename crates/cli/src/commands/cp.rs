//! `ironclaw cp SRC DST`: streamed upload (PUT) / download (GET) of files.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use reqwest::{Body, Method};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use crate::args::CpArgs;
use crate::client::{usage, ApiError, Client};
use crate::commands::sandbox;
use crate::output::{base_name, format_bytes, join_remote, parse_location, Location};
use crate::term;

pub async fn run(c: &Client, a: CpArgs) -> Result<i32> {
    let src = parse_location(&a.src).map_err(usage)?;
    let dst = parse_location(&a.dst).map_err(usage)?;
    match (src, dst) {
        (Location::Remote { .. }, Location::Remote { .. }) => Err(usage(
            "copying directly between sandboxes is not supported; copy through a local file",
        )),
        (Location::Remote { sandbox, path }, local) => download(c, &sandbox, &path, local).await,
        (local, Location::Remote { sandbox, path }) => upload(c, local, &sandbox, &path).await,
        _ => Err(usage(
            "one of SRC and DST must be in a sandbox, written NAME:/path (e.g. dev:/root/app.py)",
        )),
    }
}

fn files_path(sandbox_name: &str, remote: &str, mode: Option<u32>) -> String {
    let mut q = vec![("path", remote.to_string())];
    if let Some(m) = mode {
        q.push(("mode", format!("{m:o}")));
    }
    format!(
        "{}/files?{}",
        sandbox::path(sandbox_name),
        crate::client::query_string(&q)
    )
}

/// `kind` of a remote path, or None if it does not exist.
async fn remote_kind(c: &Client, name: &str, path: &str) -> Result<Option<String>> {
    match c.stat(name, path).await {
        Ok(st) => Ok(Some(st.kind.as_str().to_string())),
        // Missing path (or unknown sandbox: the PUT will then say so).
        Err(e)
            if e.downcast_ref::<ApiError>()
                .is_some_and(|a| a.status == 404) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

async fn upload(c: &Client, src: Location, name: &str, remote: &str) -> Result<i32> {
    let (body, mode, local_name, size) = match &src {
        Location::Local(p) => {
            let meta = std::fs::metadata(p).with_context(|| format!("cannot read {p}"))?;
            if meta.is_dir() {
                bail!("{p} is a directory; cp copies single files (for a tree: tar c {p} | ironclaw cp - {name}:/root/x.tar)");
            }
            let f = tokio::fs::File::open(p)
                .await
                .with_context(|| format!("cannot open {p}"))?;
            (
                Body::wrap_stream(ReaderStream::with_capacity(f, 64 * 1024)),
                Some(meta.permissions().mode() & 0o7777),
                base_name(p).map(str::to_string),
                Some(meta.len()),
            )
        }
        Location::Std => (
            Body::wrap_stream(ReaderStream::with_capacity(tokio::io::stdin(), 64 * 1024)),
            None,
            None,
            None,
        ),
        Location::Remote { .. } => unreachable!(),
    };
    let is_dir =
        remote.ends_with('/') || remote_kind(c, name, remote).await?.as_deref() == Some("dir");
    let target = if is_dir {
        match &local_name {
            Some(n) => join_remote(remote, n),
            None => {
                bail!("{name}:{remote} is a directory; give a file name for data read from stdin")
            }
        }
    } else {
        remote.to_string()
    };
    let rb = c
        .request(Method::PUT, &files_path(name, &target, mode))
        .header("content-type", "application/octet-stream")
        .body(body);
    let resp = c.send(rb, &format!("{name}:{target}")).await?;
    let stat: Option<ironclaw_api::FileStat> = resp.json().await.ok();
    if term::stderr_is_tty() {
        let n = stat.map(|s| s.size).or(size).unwrap_or(0);
        eprintln!("copied {} to {name}:{target}", format_bytes(n));
    }
    Ok(0)
}

async fn download(c: &Client, name: &str, remote: &str, dst: Location) -> Result<i32> {
    let rb = c.request(Method::GET, &files_path(name, remote, None));
    let ctx = format!("{name}:{remote}");
    let local = match dst {
        Location::Std => {
            let resp = c.send(rb, &ctx).await?;
            let mut out = tokio::io::stdout();
            let mut s = resp.bytes_stream();
            while let Some(chunk) = s.next().await {
                out.write_all(&chunk.context("download interrupted")?)
                    .await?;
            }
            out.flush().await?;
            return Ok(0);
        }
        Location::Local(p) => p,
        Location::Remote { .. } => unreachable!(),
    };
    let mut target = PathBuf::from(&local);
    if local.ends_with('/') || target.is_dir() {
        let Some(n) = base_name(remote) else {
            bail!("{ctx} has no file name; give a local file name");
        };
        target = target.join(n);
    }
    let resp = c.send(rb, &ctx).await?;
    let tmp = temp_path(&target);
    let result = write_stream(resp, &tmp).await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Keep an existing file's permissions when overwriting it.
    if let Ok(m) = std::fs::metadata(&target) {
        let _ = std::fs::set_permissions(&tmp, m.permissions());
    }
    if let Err(e) = std::fs::rename(&tmp, &target) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", target.display()));
    }
    if term::stderr_is_tty() {
        let n = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
        eprintln!("copied {} to {}", format_bytes(n), target.display());
    }
    Ok(0)
}

async fn write_stream(resp: reqwest::Response, tmp: &Path) -> Result<()> {
    let mut f = tokio::fs::File::create(tmp)
        .await
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        f.write_all(&chunk.context("download interrupted")?)
            .await
            .with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    f.flush().await?;
    f.sync_all().await.ok();
    Ok(())
}

/// Temporary file next to `target` (same filesystem, so rename is atomic).
pub fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    target.with_file_name(format!(".{name}.ironclaw-{}.part", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            files_path("dev", "/root/a b.py", Some(0o644)),
            "/v1/sandboxes/dev/files?path=/root/a%20b.py&mode=644"
        );
        assert_eq!(
            files_path("dev", "/x", None),
            "/v1/sandboxes/dev/files?path=/x"
        );
        let t = temp_path(Path::new("/tmp/out/back.py"));
        assert_eq!(t.parent(), Some(Path::new("/tmp/out")));
        assert!(t
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".back.py.ironclaw-"));
    }
}
