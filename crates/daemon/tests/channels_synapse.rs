//! The Matrix channel against a real homeserver: Synapse (`matrix-synapse`
//! from PyPI; scripts/test.sh installs it in a venv and sets
//! IRONCLAW_SYNAPSE_PYTHON), started here on a loopback port with SQLite,
//! no federation listener and relaxed rate limits. A bot user and a human
//! user are registered with the shared secret (the admin API); the human
//! invites the bot to a room, the channel joins, the human's message runs
//! an agent turn, and the reply arrives in the room, formatted.

mod common;

use common::wait_for;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::chat::MOCK_KEY;
use common::Daemon;
use ironclaw_agent::mock::{MockLlm, MockReply};
use serde_json::{json, Value};

const SHARED_SECRET: &str = "ironclaw-test-registration-secret";

/// The venv's python with synapse importable, if any.
fn synapse_python() -> Option<PathBuf> {
    let p = match std::env::var_os("IRONCLAW_SYNAPSE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/py/synapse/bin/python")
        }
    };
    let ok = Command::new(&p)
        .args(["-c", "import synapse.app.homeserver"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(p)
}

/// A Synapse process, killed (and its directory removed) on drop.
struct Synapse {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Synapse {
    async fn start(python: &PathBuf) -> Synapse {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let port = free_port();
        let limit = "{per_second: 1000, burst_count: 1000}";
        // Only a client listener: no federation, no key servers.
        let config = format!(
            r#"server_name: "localhost"
pid_file: {d}/homeserver.pid
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: {d}/homeserver.db
media_store_path: {d}/media
signing_key_path: {d}/signing.key
registration_shared_secret: "{SHARED_SECRET}"
macaroon_secret_key: "ironclaw-test-macaroon"
form_secret: "ironclaw-test-form"
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
enable_metrics: false
presence:
  enabled: false
rc_message: {limit}
rc_registration: {limit}
rc_login:
  address: {limit}
  account: {limit}
  failed_attempts: {limit}
rc_joins:
  local: {limit}
  remote: {limit}
rc_invites:
  per_room: {limit}
  per_user: {limit}
"#
        );
        let cfg = dir.path().join("homeserver.yaml");
        std::fs::write(&cfg, config).unwrap();
        let t = Instant::now();
        let keys = Command::new(python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&cfg)
            .arg("--generate-keys")
            .output()
            .unwrap();
        assert!(
            keys.status.success(),
            "synapse --generate-keys: {}",
            String::from_utf8_lossy(&keys.stderr)
        );
        let log = std::fs::File::create(dir.path().join("synapse.log")).unwrap();
        let mut cmd = Command::new(python);
        cmd.args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Dies with the test binary even when that is killed outright.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let s = Synapse {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let up = http
                .get(format!("{}/_matrix/client/versions", s.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if up {
                break;
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(s._dir.path().join("synapse.log")).unwrap_or_default();
                panic!("synapse did not start in 90 s:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("synapse: up in {:.1} s", t.elapsed().as_secs_f64());
        s
    }

    /// Register `user` through the shared-secret admin API; its access token.
    async fn register(&self, user: &str) -> String {
        let http = reqwest::Client::new();
        let url = format!("{}/_synapse/admin/v1/register", self.url);
        let nonce: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        let nonce = nonce["nonce"].as_str().unwrap().to_string();
        let password = format!("pw-{user}-0123456789");
        let key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            SHARED_SECRET.as_bytes(),
        );
        let msg = format!("{nonce}\0{user}\0{password}\0notadmin");
        let mac: String = ring::hmac::sign(&key, msg.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let r = http
            .post(&url)
            .json(
                &json!({"nonce": nonce, "username": user, "password": password,
                "admin": false, "mac": mac}),
            )
            .send()
            .await
            .unwrap();
        let st = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(st, 200, "register {user}: {v}");
        v["access_token"].as_str().unwrap().to_string()
    }

    async fn call(&self, token: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
        let get = method == reqwest::Method::GET;
        let mut r = reqwest::Client::new()
            .request(method, format!("{}/_matrix/client/v3{path}", self.url))
            .bearer_auth(token);
        if !get {
            r = r.json(&body);
        }
        let r = r.send().await.unwrap();
        let st = r.status();
        let v: Value = r.json().await.unwrap_or_default();
        assert!(st.is_success(), "{path}: {st} {v}");
        v
    }
}

fn enc(s: &str) -> String {
    s.replace('!', "%21")
        .replace(':', "%3A")
        .replace('$', "%24")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_channel_against_a_real_synapse() {
    let Some(python) = synapse_python() else {
        let why = "matrix-synapse is not installed (scripts/test.sh installs it in \
                   target/py/synapse and sets IRONCLAW_SYNAPSE_PYTHON)";
        // scripts/test.sh (what CI runs) sets the variable: there it must work.
        if std::env::var("CI").as_deref() == Ok("true")
            || std::env::var_os("IRONCLAW_SYNAPSE_PYTHON").is_some()
        {
            panic!("channels_synapse: {why}");
        }
        eprintln!("channels_synapse: skipped: {why}");
        return;
    };
    let hs = Synapse::start(&python).await;
    let bot = hs.register("andybot").await;
    let pat = hs.register("pat").await;

    let mock = MockLlm::start([MockReply::text("Hello from the **agent**")]).await;
    let base = mock.openai_base();
    let d = Daemon::start_env(
        "",
        &[
            ("IRONCLAW_PROVIDER", "openai"),
            ("IRONCLAW_BASE_URL", &base),
            ("IRONCLAW_API_KEY", MOCK_KEY),
            ("IRONCLAW_MODEL", "mock-model"),
            ("MX_TOKEN", &bot),
        ],
    )
    .await;
    d.build_image("mini", "busybox").await;
    let (st, v) = d
        .post(
            "/v1/channels",
            json!({"kind": "matrix", "name": "mx", "token_env": "MX_TOKEN",
                "api_base": hs.url, "access": "open"}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    // Connected: its first sync marked "now".
    wait_for(60, "the channel connected", || async {
        d.get("/v1/channels/mx").await.1["connected"] == true
    })
    .await;

    // Pat opens a room with the bot; the channel joins on the invite.
    use reqwest::Method;
    let room = hs
        .call(
            &pat,
            Method::POST,
            "/createRoom",
            json!({"preset": "private_chat", "invite": ["@andybot:localhost"], "is_direct": true}),
        )
        .await["room_id"]
        .as_str()
        .unwrap()
        .to_string();
    let members_path = format!("/rooms/{}/joined_members", enc(&room));
    wait_for(60, "the bot in the room", || async {
        hs.call(&pat, Method::GET, &members_path, json!({})).await["joined"]
            .get("@andybot:localhost")
            .is_some()
    })
    .await;

    hs.call(
        &pat,
        Method::PUT,
        &format!("/rooms/{}/send/m.room.message/t1", enc(&room)),
        json!({"msgtype": "m.text", "body": "hi bot, are you there?"}),
    )
    .await;

    // The reply arrives in the room, from the bot, as Matrix HTML.
    let messages_path = format!("/rooms/{}/messages?dir=b&limit=20", enc(&room));
    let deadline = Instant::now() + Duration::from_secs(120);
    let reply = loop {
        let v = hs.call(&pat, Method::GET, &messages_path, json!({})).await;
        let found = v["chunk"].as_array().and_then(|c| {
            c.iter()
                .find(|e| e["type"] == "m.room.message" && e["sender"] == "@andybot:localhost")
                .cloned()
        });
        if let Some(e) = found {
            break e;
        }
        if Instant::now() > deadline {
            let (_, log) = d.get("/v1/channels/mx/messages").await;
            let (_, st) = d.get("/v1/channels/mx").await;
            panic!("timed out waiting for the agent's reply in the room: {v}\nchannel: {st}\nlog: {log}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(reply["content"]["body"], "Hello from the **agent**");
    assert_eq!(
        reply["content"]["formatted_body"],
        "Hello from the <b>agent</b>"
    );
    assert!(mock.requests()[0].raw.contains("hi bot, are you there?"));
    assert_eq!(mock.requests().len(), 1);
    let (_, log) = d.get("/v1/channels/mx/messages").await;
    let msgs = log["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{log}");
    assert_eq!(msgs[0]["message"]["state"], "done");
    assert_eq!(msgs[0]["replies"][0]["part"]["state"], "sent");
}
