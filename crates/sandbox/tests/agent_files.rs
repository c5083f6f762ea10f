//! The typed whole-file calls of the host client (`AgentClient::read_file`,
//! `AgentClient::write_file`) against the real guest agent in `serve`
//! mode. Its own test binary: agent_flow.rs measures its process's memory.

#[path = "common/serve_guest.rs"]
mod serve_guest;

use ironclaw_proto::CHUNK;
use ironclaw_sandbox::{AgentClient, AgentError};
use serve_guest::{guest_bin, pattern, within, Guest, STEP};

/// A round trip of several chunks with parents created, a read cut at its
/// cap, and the guest's refusals as typed errors; the connection stays
/// usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_file_calls_round_trip_and_stop_at_their_cap() {
    let Some(bin) = guest_bin() else {
        eprintln!("skipped: needs the guest binary (IRONCLAW_GUEST_BIN)");
        return;
    };
    let g = Guest::start(&bin);
    let c = within("connect", AgentClient::connect_unix(&g.sock))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/data.bin").display().to_string();
    let data = pattern(3 * CHUNK + 17);
    let st = within("write_file", c.write_file(&path, 0o640, true, &data))
        .await
        .unwrap();
    assert_eq!((st.size, st.mode & 0o777), (data.len() as u64, 0o640));
    let got = within("read_file", c.read_file(&path, 1 << 30))
        .await
        .unwrap();
    assert!(!got.truncated);
    assert!(got.data == data, "the bytes came back unchanged");
    let got = within("read_file capped", c.read_file(&path, 1000))
        .await
        .unwrap();
    assert!(got.truncated);
    assert_eq!(got.data, data[..1000]);
    // Not a regular file: refused, never read without end.
    assert!(matches!(
        within("read /dev/zero", c.read_file("/dev/zero", 1 << 20)).await,
        Err(AgentError::Guest { .. })
    ));
    let missing = dir.path().join("nope").display().to_string();
    match within("read missing", c.read_file(&missing, 10)).await {
        Err(AgentError::Guest { kind, .. }) => {
            assert_eq!(kind, ironclaw_proto::ErrorKind::NotFound)
        }
        other => panic!("{other:?}"),
    }
    let orphan = dir.path().join("x/y/z").display().to_string();
    assert!(matches!(
        within(
            "write without parents",
            c.write_file(&orphan, 0o644, false, b"x")
        )
        .await,
        Err(AgentError::Guest { .. })
    ));
    assert!(!std::path::Path::new(&orphan).exists());
    within("ping after", c.ping(STEP)).await.unwrap();
}
