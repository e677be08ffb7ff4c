//! Durability of group commits without the writer waiting for the disk.
//!
//! The group writer commits with `synchronous=NORMAL`: SQLite appends the
//! transaction's frames to the WAL and returns without syncing it. Its
//! callers are answered from this thread, once an `fdatasync` of the WAL
//! that began after their commit has returned: what `synchronous=FULL`
//! promises (a sync of the WAL at each commit), but the writer goes on with
//! the next batch while the disk works, and one sync covers every batch
//! committed meanwhile.
//!
//! A failed sync is not retried. After one, the kernel may have dropped the
//! pages it could not write and a later sync would succeed without them, so
//! every batch from then on is refused until the manager restarts (SQLite
//! then reads the WAL as the disk holds it).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, OnceLock};

use crate::store::{StoreError, Timed, TimingHook};

/// What to do once the batch it belongs to is durable, or cannot be.
pub type Release = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

#[derive(Clone)]
pub struct WalSyncer {
    queue: mpsc::Sender<Release>,
    failure: Arc<OnceLock<String>>,
}

impl WalSyncer {
    /// Start the sync thread for the WAL of the database at `db`.
    pub fn start(db: &Path, timing: TimingHook) -> Result<Self, StoreError> {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let (queue, waiting) = mpsc::channel();
        let failure = Arc::new(OnceLock::new());
        let failed = failure.clone();
        std::thread::Builder::new()
            .name("sqlite-wal-sync".into())
            .spawn(move || run(&wal, &waiting, &failed, &timing))
            .map_err(|e| StoreError::Other(format!("cannot start the WAL sync thread: {e}")))?;
        Ok(Self { queue, failure })
    }

    /// Call `release` once what has been committed so far is on disk.
    pub fn after_sync(&self, release: Release) {
        if let Err(mpsc::SendError(release)) = self.queue.send(release) {
            release(Err(StoreError::Unavailable(
                "the WAL sync thread has stopped".into(),
            )));
        }
    }

    /// Why writes are refused, once a sync has failed.
    pub fn failure(&self) -> Option<StoreError> {
        self.failure
            .get()
            .map(|why| StoreError::Unavailable(why.clone()))
    }
}

fn run(
    wal: &Path,
    waiting: &mpsc::Receiver<Release>,
    failure: &OnceLock<String>,
    timing: &TimingHook,
) {
    let mut file = None;
    while let Ok(first) = waiting.recv() {
        // Everything queued now was committed before this sync starts.
        let batches: Vec<Release> = std::iter::once(first).chain(waiting.try_iter()).collect();
        if failure.get().is_none() {
            if let Err(e) = timing.time(Timed::WalSync, || sync(wal, &mut file)) {
                tracing::error!(error = %e, "the WAL could not be synced: writes are refused until restart");
                let _ = failure.set(format!(
                    "the store could not make its log durable ({e}); restart the manager"
                ));
            }
        }
        let synced = match failure.get() {
            Some(why) => Err(why),
            None => Ok(()),
        };
        for release in batches {
            release(synced.map_err(|why| StoreError::Unavailable(why.clone())));
        }
    }
}

/// `fdatasync` the WAL at `path`, reopening it if it is another file than
/// the one held (SQLite removes it only when its last connection closes).
fn sync(path: &Path, held: &mut Option<(File, u64)>) -> std::io::Result<()> {
    let current = std::fs::metadata(path)?.ino();
    if held.as_ref().map(|(_, ino)| *ino) != Some(current) {
        let file = File::open(path)?;
        let ino = file.metadata()?.ino();
        *held = Some((file, ino));
    }
    match held {
        Some((file, _)) => file.sync_data(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(syncer: &WalSyncer) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::channel();
        syncer.after_sync(Box::new(move |r| tx.send(r).unwrap()));
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn batches_are_released_after_a_sync_of_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.sqlite3");
        std::fs::write(dir.path().join("store.sqlite3-wal"), b"frames").unwrap();
        let syncer = WalSyncer::start(&db, TimingHook::default()).unwrap();
        assert!(released(&syncer).is_ok());
        assert!(syncer.failure().is_none());
    }

    #[test]
    fn after_a_failed_sync_every_batch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.sqlite3");
        let syncer = WalSyncer::start(&db, TimingHook::default()).unwrap();
        // No WAL to sync: the first batch cannot be made durable.
        let first = released(&syncer).unwrap_err();
        assert!(matches!(&first, StoreError::Unavailable(why) if why.contains("durable")));
        // A WAL that appears later does not make the lost batch's successors durable.
        std::fs::write(dir.path().join("store.sqlite3-wal"), b"frames").unwrap();
        assert!(matches!(released(&syncer), Err(StoreError::Unavailable(_))));
        assert!(syncer.failure().is_some());
    }
}
