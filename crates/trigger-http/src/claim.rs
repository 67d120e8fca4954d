//! How long an instance lives: while requests hold it, and, if its
//! component reuses instances, while it waits idle for its connection's
//! next request.
//!
//! `HttpComponent::handle` makes a [`Claim`] for each request and holds it
//! while the guest prepares the response; the response body holds it from
//! then on. The claim is dropped when the body ends (sent in full, cut off
//! at `--max-response-body-size`, or abandoned by a client that went away)
//! or when the request gives up before its response (timeout, client
//! gone). An instance counts the claims holding it ([`Holds`]); once none
//! does, its [`Expiry`] stops it:
//!
//! - a single-use instance at once, computing or waiting: work a guest goes
//!   on with after its response cannot pile up beside other requests
//!   (guests computing after each answer left a neighbour a median of
//!   190 ms instead of 1 ms, `adversarial.rs`), and no instance outlives
//!   its request (a thousand guests waiting after their answers held the
//!   whole instance pool);
//! - a reused instance if the guest still works (wasmtime's `Requests` or
//!   `PostReturn` status) for no request; an idle one waits for its
//!   connection's next request until the idle timeout or the connection
//!   closes ([`Closed`]).
//!
//! wasmtime's handler creates an instance, and its expiry, before it hands
//! it a request, so the two sides meet in `WorkerState::on_request_start`:
//! the instance's [`Holds`] takes the request's [`Claimed`].

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use wasmtime_wasi_http::handler::{WorkerExpiration, WorkerStatus};

/// A request's claim on the instance serving it, once the instance took it.
#[derive(Default)]
struct Request {
    /// The request no longer wants its instance.
    released: bool,
    /// Its response reached the request.
    answered: bool,
    /// The instance that took it, while it is held.
    instance: Option<Arc<Shared>>,
}

/// The request's side: it holds its instance while this is alive.
pub struct Claim(Arc<Mutex<Request>>);

/// The side of a [`Claim`] handed to the instance with its request.
pub struct Claimed(Arc<Mutex<Request>>);

/// A new claim and the side of it the instance gets.
pub fn new() -> (Claim, Claimed) {
    let request = Arc::new(Mutex::default());
    (Claim(Arc::clone(&request)), Claimed(request))
}

/// Lock a request's claim; a panic elsewhere leaves it usable.
fn lock(request: &Mutex<Request>) -> std::sync::MutexGuard<'_, Request> {
    request.lock().unwrap_or_else(|e| e.into_inner())
}

impl Claim {
    /// Note that the response arrived: the claim now goes with its body.
    pub fn answered(self) -> Self {
        lock(&self.0).answered = true;
        self
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut request = lock(&self.0);
        request.released = true;
        if let Some(instance) = request.instance.take() {
            instance.release(request.answered);
        }
    }
}

/// What an instance and its expiry share about the requests holding it.
#[derive(Default)]
struct Shared {
    /// Claims taken and not yet released.
    held: AtomicUsize,
    /// Whether any request ever took the instance.
    taken: AtomicBool,
    /// Whether a request gave up before its response.
    given_up: AtomicBool,
    /// Whether the expiry stopped the instance because none held it.
    stopped: AtomicBool,
    /// The task running the instance, woken when a claim is released.
    worker: AtomicWaker,
}

impl Shared {
    fn release(&self, answered: bool) {
        if !answered {
            self.given_up.store(true, Ordering::Release);
        }
        self.held.fetch_sub(1, Ordering::AcqRel);
        self.worker.wake();
    }

    /// Whether requests took the instance and all of them let go.
    fn let_go(&self) -> bool {
        self.taken.load(Ordering::Acquire) && self.held.load(Ordering::Acquire) == 0
    }
}

/// An instance's count of the requests holding it.
pub struct Holds(Arc<Shared>);

impl Holds {
    /// Take the claim of a request the instance starts serving.
    pub fn take(&self, claimed: Claimed) {
        let mut request = lock(&claimed.0);
        self.0.taken.store(true, Ordering::Release);
        if request.released {
            // Given up before the instance got to it.
            self.0.given_up.store(true, Ordering::Release);
            self.0.worker.wake();
        } else {
            self.0.held.fetch_add(1, Ordering::AcqRel);
            request.instance = Some(Arc::clone(&self.0));
        }
    }

    /// How the instance's requests let go of it, if all have: however the
    /// instance ends after that (stopped by its expiry, or interrupted at
    /// its deadline), no request is failed by it.
    pub fn let_go(&self) -> Option<LetGo> {
        if !self.0.let_go() {
            return None;
        }
        Some(match self.0.given_up.load(Ordering::Acquire) {
            true => LetGo::RequestGivenUp,
            false => LetGo::ResponsesDone,
        })
    }

    /// Whether the expiry stopped the instance because no request held it.
    pub fn stopped(&self) -> bool {
        self.0.stopped.load(Ordering::Acquire)
    }
}

/// How an instance's requests let go of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LetGo {
    /// Every response body ended (or was cut off, or its client left
    /// during it).
    ResponsesDone,
    /// A request gave up before its response: timed out, or the client
    /// left.
    RequestGivenUp,
}

/// Set when a client connection is gone: its idle instances end at once.
#[derive(Default)]
pub struct Closed {
    flag: AtomicBool,
    notify: Arc<tokio::sync::Notify>,
}

