//! A scripted guest agent for unit tests of the host side: the test reads
//! and writes its frames by hand.

use std::time::Duration;

use ironclaw_proto::{handshake, FrameReader, FrameWriter, GuestMsg, HostMsg};
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};

use super::AgentClient;

/// Deadline of every step: a hang fails the test.
pub(crate) const STEP: Duration = Duration::from_secs(5);

pub(crate) async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f).await.expect("hung")
}

/// A scripted guest: the test reads and writes its frames by hand.
pub(crate) struct FakeGuest {
    pub(crate) r: FrameReader<ReadHalf<DuplexStream>>,
    pub(crate) w: FrameWriter<WriteHalf<DuplexStream>>,
}

impl FakeGuest {
    pub(crate) async fn next(&mut self) -> (u32, HostMsg) {
        within(self.r.read()).await.unwrap()
    }
    /// Next message other than a credit grant.
    pub(crate) async fn next_op(&mut self) -> (u32, HostMsg) {
        loop {
            match self.next().await {
                (_, HostMsg::Credit(_)) => continue,
                m => return m,
            }
        }
    }
    pub(crate) async fn send(&mut self, id: u32, m: GuestMsg) {
        within(self.w.write(id, &m)).await.unwrap()
    }
}

pub(crate) async fn pair() -> (AgentClient, FakeGuest) {
    let (host, mut guest) = tokio::io::duplex(4 << 20);
    let g = tokio::spawn(async move {
        handshake::server(&mut guest, "fake").await.unwrap();
        guest
    });
    let client = within(AgentClient::over(host)).await.unwrap();
    let (r, w) = tokio::io::split(g.await.unwrap());
    (
        client,
        FakeGuest {
            r: FrameReader::new(r),
            w: FrameWriter::new(w),
        },
    )
}
