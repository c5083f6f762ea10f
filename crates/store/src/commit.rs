//! Group commit. Writes submitted with [`Store::write`](crate::Store::write)
//! run on one thread: as many as are queued go into one transaction, each in
//! a savepoint of its own (a failing write rolls back only itself), and every
//! caller is answered after the COMMIT, so after its fsync. Concurrent turns
//! then share fsyncs instead of queueing for one each, and an async caller
//! waits on a channel instead of blocking a runtime thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use rusqlite::Connection;

use crate::db::Db;
use crate::StoreError;

/// Most writes one transaction takes, so a flood still answers in bounded time.
const MAX_BATCH: usize = 256;

/// What a write hands back once it has run: the answer to send when the
/// transaction's fate is known (`Some` = the COMMIT failed), and whether
/// the write itself succeeded (a failed one is rolled back to its savepoint).
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;
/// Runs a write against the open transaction, or (`Err`, why the
/// transaction could not begin) answers without running it.
type Job = Box<dyn FnOnce(Result<&Connection, &str>) -> (bool, Answer) + Send>;

pub(crate) struct Committer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    pub(crate) fn start(db: Arc<Db>) -> std::io::Result<Committer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("store-commit".into())
            .spawn(move || run(&db, rx))?;
        Ok(Committer {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Run `f` in the next transaction; the answer comes after its COMMIT.
    pub(crate) async fn submit<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer_tx, answer_rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => catch_unwind(AssertUnwindSafe(|| f(conn)))
                    .unwrap_or_else(|_| Err(StoreError::Commit("the write panicked".into()))),
                Err(why) => Err(StoreError::Commit(format!(
                    "could not begin a transaction: {why}"
                ))),
            };
            let ok = result.is_ok();
            let answer: Answer = Box::new(move |commit_failed| {
                let _ = answer_tx.send(match commit_failed {
                    Some(e) if ok => Err(StoreError::Commit(e.to_string())),
                    _ => result,
                });
            });
            (ok, answer)
        });
        let Some(jobs) = &self.jobs else {
            return Err(StoreError::Commit("the store is closed".into()));
        };
        jobs.send(job)
            .map_err(|_| StoreError::Commit("the commit thread is gone".into()))?;
        answer_rx
            .await
            .map_err(|_| StoreError::Commit("the commit thread is gone".into()))?
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has answered what is queued.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(db: &Db, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let conn = db.writer();
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let why = e.to_string();
            for job in batch {
                let (_, answer) = job(Err(&why));
                answer(None);
            }
            continue;
        }
        let mut answers = Vec::with_capacity(batch.len());
        for job in batch {
            if let Err(e) = conn.execute_batch("SAVEPOINT job") {
                answers.push(job(Err(&e.to_string())).1);
                continue;
            }
            let (ok, answer) = job(Ok(&conn));
            let end = if ok {
                conn.execute_batch("RELEASE job")
            } else {
                conn.execute_batch("ROLLBACK TO job; RELEASE job")
            };
            if let Err(e) = end {
                tracing::error!("store: ending a write's savepoint: {e}");
            }
            answers.push(answer);
        }
        let committed = conn.execute_batch("COMMIT");
        let failed = committed.err().map(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            e.to_string()
        });
        drop(conn);
        for answer in answers {
            answer(failed.as_deref());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Store, StoreError};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
    }

    #[test]
    fn a_failed_write_undoes_only_itself_and_the_rest_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = std::sync::Arc::new(Store::open(&path).unwrap());
        runtime().block_on(async {
            // Enough at once that they share transactions.
            let writes: Vec<_> = (0..64)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store
                            .write(move |c| {
                                c.execute(
                                    "INSERT INTO users (name, admin, created_at) VALUES (?1, 0, '')",
                                    [format!("u{i}")],
                                )?;
                                if i % 2 == 1 {
                                    return Err(StoreError::Conflict(format!("u{i}")));
                                }
                                Ok(i)
                            })
                            .await
                    })
                })
                .collect();
            for (i, w) in writes.into_iter().enumerate() {
                let r = w.await.unwrap();
                assert_eq!(r.is_ok(), i % 2 == 0, "write {i}: {r:?}");
            }
        });
        // A fresh connection, as after a restart, sees exactly the answered writes.
        drop(store);
        let again = Store::open(&path).unwrap();
        let names: Vec<String> = again.users().unwrap().into_iter().map(|u| u.name).collect();
        for i in 0..64 {
            assert_eq!(
                names.contains(&format!("u{i}")),
                i % 2 == 0,
                "u{i}: {names:?}"
            );
        }
    }

    #[test]
    fn a_write_is_visible_to_readers_when_answered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        runtime().block_on(async {
            for i in 0..20 {
                let name = format!("r{i}");
                let n = name.clone();
                store
                    .write(move |c| {
                        c.execute(
                            "INSERT INTO users (name, admin, created_at) VALUES (?1, 0, '')",
                            [n],
                        )?;
                        Ok(())
                    })
                    .await
                    .unwrap();
                // `user` reads on a reader connection, not the writer.
                assert_eq!(store.user(&name).unwrap().name, name);
            }
        });
    }

    #[test]
    fn a_panicking_write_is_an_error_and_the_thread_lives_on() {
        let store = Store::open_in_memory().unwrap();
        runtime().block_on(async {
            let r: Result<(), _> = store.write(|_| panic!("boom")).await;
            assert!(matches!(r, Err(StoreError::Commit(_))), "{r:?}");
            store.write(|_| Ok(())).await.unwrap();
        });
    }
}