impl Closed {
    /// Mark the connection gone and wake its instances.
    pub fn close(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }
}

/// How long a reused instance waits for its connection's next request.
pub struct Idle {
    /// Idle for longer than this, it ends.
    pub timeout: Duration,
    /// Its connection, whose close ends it at once.
    pub closed: Arc<Closed>,
}

/// Ends an instance (wasmtime's worker for it) once no request holds it,
/// as the [module](self) tells. Polled by the worker between turns of the
/// instance's event loop, so it stops a guest waiting for I/O as well as
/// one computing (at its next epoch yield). Request deadlines are the
/// limits' business (epoch interruption).
pub struct Expiry {
    holds: Arc<Shared>,
    /// `None`: a single-use instance.
    idle: Option<Idle>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    close: Option<Pin<Box<tokio::sync::futures::OwnedNotified>>>,
}

impl Expiry {
    /// The expiry of a new instance, reused while idle per `idle`, and
    /// the count of its holds that the instance keeps.
    pub fn new(idle: Option<Idle>) -> (Self, Holds) {
        let holds = Arc::new(Shared::default());
        (Self { holds: Arc::clone(&holds), idle, timer: None, close: None }, Holds(holds))
    }
}

impl WorkerExpiration for Expiry {
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        since: Instant,
    ) -> Poll<()> {
        // Registered before the count is read, so that a release in
        // between still wakes the worker.
        self.holds.worker.register(cx.waker());
        let working = status != WorkerStatus::Idle;
        if self.holds.let_go() && (working || self.idle.is_none()) {
            self.holds.stopped.store(true, Ordering::Release);
            return Poll::Ready(());
        }
        let this = &mut *self;
        let Some(idle) = &this.idle else { return Poll::Pending };
        if working {
            return Poll::Pending;
        }
        // Registered before the flag is read, so a close in between
        // still wakes this worker.
        let close =
            this.close.get_or_insert_with(|| Box::pin(idle.closed.notify.clone().notified_owned()));
        if close.as_mut().poll(cx).is_ready() || idle.closed.is_closed() {
            return Poll::Ready(());
        }
        let expires = tokio::time::Instant::from_std(since + idle.timeout);
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(expires)));
        if timer.deadline() != expires {
            timer.as_mut().reset(expires);
        }
        timer.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Wake, Waker};

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(expiry: &mut Expiry, status: WorkerStatus, waker: &Waker) -> Poll<()> {
        Pin::new(expiry).poll(&mut Context::from_waker(waker), status, Instant::now())
    }

    fn reused() -> Idle {
        Idle { timeout: Duration::from_secs(60), closed: Arc::default() }
    }

    #[test]
    fn a_single_use_instance_is_stopped_once_its_request_lets_go() {
        let wakes = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let (mut expiry, holds) = Expiry::new(None);
        let post_return = WorkerStatus::PostReturn;
        assert!(poll(&mut expiry, post_return, &waker).is_pending(), "no request yet");

        let (claim, claimed) = new();
        holds.take(claimed);
        assert!(poll(&mut expiry, post_return, &waker).is_pending(), "the request holds its claim");
        assert_eq!(holds.let_go(), None);

        let claim = claim.answered();
        assert!(poll(&mut expiry, post_return, &waker).is_pending(), "the body holds the claim");
        drop(claim);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the instance's task is woken");
        assert!(poll(&mut expiry, post_return, &waker).is_ready());
        assert_eq!(holds.let_go(), Some(LetGo::ResponsesDone), "told apart from a failure");
        assert!(holds.stopped());
    }

    #[test]
    fn a_claim_released_before_the_instance_looks_still_stops_it() {
        let (mut expiry, holds) = Expiry::new(None);
        let (claim, claimed) = new();
        drop(claim);
        holds.take(claimed);
        assert!(poll(&mut expiry, WorkerStatus::Requests, Waker::noop()).is_ready());
        assert_eq!(holds.let_go(), Some(LetGo::RequestGivenUp));
    }

    /// In a runtime: the idle timer is tokio's.
    #[tokio::test]
    async fn a_reused_instance_stops_only_if_its_guest_works_for_no_request() {
        let (mut expiry, holds) = Expiry::new(Some(reused()));
        let (first, claimed) = new();
        holds.take(claimed);
        let (second, claimed) = new();
        holds.take(claimed);
        drop(first.answered());
        assert!(
            poll(&mut expiry, WorkerStatus::PostReturn, Waker::noop()).is_pending(),
            "one still holds it"
        );
        drop(second.answered());
        assert!(
            poll(&mut expiry, WorkerStatus::Idle, Waker::noop()).is_pending(),
            "idle: kept for the next"
        );
        assert!(
            poll(&mut expiry, WorkerStatus::PostReturn, Waker::noop()).is_ready(),
            "working for no one"
        );
        assert_eq!(holds.let_go(), Some(LetGo::ResponsesDone));
    }

    /// In a runtime: the idle timer is tokio's.
    #[tokio::test]
    async fn a_reused_instance_ends_when_its_connection_closes() {
        let idle = reused();
        let closed = Arc::clone(&idle.closed);
        let (mut expiry, _holds) = Expiry::new(Some(idle));
        assert!(poll(&mut expiry, WorkerStatus::Idle, Waker::noop()).is_pending());
        closed.close();
        assert!(poll(&mut expiry, WorkerStatus::Idle, Waker::noop()).is_ready());
    }
}
