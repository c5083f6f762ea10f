//! Images: list, build (progress streamed as NDJSON), remove.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use ironclaw_api as api;
use ironclaw_sandbox::image::{self, BuildRequest, ImageSource};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use crate::auth::Caller;
use crate::error::{ApiError, Json};
use crate::AppState;

#[utoipa::path(get, path = "/v1/images", operation_id = "listImages", tag = "images",
    summary = "List images",
    responses((status = 200, description = "success", body = api::ImageList),
        (status = "default", description = "error", body = api::Error)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<api::ImageList>, ApiError> {
    let images = image::list(&st.manager.images_dir())?;
    // A user's count covers only their own sandboxes: others' stay unseen.
    let mine = if caller.admin {
        Vec::new()
    } else {
        st.manager.store.sandboxes_of(&caller.user)?
    };
    let mut out = Vec::new();
    for m in images {
        let in_use = if caller.admin {
            st.manager.store.count_sandboxes_using_image(&m.name)?
        } else {
            mine.iter().filter(|r| r.image == m.name).count() as u64
        };
        out.push(image_view(m, in_use));
    }
    Ok(axum::Json(api::ImageList { images: out }))
}

fn image_view(m: image::ImageMeta, in_use: u64) -> api::Image {
    api::Image {
        name: m.name,
        source: m.source.as_str().to_string(),
        created_at: m.created_at,
        size_bytes: m.size_bytes,
        guest_version: m.guest_version,
        build_seconds: m.build_seconds,
        vm: m.vm.map(|v| api::VmMeta {
            kernel_version: v.kernel_version,
            vmlinuz: v.vmlinuz.display().to_string(),
            vmlinux: v.vmlinux.display().to_string(),
            initramfs: v.initramfs,
            rootfs_ext4: v.rootfs_ext4,
            ext4_bytes: v.ext4_bytes,
            modules: v.modules,
        }),
        vm_error: m.vm_error,
        in_use,
    }
}

#[utoipa::path(post, path = "/v1/images", operation_id = "buildImage", tag = "images",
    summary = "Build an image (admin); progress streamed as NDJSON lines (BuildEvent)",
    request_body = api::BuildImage,
    responses((status = 200, description = "one BuildEvent per line", body = String, content_type = "application/x-ndjson"),
        (status = "default", description = "error", body = api::Error)))]
pub async fn build(
    State(st): State<AppState>,
    caller: Caller,
    Json(b): Json<api::BuildImage>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    ironclaw_sandbox::name::validate(&b.name).map_err(|e| ApiError::InvalidName(e.to_string()))?;
    let source: ImageSource = b.from.parse()?;
    let images_dir = st.manager.images_dir();
    if image::get(&images_dir, &b.name).is_ok() {
        return Err(ApiError::Conflict(format!(
            "image '{}' already exists (remove it first)",
            b.name
        )));
    }
    let guest_bin = st.manager.guest_bin.clone().ok_or_else(|| {
        ApiError::Unavailable(
            "no ironclaw-guest binary found; start ironclawd with --guest-bin PATH".into(),
        )
    })?;
    std::fs::create_dir_all(&images_dir).map_err(|e| ApiError::Internal(e.to_string()))?;
    let req = BuildRequest {
        name: b.name,
        source,
        images_dir,
        guest_bin,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    tokio::spawn(async move {
        let ptx = tx.clone();
        let progress = move |p: image::Progress| {
            let mut v = serde_json::to_value(&p).unwrap_or_default();
            v["type"] = "progress".into();
            let _ = ptx.send(v);
        };
        let line = match image::build(&req, &progress).await {
            Ok(meta) => serde_json::json!({"type": "done", "image": meta}),
            Err(e) => serde_json::json!({"type": "error", "message": e.to_string()}),
        };
        let _ = tx.send(line);
        // A build decompresses a kernel (~50 MiB) in this process; hand the
        // freed heap back to the system instead of keeping it as idle RSS.
        // SAFETY: malloc_trim only releases free memory.
        unsafe { libc::malloc_trim(0) };
    });
    let lines = UnboundedReceiverStream::new(rx).map(|v| Ok::<_, std::io::Error>(format!("{v}\n")));
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/v1/images/{name}", operation_id = "deleteImage", tag = "images",
    summary = "Remove an unused image (admin)",
    params(("name" = String, Path)),
    responses((status = 204, description = "success"),
        (status = "default", description = "error", body = api::Error)))]
pub async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    // Checked before the name reaches the filesystem: a 300-byte name used
    // to come back from open(2) as ENAMETOOLONG, a 500.
    ironclaw_sandbox::name::validate(&name).map_err(|e| ApiError::InvalidName(e.to_string()))?;
    let images_dir = st.manager.images_dir();
    image::get(&images_dir, &name)?;
    let users = st.manager.store.count_sandboxes_using_image(&name)?;
    if users > 0 {
        return Err(ApiError::Conflict(format!(
            "image '{name}' is used by {users} sandbox(es); remove them first"
        )));
    }
    image::remove(&images_dir, &name)?;
    Ok(StatusCode::NO_CONTENT)
}
