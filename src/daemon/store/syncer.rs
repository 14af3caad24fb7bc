//! The spool's sync thread: fdatasync away from the event loop.
//!
//! A commit writes the turn's records (into the page cache: quick) and
//! hands the files to this thread, which syncs them and wakes the loop
//! through mio's `Waker`. Meanwhile the loop goes on: it reads the broker's
//! acknowledgements, sends, takes new messages (appended for the next
//! commit). One job at a time: the next commit starts when this one has
//! finished, so a slower disk makes larger groups, not a slower loop.
//!
//! Nothing but `sync_data` runs here, on descriptors of its own (duplicates
//! of the spool's); every decision stays with the loop.

use mio::Waker;
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread;

/// The thread's stack: it only calls fdatasync.
const STACK: usize = 64 * 1024;

pub struct Syncer {
    jobs: Sender<Vec<File>>,
    results: Receiver<Vec<io::Result<()>>>,
}

impl Syncer {
    /// Starts the thread; `waker` wakes the loop when a job is done.
    pub fn start(waker: Arc<Waker>) -> io::Result<Syncer> {
        let (jobs, job_rx) = mpsc::channel::<Vec<File>>();
        let (result_tx, results) = mpsc::channel();
        thread::Builder::new()
            .name("iotbox-sync".into())
            .stack_size(STACK)
            .spawn(move || {
                // Ends when the spool (the sender) is gone.
                for files in job_rx {
                    let synced: Vec<io::Result<()>> = files.iter().map(File::sync_data).collect();
                    drop(files);
                    if result_tx.send(synced).is_err() {
                        return;
                    }
                    // A failed wake-up leaves the result for the loop's
                    // next turn, which looks on its own.
                    let _ = waker.wake();
                }
            })?;
        Ok(Syncer { jobs, results })
    }

    /// Hands `files` to the thread. Fails only if the thread is gone.
    pub fn submit(&self, files: Vec<File>) -> io::Result<()> {
        self.jobs
            .send(files)
            .map_err(|_| io::Error::other("the sync thread is gone"))
    }

    /// The results of the job, if done: one per file, in order.
    pub fn try_finish(&self) -> Option<Vec<io::Result<()>>> {
        match self.results.try_recv() {
            Ok(results) => Some(results),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(vec![Err(gone())]),
        }
    }

    /// Waits for the results of the job.
    pub fn wait(&self) -> Vec<io::Result<()>> {
        self.results.recv().unwrap_or_else(|_| vec![Err(gone())])
    }
}

fn gone() -> io::Error {
    io::Error::other("the sync thread is gone")
}
