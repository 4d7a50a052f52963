//! The log writer: lines go to standard output in batches written by a background
//! thread, so a request never waits for a `write(2)`.
//!
//! Writing each line to stdout as it is formatted costs a system call per request (and
//! the stdout lock); under load that is a measurable share of a core (docs/performance.md).
//! Here the formatting thread only appends the finished line to a shared buffer; a
//! flusher thread writes whatever accumulated every `flush_interval` in one call. Nothing
//! is dropped: when the buffer passes [`MAX_PENDING`] (stdout blocked or slow) the
//! appending thread writes the batch itself, which is the old behaviour as back-pressure.
//! [`LogFlusher`] flushes on shutdown and on drop; after that, lines are written at once.
//! What this trades (a line reaches stdout up to `flush_interval` later; a process killed
//! with SIGKILL loses at most that much) is docs/adr/0013-buffered-log-writer.md.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Pending bytes beyond which the appending thread writes the batch itself.
const MAX_PENDING: usize = 1 << 20;

/// A written batch's buffer larger than this is dropped rather than kept for reuse (a
/// burst does not pin its memory).
const MAX_SPARE: usize = 256 * 1024;

struct State {
    pending: Vec<u8>,
    /// The buffer of the batch written before, emptied: the next batch is appended to it,
    /// so lines do not regrow a buffer from empty after every batch.
    spare: Vec<u8>,
    /// The flusher is parked waiting for a first line: the next append wakes it.
    flusher_parked: bool,
    /// After [`LogFlusher::flush_and_stop`]: every line is written at once.
    closed: bool,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Held while a batch is taken and written, so batches reach stdout in order.
    output: Mutex<()>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes everything pending, in order with any other batch.
    fn write_pending(&self) {
        let _order = self.output.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = {
            let mut state = self.state();
            let spare = std::mem::take(&mut state.spare);
            std::mem::replace(&mut state.pending, spare)
        };
        if !batch.is_empty() {
            // Nowhere to report a failing stdout; the line is lost as it would be anyway.
            let _ = io::stdout().lock().write_all(&batch);
        }
        if batch.capacity() <= MAX_SPARE {
            batch.clear();
            self.state().spare = batch;
        }
    }

    fn append(&self, line: &[u8]) {
        let mut state = self.state();
        if state.closed {
            drop(state);
            let _ = io::stdout().lock().write_all(line);
            return;
        }
        let wake = state.flusher_parked && state.pending.is_empty();
        state.pending.extend_from_slice(line);
        let overfull = state.pending.len() > MAX_PENDING;
        drop(state);
        if overfull {
            self.write_pending();
        } else if wake {
            self.wake.notify_one();
        }
    }

    fn run_flusher(&self, interval: Duration) {
        loop {
            {
                let mut state = self.state();
                while state.pending.is_empty() && !state.closed {
                    state.flusher_parked = true;
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                state.flusher_parked = false;
                if state.closed {
                    return;
                }
            }
            // Let the lines of the next few milliseconds join this batch.
            std::thread::sleep(interval);
            self.write_pending();
        }
    }
}

/// Where log lines go: standard output, batched by a flusher thread, or line by line
/// when the interval is zero (or the thread cannot start).
#[derive(Clone)]
pub(crate) struct LogWriter(Option<Arc<Shared>>);

impl LogWriter {
    /// A writer flushing every `interval` (zero: every line is written at once), and the
    /// handle that flushes it at shutdown.
    pub(crate) fn new(interval: Duration) -> (Self, LogFlusher) {
        if interval.is_zero() {
            return (Self(None), LogFlusher(None));
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: Vec::with_capacity(64 * 1024),
                spare: Vec::new(),
                flusher_parked: false,
                closed: false,
            }),
            wake: Condvar::new(),
            output: Mutex::new(()),
        });
        let flusher = shared.clone();
        let started = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || flusher.run_flusher(interval));
        match started {
            Ok(_) => (Self(Some(shared.clone())), LogFlusher(Some(shared))),
            // Without the thread nothing would ever be written: fall back to line by line.
            Err(_) => (Self(None), LogFlusher(None)),
        }
    }
}

/// One event's line; tracing-subscriber hands over the whole line in one `write_all`.
pub(crate) enum LineWriter<'a> {
    Buffered(&'a Shared),
    Direct(io::Stdout),
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Buffered(shared) => {
                shared.append(buf);
                Ok(buf.len())
            }
            Self::Direct(stdout) => stdout.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Self::Buffered(shared) => {
                shared.append(buf);
                Ok(())
            }
            Self::Direct(stdout) => stdout.lock().write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            // Batches are flushed by the flusher thread and at shutdown.
            Self::Buffered(_) => Ok(()),
            Self::Direct(stdout) => stdout.flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        match &self.0 {
            Some(shared) => LineWriter::Buffered(shared),
            None => LineWriter::Direct(io::stdout()),
        }
    }
}

/// Flushes the buffered log lines and stops the flusher (on shutdown, and when dropped:
/// a process that returns early or unwinds still writes its last lines).
pub(crate) struct LogFlusher(Option<Arc<Shared>>);

impl LogFlusher {
    pub(crate) fn flush_and_stop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.state().closed = true;
            shared.wake.notify_one();
            shared.write_pending();
            let _ = io::stdout().flush();
        }
    }
}

impl Drop for LogFlusher {
    fn drop(&mut self) {
        self.flush_and_stop();
    }
}

impl std::fmt::Debug for LogFlusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFlusher")
            .field("buffered", &self.0.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_in_order_until_flushed() {
        let (writer, mut flusher) = LogWriter::new(Duration::from_secs(3600));
        for i in 0..3 {
            writer
                .make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        let pending = writer
            .0
            .as_ref()
            .map(|s| s.state().pending.clone())
            .unwrap();
        assert_eq!(pending, b"line 0\nline 1\nline 2\n");
        flusher.flush_and_stop();
        assert!(writer.0.as_ref().unwrap().state().pending.is_empty());
        // After the stop, lines go straight out instead of piling up.
        writer.make_writer().write_all(b"late line\n").unwrap();
        assert!(writer.0.as_ref().unwrap().state().pending.is_empty());
    }

    #[test]
    fn written_batches_leave_their_buffer_for_the_next() {
        let (writer, mut flusher) = LogWriter::new(Duration::from_secs(3600));
        let shared = writer.0.clone().unwrap();
        for _ in 0..2 {
            writer.make_writer().write_all(b"a line\n").unwrap();
            shared.write_pending();
        }
        {
            // Both buffers have been through a batch: the next one already has room.
            let state = shared.state();
            assert!(state.pending.capacity() > 0 && state.spare.capacity() > 0);
            assert!(state.pending.is_empty() && state.spare.is_empty());
        }
        flusher.flush_and_stop();
    }

    #[test]
    fn zero_interval_writes_line_by_line() {
        let (writer, _flusher) = LogWriter::new(Duration::ZERO);
        assert!(writer.0.is_none());
    }
}
