//! Typed calls of the `/v1` API: each returns the `ironclaw-api` type the
//! daemon answers with, so commands read fields, not JSON values.

use anyhow::{Context, Result};
use ironclaw_api as api;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::{seg, Client};

fn sandbox(name: &str) -> String {
    format!("/v1/sandboxes/{}", seg(name))
}

fn sandbox_ctx(name: &str) -> String {
    format!("sandbox '{name}'")
}

impl Client {
    /// `method path` with an optional JSON body; the answer as `T`.
    pub async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        context: &str,
    ) -> Result<T> {
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = self.send(rb, context).await?;
        let bytes = resp.bytes().await.context("reading response")?;
        serde_json::from_slice(&bytes).context("the daemon's answer is not what the API says")
    }

    pub async fn get_as<T: DeserializeOwned>(&self, path: &str, context: &str) -> Result<T> {
        self.call::<(), T>(Method::GET, path, None, context).await
    }

    pub async fn post_as<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        context: &str,
    ) -> Result<T> {
        self.call(Method::POST, path, Some(body), context).await
    }

    /// A call answered with 204 (or a body nobody needs).
    pub async fn call_empty<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        context: &str,
    ) -> Result<StatusCode> {
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        Ok(self.send(rb, context).await?.status())
    }

    // -- sandboxes

    pub async fn sandboxes(&self) -> Result<api::SandboxList> {
        self.get_as("/v1/sandboxes", "sandboxes").await
    }

    pub async fn sandbox(&self, name: &str) -> Result<api::Sandbox> {
        self.get_as(&sandbox(name), &sandbox_ctx(name)).await
    }

    pub async fn create_sandbox(&self, req: &api::CreateSandbox) -> Result<api::Sandbox> {
        self.post_as("/v1/sandboxes", req, &sandbox_ctx(&req.name))
            .await
    }

    pub async fn start_sandbox(&self, name: &str) -> Result<api::Sandbox> {
        let p = format!("{}/start", sandbox(name));
        self.post_as(&p, &serde_json::json!({}), &sandbox_ctx(name))
            .await
    }

    pub async fn stop_sandbox(&self, name: &str) -> Result<api::Sandbox> {
        let p = format!("{}/stop", sandbox(name));
        self.post_as(&p, &serde_json::json!({}), &sandbox_ctx(name))
            .await
    }

    pub async fn remove_sandbox(&self, name: &str) -> Result<()> {
        self.call_empty::<()>(Method::DELETE, &sandbox(name), None, &sandbox_ctx(name))
            .await
            .map(|_| ())
    }

    pub async fn set_egress(&self, name: &str, egress: &api::Egress) -> Result<api::Sandbox> {
        let p = format!("{}/egress", sandbox(name));
        self.call(Method::PUT, &p, Some(egress), &sandbox_ctx(name))
            .await
    }

    pub async fn sandbox_info(&self, name: &str) -> Result<api::GuestInfo> {
        self.get_as(&format!("{}/info", sandbox(name)), &sandbox_ctx(name))
            .await
    }

    // -- ports

    pub async fn ports(&self, name: &str) -> Result<api::ExposureList> {
        self.get_as(&format!("{}/ports", sandbox(name)), &sandbox_ctx(name))
            .await
    }

    pub async fn expose(&self, name: &str, req: &api::Expose) -> Result<api::Exposure> {
        self.post_as(&format!("{}/ports", sandbox(name)), req, &sandbox_ctx(name))
            .await
    }

    // -- files

    pub async fn stat(&self, name: &str, path: &str) -> Result<api::FileStat> {
        let p = format!(
            "{}/fs/stat?path={}",
            sandbox(name),
            crate::client::encode(path)
        );
        self.get_as(&p, &format!("{name}:{path}")).await
    }

    pub async fn list_dir(&self, name: &str, path: &str) -> Result<api::DirList> {
        let p = format!(
            "{}/fs/list?path={}",
            sandbox(name),
            crate::client::encode(path)
        );
        self.get_as(&p, &format!("{name}:{path}")).await
    }

    // -- users and tokens

    pub async fn users(&self) -> Result<api::UserList> {
        self.get_as("/v1/users", "users").await
    }

    pub async fn add_user(&self, name: &str) -> Result<api::NewUser> {
        let req = api::AddUser { name: name.into() };
        self.post_as("/v1/users", &req, &format!("user '{name}'"))
            .await
    }

    pub async fn issue_token(&self, user: &str, label: Option<String>) -> Result<api::NewToken> {
        self.post_as(
            &format!("/v1/users/{}/tokens", seg(user)),
            &api::IssueToken { label },
            &format!("user '{user}'"),
        )
        .await
    }

    pub async fn revoke_tokens(&self, user: &str) -> Result<api::Revoked> {
        self.call::<(), _>(
            Method::DELETE,
            &format!("/v1/users/{}/tokens", seg(user)),
            None,
            &format!("user '{user}'"),
        )
        .await
    }

    // -- tasks

    pub async fn tasks(&self) -> Result<Vec<api::Task>> {
        self.get_as("/v1/tasks", "tasks").await
    }

    pub async fn create_task(&self, req: &api::CreateTask) -> Result<api::Task> {
        let name = req.name.clone().unwrap_or_default();
        self.post_as("/v1/tasks", req, &format!("task '{name}'"))
            .await
    }

    pub async fn task_runs(&self, name: &str) -> Result<Vec<api::TaskRun>> {
        self.get_as(
            &format!("/v1/tasks/{}/runs", seg(name)),
            &format!("task '{name}'"),
        )
        .await
    }

    // -- keys, images, host

    pub async fn keys(&self) -> Result<api::KeyList> {
        self.get_as("/v1/keys", "SSH keys").await
    }

    pub async fn add_key(&self, req: &api::AddKey) -> Result<api::SshKey> {
        self.post_as("/v1/keys", req, "SSH key").await
    }

    pub async fn images(&self) -> Result<api::ImageList> {
        self.get_as("/v1/images", "images").await
    }

    pub async fn host(&self) -> Result<api::HostReport> {
        self.get_as("/v1/host", "host").await
    }

    pub async fn health(&self) -> Result<api::Health> {
        self.get_as("/v1/health", "health").await
    }
}
