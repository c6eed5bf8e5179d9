//! The bounded outbound queue of one client: the hub pushes without ever
//! blocking, the client's writer drains everything queued at once. Wakes the
//! writer on push (async task or plain thread); never polls, never grows past
//! its limits: overflowing marks the client slow and frees what was queued.
//!
//! A transport may also let the queue write at once ([`WriteNow`]): an item
//! pushed while nothing waits and nobody writes goes straight to the
//! connection from the pushing thread, with no wake-up of the writer.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::event::Outbound;

/// How much one client's queue may hold before the client counts as slow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most items waiting at once.
    pub max_messages: usize,
    /// Most bytes (by [`Outbound::weight`]) waiting at once. A single item
    /// larger than this is still accepted into an empty queue. Each limit
    /// counts up to 4 GiB (4 G messages); a larger one is that.
    pub max_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        // Centrifugo's default client queue is 1 MiB.
        Self {
            max_messages: 16 * 1024,
            max_bytes: 1024 * 1024,
        }
    }
}

/// Why a client's queue was closed: what its transport should tell it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client did not drain its queue fast enough (protocol code 3008).
    Slow,
    /// The hub is shutting down (protocol code 3001, reconnect advised).
    Shutdown,
    /// The embedder removed the client; nothing to tell it (code 3000).
    Removed,
    /// A disconnect with an application-chosen code and reason.
    Custom {
        /// Protocol disconnect code.
        code: u16,
        /// Human-readable reason (keep under 127 bytes).
        reason: Arc<str>,
        /// Whether the client should reconnect.
        reconnect: bool,
    },
}

impl DisconnectReason {
    /// The protocol disconnect code this reason maps to.
    pub fn code(&self) -> u16 {
        match self {
            DisconnectReason::Slow => 3008,
            DisconnectReason::Shutdown => 3001,
            DisconnectReason::Removed => 3000,
            DisconnectReason::Custom { code, .. } => *code,
        }
    }
}

/// Why a push did not enqueue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue was full: it is now closed with [`DisconnectReason::Slow`].
    Full,
    /// The queue was already closed (receiver gone or client removed).
    Closed,
}

/// Writes an item to a client's connection at once, from the thread that
/// queues it (the hub's fan-out), without blocking: what a
/// transport gives [`ClientReceiver::write_now`]. crier-core does no I/O;
/// this is the transport's.
pub trait WriteNow: Send + Sync {
    /// Writes `item` now, without waiting for the socket. `true` when all
    /// of it went out. `false` when some or all of it did not (the socket
    /// was full) or the socket failed: the implementation keeps what is
    /// left, and the receiver's next drain (the queue wakes its writer) must
    /// send that first, or end the connection.
    fn write_now(&self, item: &Outbound) -> bool;

    /// Writes `items`, in order, now, as [`write_now`](Self::write_now)
    /// writes one: `true` when all of them went out, else the
    /// implementation keeps what is left of them for the receiver's next
    /// drain. What a [`defer_wakes`] queued for a client whose writer
    /// waits goes out this way when it returns.
    fn write_all_now(&self, items: &[Outbound]) -> bool;

    /// Where the end of a [`defer_wakes`] that reached more than 128
    /// waiting writers sends the writes at once beyond them, in
    /// [`Flush`]es of up to 128 clients, to run on other
    /// threads; `None` (the default) wakes those writers instead.
    fn spread(&self) -> Option<&dyn Spread> {
        None
    }
}

// `repr(C)`: the fields every push touches first, within one cache line
// of the lock; those of writes at once after them.
#[repr(C)]
struct State {
    items: VecDeque<Outbound>,
    bytes: usize,
    // Set once; the receiver reports it after draining what is left. Boxed
    // so the state the hot path touches stays within one cache line.
    closed: Option<Box<DisconnectReason>>,
    // The drainer waiting for the next push, if any.
    waker: Option<Waker>,
    // Writes at once, when the transport allows them (never while `busy`,
    // never past a queued item, so the order is the queue's).
    now: Option<Arc<dyn WriteNow>>,
    // The receiver's writer owns the connection: it drained items (or
    // holds it for a frame of its own, a ping) and has not polled since
    // saying `written`.
    // While it does, pushes queue (in order) instead of writing at once.
    busy: bool,
    // A write at once left something behind: the next drain reports ready,
    // even with nothing queued, so the writer sends the rest first.
    handoff: bool,
    // A fan-out left this client's next delivery to a [`Flush`], which
    // holds it (nothing is queued for it): what is pushed meanwhile
    // queues behind it, and the writer drains nothing until the flush has
    // written it or put it first in the queue.
    later: bool,
    // When the connection was last written to ([`millis`]): a client
    // written to within [`QUIET_MS`] is under load, and its pushes go
    // through its writer, which joins them into one frame per wake-up.
    last_write: u32,
}

impl State {
    /// Whether a push at `at` ([`millis`]) may write at once: nothing
    /// waits, nobody writes or holds the next write, and the client is
    /// not under load.
    fn may_write_now(&self, at: u32) -> bool {
        self.now.is_some() && self.items.is_empty() && !self.busy && !self.later && quiet(self.last_write, at)
    }

    /// Writes `item` through the transport at once (the caller checked
    /// that it may), at `at` ([`millis`]). Returns the writer's waker when
    /// the socket did not take all of it, to wake once the lock is
    /// released.
    fn write_now(&mut self, item: &Outbound, at: u32) -> Option<Waker> {
        let written = self.now.as_ref().is_some_and(|now| now.write_now(item));
        self.last_write = at;
        if written {
            None
        } else {
            self.hand_off()
        }
    }

    /// A write at once left something behind: the writer must send it
    /// before anything else, and owns the connection until it has. Returns
    /// the waker to wake once the lock is released.
    fn hand_off(&mut self) -> Option<Waker> {
        self.busy = true;
        self.handoff = true;
        self.waker.take()
    }
}

/// Wakes a writer (after its queue's lock is released), or holds the
/// wake-up back until the end of the [`defer_wakes`] this thread is in.
fn wake(waker: Option<Waker>) {
    hold_or_wake(waker, None);
}

/// [`wake`], or with `queue` (the queue whose push took the waker) left
/// to the end of the [`defer_wakes`] this thread is in, which writes what
/// it holds then if its writer still waits ([`cork`]).
fn hold_or_wake(waker: Option<Waker>, queue: Option<&Arc<Shared>>) {
    let Some(w) = waker else { return };
    let now = DEFERRED
        .try_with(|d| match d.borrow_mut().as_mut() {
            Some(held) => {
                held.push((w, queue.cloned()));
                None
            }
            None => Some(w),
        })
        .unwrap_or(None);
    if let Some(w) = now {
        w.wake();
    }
}

/// At the end of a [`defer_wakes`]: writes what `queue` holds at once
/// through its transport, on this thread, when its writer (whose waker
/// `w` a push took) still waits, and gives the writer its waker back;
/// wakes it otherwise. Not a backlogged queue: a reader waiting for its
/// writer's next frame (backpressure) is woken by that frame.
fn cork(w: Waker, queue: &Shared) {
    let mut st = queue.state.lock();
    let may = st.closed.is_none()
        && !st.busy
        && !st.later
        && !st.handoff
        && st.waker.is_none()
        && !st.items.is_empty()
        && !queue.limits.over_half(st.items.len(), st.bytes);
    let Some(now) = st.now.clone().filter(|_| may) else {
        drop(st);
        w.wake();
        return;
    };
    let at = millis();
    let batched = st.items.len() > 1;
    let written = now.write_all_now(st.items.make_contiguous());
    st.items.clear();
    st.bytes = 0;
    st.last_write = if batched { at.wrapping_add(LOADED_MS) } else { at };
    if written {
        st.waker = Some(w);
        return;
    }
    st.busy = true;
    st.handoff = true;
    drop(st);
    w.wake();
}

/// A writer's wake-up held back by a [`defer_wakes`], with the queue
/// whose push took it when a push did.
type Held = (Waker, Option<Arc<Shared>>);

/// At most this many queues are written by one [`defer_wakes`]'s end
/// ([`cork`]) on its own thread; the rest go to other threads in
/// [`Flush`]es of as many ([`WriteNow::spread`]), or their writers are
/// woken, so that both cores share a large fan-out's writes, as
/// `hub.rs`'s `AT_ONCE_FAN_OUT` does for writes at once. Written all
/// from the reading thread, 5,000 subscribers at 100/s cost 15 % less
/// CPU per delivery, but that thread spent 20-60 ms per read on them, and
/// a few deliveries in a run came 0.4-1.2 s late instead of at most 0.23
/// (docs/benchmarks.md, "Cork flush: a read's writes from its own
/// thread").
const CORK_MAX: usize = 128;

/// Hands `chunk` (up to [`CORK_MAX`] clients a [`defer_wakes`] reached
/// beyond the first `CORK_MAX`) to the spread of the first one's
/// transport ([`WriteNow::spread`]), as a [`Flush`] that writes each at
/// once on another thread ([`cork`]); wakes their writers when there is
/// none.
fn spread_corked(chunk: Vec<(Waker, Arc<Shared>)>) {
    let now = chunk.first().and_then(|(_, q)| q.state.lock().now.clone());
    match now.as_deref().and_then(WriteNow::spread) {
        Some(spread) => spread.spread(Flush {
            work: Work::Cork(chunk),
        }),
        None => {
            for (w, _) in chunk {
                w.wake();
            }
        }
    }
}

thread_local! {
    // The writers' wake-ups held back by the `defer_wakes` this thread is
    // in, if it is in one.
    static DEFERRED: std::cell::RefCell<Option<Vec<Held>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with the writer wake-ups its pushes cause held back until it
/// returns, then wakes each of those writers: what `f` queues for a
/// client then reaches it in one frame, written once `f` is done, instead
/// of a first frame its writer, woken at the first push, races to write
/// on another core while `f` still pushes (uWebSockets calls this
/// corking). Meant for one synchronous step that may publish many times:
/// a transport's poll of a connection that reads a client's commands.
/// Never across an `.await`: other tasks run on the thread meanwhile.
/// Nested, the outermost wakes them all.
///
/// A client whose writer still waits when `f` returns, and whose
/// transport writes at once ([`WriteNow`]), is not woken: what `f` queued
/// for it is written there and then, in one write from this thread
/// ([`WriteNow::write_all_now`]), and the writer sleeps on (uWebSockets'
/// cork flush: no task wake-up, no second core). Not a queue over half
/// full: a reader held back by backpressure waits for its writer's next
/// frame, so that writer is woken. At most 128 queues are written so on
/// this thread; those beyond go to other threads
/// ([`WriteNow::spread`]) in [`Flush`]es of as many, or their writers
/// are woken.
pub fn defer_wakes<R>(f: impl FnOnce() -> R) -> R {
    let outermost = DEFERRED
        .try_with(|d| {
            let mut d = d.borrow_mut();
            d.is_none().then(|| *d = Some(Vec::new())).is_some()
        })
        .unwrap_or(false);
    if !outermost {
        return f();
    }
    // Wakes them even if `f` panics: a lost wake-up would leave a writer
    // asleep over a queue that holds something.
    struct WakeHeld;
    impl Drop for WakeHeld {
        fn drop(&mut self) {
            let held = DEFERRED.try_with(|d| d.borrow_mut().take()).ok().flatten();
            let mut corked = 0;
            // The chunk beyond the first CORK_MAX being filled for a flush.
            let mut chunk = Vec::new();
            for (w, queue) in held.into_iter().flatten() {
                match queue {
                    Some(queue) if corked < CORK_MAX => {
                        corked += 1;
                        cork(w, &queue);
                    }
                    Some(queue) => {
                        chunk.push((w, queue));
                        if chunk.len() == CORK_MAX {
                            spread_corked(std::mem::take(&mut chunk));
                        }
                    }
                    None => w.wake(),
                }
            }
            if !chunk.is_empty() {
                spread_corked(chunk);
            }
        }
    }
    let _wake = WakeHeld;
    f()
}

/// How a push may reach the connection. A write at once carries the
/// time of its fan-out ([`millis`], read once for all its clients: it
/// only tells the quiet rule, in milliseconds, whether a client is under
/// load).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// Through the writer, woken.
    Writer,
    /// Written at once by the pushing thread, when the queue allows it
    /// ([`QueueSender::push_at_once`]).
    AtOnce(u32),
    /// Left to a [`Flush`] on another thread, when the queue allows a
    /// write at once ([`QueueSender::push_later`]).
    Later(u32),
}

impl Via {
    /// How a fan-out's pushes go, from now: written at once by the
    /// pushing thread, or left for a flush (`later`).
    pub(crate) fn fan_out(later: bool) -> Self {
        let now = millis();
        if later {
            Via::Later(now)
        } else {
            Via::AtOnce(now)
        }
    }
}

/// A delivery a large fan-out left to be written at once on another
/// thread ([`Spread`]), to a chunk of its clients: the hub's publishing
/// thread leaves it without queueing it or waking a writer per client,
/// and the cores share the writes (docs/benchmarks.md). Each client's
/// queue holds its next write for the flush meanwhile.
///
/// Dropped without [`run`](Self::run) (a runtime shutting down), it
/// queues the delivery for each client's writer instead and wakes it, so
/// nothing is left behind.
///
/// Also what the end of a [`defer_wakes`] that reached more than 128
/// waiting writers leaves for other threads: what it queued for up to 128
/// of them, each written at once there unless its
/// writer took over meanwhile (woken instead when dropped unrun).
pub struct Flush {
    work: Work,
}

enum Work {
    /// A fan-out's delivery (its event), one for every client here.
    Deliver {
        item: Outbound,
        queues: Vec<QueueSender>,
    },
    /// What a `defer_wakes` queued for these waiting writers.
    Cork(Vec<(Waker, Arc<Shared>)>),
}

impl Flush {
    /// A flush of `item` to `queues`, each of which
    /// [`push_later`](QueueSender::push_later) left it for a flush.
    pub(crate) fn new(item: Outbound, queues: Vec<QueueSender>) -> Self {
        Self {
            work: Work::Deliver { item, queues },
        }
    }

    /// Writes each client's delivery at once (or, where its writer took
    /// over meanwhile, leaves it to the writer).
    pub fn run(mut self) {
        match &mut self.work {
            Work::Deliver { item, queues } => {
                // One clock reading for the chunk: a write's time only
                // tells the quiet rule (milliseconds) whether the client
                // is under load.
                let now = millis();
                for q in queues.drain(..) {
                    q.flush(item, Some(now));
                }
            }
            Work::Cork(corked) => {
                for (w, queue) in corked.drain(..) {
                    cork(w, &queue);
                }
            }
        }
    }

    /// Clients in this flush.
    pub fn len(&self) -> usize {
        match &self.work {
            Work::Deliver { queues, .. } => queues.len(),
            Work::Cork(corked) => corked.len(),
        }
    }

    /// Whether it holds no client.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        match &mut self.work {
            Work::Deliver { item, queues } => {
                for q in queues.drain(..) {
                    q.flush(item, None);
                }
            }
            Work::Cork(corked) => {
                for (w, _) in corked.drain(..) {
                    w.wake();
                }
            }
        }
    }
}

/// Runs [`Flush`]es on other threads: what an embedder gives
/// [`Hub::spread_with`](crate::Hub::spread_with) so that a fan-out larger
/// than one thread should write shares its writes at once between the
/// cores. crier-core runs no threads; this is the runtime's.
pub trait Spread: Send + Sync {
    /// Calls `flush.run()` soon, on any thread, not inside this call's
    /// caller (which may hold a channel's lock). Dropping `flush` instead
    /// wakes its clients' writers.
    fn spread(&self, flush: Flush);
}

struct Shared {
    state: Mutex<State>,
    limits: Limits,
}

/// [`QueueLimits`] as a queue keeps them: 32 bits each (a limit past 4 GiB
/// or 4 G messages is that much), which keeps the queue's allocation in
/// 128 bytes instead of 144, for every connection.
struct Limits {
    max_messages: u32,
    max_bytes: u32,
}

impl Limits {
    fn new(limits: QueueLimits) -> Self {
        let max = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Limits {
            max_messages: max(limits.max_messages),
            max_bytes: max(limits.max_bytes),
        }
    }

    fn messages(&self) -> usize {
        self.max_messages as usize
    }

    fn bytes(&self) -> usize {
        self.max_bytes as usize
    }

    /// Whether `items` items of `bytes` are more than half of either limit.
    fn over_half(&self, items: usize, bytes: usize) -> bool {
        items.saturating_mul(2) > self.messages() || bytes.saturating_mul(2) > self.bytes()
    }
}

/// The hub's end of a client queue.
#[derive(Clone)]
pub(crate) struct QueueSender {
    shared: Arc<Shared>,
}

/// The client's end of its queue, held by its transport's writer.
///
/// Dropping it closes the queue; the hub then forgets the client on its next
/// delivery attempt.
pub struct ClientReceiver {
    shared: Arc<Shared>,
    // An empty deque swapped in on drain, so draining allocates nothing in
    // steady state; dropped when a burst made it large, so idle clients stay
    // small.
    spare: VecDeque<Outbound>,
    // `write_now` was given.
    at_once: bool,
    // `written` was called (and when: see `State::last_write`), for the
    // next `poll_drain` to hand the connection back. A flag and a `u32`
    // rather than an `Option<u32>`: every connection's task holds this
    // receiver, and the three fields fit in 8 bytes.
    wrote: bool,
    wrote_at: u32,
}

/// A client written to less than this long ago (in milliseconds, so
/// between 1 and 2 ms) is under load: its pushes wake its writer, which
/// joins what a fan-out round queues into one frame, instead of each
/// being written at once (one `sendmsg`, and one wake-up of the client,
/// per delivery; docs/benchmarks.md). It was 5 ms until a large
/// fan-out's own length (several ms, on both cores) showed it counted a
/// quarter of the deliveries at 100/s to 1,000 clients as under load,
/// each then a wake-up and a poll of the client's task instead of a
/// write at once; a client at a high rate stays with its writer by
/// [`LOADED_MS`] anyway.
const QUIET_MS: u32 = 2;

/// Milliseconds on a process-wide monotonic clock (wrapping after 49
/// days; compared with `wrapping_sub`).
fn millis() -> u32 {
    #[cfg(test)]
    if let Some(now) = tests::CLOCK.with(|c| c.get()) {
        return now;
    }
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    // Starts at QUIET_MS, so a new client's first push may go out at once.
    (EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u32).wrapping_add(QUIET_MS)
}

/// How much longer than [`QUIET_MS`] a client whose writer batched stays
/// with its writer: at high rates a client's frames join tens of messages
/// and come further apart than `QUIET_MS`, and a write at once between two
/// would only split them.
const LOADED_MS: u32 = 50;

/// Whether a connection last written to at `last` ([`millis`], possibly
/// ahead of now: see [`LOADED_MS`]) is quiet at `now`.
fn quiet(last: u32, now: u32) -> bool {
    (now.wrapping_sub(last) as i32) >= QUIET_MS as i32
}

// A spare deque larger than this is released instead of being kept idle.
const SPARE_KEEP: usize = 64;

pub(crate) fn queue(limits: QueueLimits) -> (QueueSender, ClientReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            bytes: 0,
            busy: false,
            handoff: false,
            later: false,
            now: None,
            last_write: 0,
            closed: None,
            waker: None,
        }),
        limits: Limits::new(limits),
    });
    (
        QueueSender {
            shared: shared.clone(),
        },
        ClientReceiver {
            shared,
            spare: VecDeque::new(),
            at_once: false,
            wrote: false,
            wrote_at: 0,
        },
    )
}

impl QueueSender {
    /// Enqueues without blocking. On overflow the queue closes as slow and
    /// drops what it held, so a stuck client pins no more memory. Never
    /// written at once: a reply or a notice goes through the writer.
    pub(crate) fn push(&self, item: Outbound) -> Result<(), PushError> {
        let st = self.open()?;
        self.enqueue(st, item)
    }

    /// The queue's state, locked, unless the queue is closed.
    fn open(&self) -> Result<MutexGuard<'_, State>, PushError> {
        let st = self.shared.state.lock();
        if st.closed.is_some() {
            return Err(PushError::Closed);
        }
        Ok(st)
    }

    /// [`push`](Self::push), written at once only if `at_once` (and the
    /// queue allows it: see [`WriteNow`]).
    #[cfg(test)]
    pub(crate) fn push_as(&self, item: Outbound, at_once: bool) -> Result<(), PushError> {
        if at_once {
            self.push_at_once(&item, millis())
        } else {
            self.push(item)
        }
    }

    /// A fan-out's push at `at` ([`millis`]): `item` written at once when
    /// the queue allows it (see [`WriteNow`]), else a copy of it queued as
    /// [`push`](Self::push) does. A write at once takes no copy: the
    /// fan-out's event is not counted once more per delivery.
    pub(crate) fn push_at_once(&self, item: &Outbound, at: u32) -> Result<(), PushError> {
        let mut st = self.open()?;
        // Nothing waits, nobody writes, and the client is not under load
        // at the fan-out's time: out at once, under the lock, so no later
        // push can overtake it. Only what the socket did not take wakes
        // the writer.
        if st.may_write_now(at) {
            let w = st.write_now(item, at);
            drop(st);
            wake(w);
            return Ok(());
        }
        self.enqueue(st, item.clone())
    }

    /// For a fan-out that spreads its writes at once over other threads
    /// ([`Flush`]): when `item` may be written at once at `at`, leaves it
    /// to a flush and returns `true`. Then nothing is queued and no writer
    /// woken: the caller must put this sender in a [`Flush`] of `item`.
    /// Otherwise queues a copy of `item` as [`push`](Self::push) does.
    /// Holding the item in the flush, not in the queue, spares an idle
    /// client's queue a buffer allocated and freed per delivery.
    pub(crate) fn push_later(&self, item: &Outbound, at: u32) -> Result<bool, PushError> {
        let mut st = self.open()?;
        if st.may_write_now(at) {
            st.later = true;
            return Ok(true);
        }
        self.enqueue(st, item.clone()).map(|()| false)
    }

    /// Queues `item` behind what waits and wakes the writer, or closes the
    /// queue as slow when it is over a limit.
    fn enqueue(&self, mut st: MutexGuard<'_, State>, item: Outbound) -> Result<(), PushError> {
        let weight = item.weight();
        let limits = &self.shared.limits;
        if !st.items.is_empty() && (st.items.len() >= limits.messages() || st.bytes + weight > limits.bytes())
        {
            st.closed = Some(Box::new(DisconnectReason::Slow));
            st.items = VecDeque::new();
            st.bytes = 0;
            let w = st.waker.take();
            drop(st);
            wake(w);
            return Err(PushError::Full);
        }
        st.items.push_back(item);
        st.bytes += weight;
        let w = st.waker.take();
        drop(st);
        hold_or_wake(w, Some(&self.shared));
        Ok(())
    }

    /// Writes at once `item`, which [`push_later`](Self::push_later) left
    /// for this flush, at `at` ([`millis`]). Where a write at once is not
    /// allowed any more (something queued behind it, the writer holds the
    /// connection for a frame of its own, the receiver is gone), or
    /// without `at` (a flush that never ran), puts it first in the queue
    /// and wakes the writer, which joins it with what queued behind it.
    fn flush(&self, item: &Outbound, at: Option<u32>) {
        let mut st = self.shared.state.lock();
        st.later = false;
        let mut w = None;
        if st.closed.is_none() {
            match at {
                Some(at) if st.now.is_some() && st.items.is_empty() && !st.busy => {
                    w = st.write_now(item, at);
                }
                _ => {
                    st.items.push_front(item.clone());
                    st.bytes += item.weight();
                }
            }
        }
        // Also when closed meanwhile: the writer, woken then, found the
        // next write still held and waits for this.
        if w.is_none() && (!st.items.is_empty() || st.closed.is_some()) {
            w = st.waker.take();
        }
        drop(st);
        wake(w);
    }

    /// Closes the queue with `reason` unless it is closed already. Items
    /// queued before stay drainable, so a final message can precede the close.
    pub(crate) fn close(&self, reason: DisconnectReason) {
        let waker = {
            let mut st = self.shared.state.lock();
            if st.closed.is_some() {
                return;
            }
            st.closed = Some(Box::new(reason));
            st.waker.take()
        };
        wake(waker);
    }

    /// Items waiting right now.
    pub(crate) fn len(&self) -> usize {
        self.shared.state.lock().items.len()
    }

    /// Whether what waits is more than half of either limit.
    pub(crate) fn over_half(&self) -> bool {
        let st = self.shared.state.lock();
        self.shared.limits.over_half(st.items.len(), st.bytes)
    }
}

impl ClientReceiver {
    /// Moves everything queued into `out` without waiting. Returns how many
    /// items were moved, or the disconnect reason once the queue is closed
    /// and empty.
    ///
    /// With [`write_now`](Self::write_now) installed, draining items (or a
    /// write at once's leftover, reported as `Ok(0)`) makes this receiver
    /// the connection's writer until its first
    /// [`poll_drain`](Self::poll_drain) after [`written`](Self::written).
    /// While a [`Flush`] holds the next delivery, moves nothing (`Ok(0)`):
    /// the flush writes it, or queues it first and wakes the writer.
    pub fn try_drain(&mut self, out: &mut Vec<Outbound>) -> Result<usize, DisconnectReason> {
        let mut st = self.shared.state.lock();
        if st.later {
            // A flush holds the next delivery: what queued goes after it
            // (the flush wakes the writer when it is done).
            return Ok(0);
        }
        // Reported by this drain, with or without items: the writer sends
        // the transport's rest before them.
        let handoff = std::mem::take(&mut st.handoff);
        if st.items.is_empty() {
            if handoff {
                return Ok(0);
            }
            return match &st.closed {
                Some(reason) => Err((**reason).clone()),
                None => Ok(0),
            };
        }
        st.bytes = 0;
        st.busy = true;
        if st.items.len() == 1 {
            // One item at a time: a client at a low rate, which is most
            // clients most of the time. Keep no buffer on either side
            // while it is idle (128 bytes a connection, for one small
            // allocation per delivery).
            let one = std::mem::take(&mut st.items);
            drop(st);
            self.spare = VecDeque::new();
            out.extend(one);
            return Ok(1);
        }
        std::mem::swap(&mut st.items, &mut self.spare);
        drop(st);
        let n = self.spare.len();
        out.extend(self.spare.drain(..));
        if self.spare.capacity() > SPARE_KEEP {
            self.spare = VecDeque::new();
        }
        Ok(n)
    }

    /// Like [`try_drain`](Self::try_drain), but registers `cx`'s waker and
    /// returns `Pending` when nothing is queued.
    pub fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<Outbound>,
    ) -> Poll<Result<usize, DisconnectReason>> {
        {
            let mut st = self.shared.state.lock();
            if std::mem::take(&mut self.wrote) {
                st.last_write = self.wrote_at;
                if st.items.is_empty() && !st.handoff {
                    st.busy = false;
                }
            }
            if st.later || (st.items.is_empty() && st.closed.is_none() && !st.handoff) {
                match &st.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => st.waker = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
        }
        Poll::Ready(self.try_drain(out))
    }

    /// Waits (asynchronously, on any runtime) until something is queued or
    /// the queue closes, then drains everything into `out`.
    pub async fn drain(&mut self, out: &mut Vec<Outbound>) -> Result<usize, DisconnectReason> {
        poll_fn(|cx| self.poll_drain(cx, out)).await
    }

    /// Blocks the current thread (no async runtime needed) until something is
    /// queued, the queue closes, or `timeout` passes (then returns `Ok(0)`).
    pub fn drain_blocking(
        &mut self,
        out: &mut Vec<Outbound>,
        timeout: Duration,
    ) -> Result<usize, DisconnectReason> {
        let deadline = Instant::now() + timeout;
        let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(r) = self.poll_drain(&mut cx, out) {
                return r;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(0);
            }
            thread::park_timeout(deadline - now);
        }
    }

    /// Lets pushes write to the connection at once through `now` while
    /// nothing waits and this receiver's writer is not writing (see
    /// [`WriteNow`]). The writer then brackets everything it writes itself:
    /// a drain (or [`hold`](Self::hold), for a frame of its own) before,
    /// [`written`](Self::written) after. Dropping the receiver removes
    /// `now` (under the queue's lock: no write at once is under way after).
    pub fn write_now(&mut self, now: Arc<dyn WriteNow>) {
        self.shared.state.lock().now = Some(now);
        self.at_once = true;
    }

    /// Makes this receiver's writer the connection's writer (for a frame of
    /// its own: a ping, a pong, a close), waiting for a write at once under
    /// way on another thread to end.
    pub fn hold(&mut self) {
        self.shared.state.lock().busy = true;
    }

    /// The writer has written everything it drained or held for: pushes
    /// may write at once again, unless items queued meanwhile (the next
    /// drain takes them). `batched`: what it wrote joined several
    /// messages, so the client is under load and stays with its writer
    /// 50 ms longer.
    ///
    /// Takes no lock: the writer's next [`poll_drain`](Self::poll_drain)
    /// (which locks anyway) hands the connection back, so a frame takes
    /// the queue's lock no more often than without writes at once.
    pub fn written(&mut self, batched: bool) {
        if self.at_once {
            let extra = if batched { LOADED_MS } else { 0 };
            self.wrote_at = millis().wrapping_add(extra);
            self.wrote = true;
        }
    }

    /// Items waiting right now.
    pub fn len(&self) -> usize {
        self.shared.state.lock().items.len()
    }

    /// Whether nothing is waiting right now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for ClientReceiver {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock();
        if st.closed.is_none() {
            st.closed = Some(Box::new(DisconnectReason::Removed));
        }
        st.items = VecDeque::new();
        st.bytes = 0;
        st.waker = None;
        st.now = None;
    }
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn raw(s: &'static str) -> Outbound {
        Outbound::raw(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn drains_everything_in_order() {
        let (tx, mut rx) = queue(QueueLimits::default());
        tx.push(raw("a")).unwrap();
        tx.push(raw("b")).unwrap();
        let mut out = Vec::new();
        assert_eq!(rx.try_drain(&mut out), Ok(2));
        assert_eq!(describe_raw(&out), ["a", "b"]);
        assert_eq!(rx.try_drain(&mut out), Ok(0));
    }

    /// Every connection holds one queue: its shared state stays within a
    /// 128-byte allocation (with the `Arc`'s two counts and the
    /// allocator's 8-byte header), and limits past 32 bits count as the
    /// largest they can be, never as small ones.
    #[test]
    fn a_queue_stays_small_and_its_limits_saturate() {
        let size = std::mem::size_of::<Shared>();
        assert!(size + 16 + 8 <= 128, "a queue's shared state is {size} bytes");
        let limits = Limits::new(QueueLimits {
            max_messages: usize::MAX,
            max_bytes: 1 << 40,
        });
        assert_eq!(
            (limits.messages(), limits.bytes()),
            (u32::MAX as usize, u32::MAX as usize)
        );
        let (tx, _rx) = queue(QueueLimits {
            max_messages: usize::MAX,
            max_bytes: 1 << 40,
        });
        for _ in 0..1000 {
            tx.push(raw("a")).expect("a huge limit takes everything");
        }
    }

    #[test]
    fn overflow_by_count_closes_as_slow_and_frees_items() {
        let (tx, mut rx) = queue(QueueLimits {
            max_messages: 2,
            max_bytes: 1 << 20,
        });
        tx.push(raw("a")).unwrap();
        tx.push(raw("b")).unwrap();
        assert_eq!(tx.push(raw("c")), Err(PushError::Full));
        assert_eq!(tx.len(), 0, "a slow client's queue is freed at once");
        assert_eq!(tx.push(raw("d")), Err(PushError::Closed));
        let mut out = Vec::new();
        assert_eq!(rx.try_drain(&mut out), Err(DisconnectReason::Slow));
    }

    #[test]
    fn overflow_by_bytes_closes_as_slow() {
        let (tx, _rx) = queue(QueueLimits {
            max_messages: 100,
            max_bytes: 10,
        });
        // One oversized item fits an empty queue...
        tx.push(Outbound::raw(Bytes::from(vec![0u8; 50]))).unwrap();
        // ...but nothing more may pile up behind it.
        assert_eq!(tx.push(raw("x")), Err(PushError::Full));
    }

    #[test]
    fn close_keeps_earlier_items_then_reports_reason() {
        let (tx, mut rx) = queue(QueueLimits::default());
        tx.push(raw("bye")).unwrap();
        tx.close(DisconnectReason::Shutdown);
        tx.close(DisconnectReason::Slow); // first reason wins
        let mut out = Vec::new();
        assert_eq!(rx.try_drain(&mut out), Ok(1));
        assert_eq!(rx.try_drain(&mut out), Err(DisconnectReason::Shutdown));
    }

    #[test]
    fn dropping_receiver_closes_queue() {
        let (tx, rx) = queue(QueueLimits::default());
        drop(rx);
        assert_eq!(tx.push(raw("a")), Err(PushError::Closed));
    }

    #[test]
    fn blocking_drain_wakes_on_push_from_another_thread() {
        let (tx, mut rx) = queue(QueueLimits::default());
        let t = thread::spawn(move || tx.push(raw("hello")).unwrap());
        let mut out = Vec::new();
        assert_eq!(
            rx.drain_blocking(&mut out, Duration::from_secs(10)),
            Ok(1),
            "the push must wake the drainer well before the timeout"
        );
        t.join().unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn blocking_drain_times_out_empty() {
        let (_tx, mut rx) = queue(QueueLimits::default());
        let mut out = Vec::new();
        assert_eq!(rx.drain_blocking(&mut out, Duration::from_millis(1)), Ok(0));
    }

    #[test]
    fn a_queue_filled_exactly_to_its_byte_limit_stays_open() {
        let (tx, mut rx) = queue(QueueLimits {
            max_messages: 100,
            max_bytes: 10,
        });
        tx.push(raw("abcd")).unwrap();
        tx.push(raw("efghij")).unwrap();
        assert_eq!(tx.len(), 2, "4 + 6 bytes: at the limit, not over it");
        assert_eq!(tx.push(raw("k")), Err(PushError::Full));
        let mut out = Vec::new();
        assert_eq!(rx.try_drain(&mut out), Err(DisconnectReason::Slow));
    }

    #[test]
    fn over_half_means_more_than_half_of_either_limit() {
        let (tx, mut rx) = queue(QueueLimits {
            max_messages: 4,
            max_bytes: 100,
        });
        assert!(!tx.over_half());
        tx.push(raw("a")).unwrap();
        tx.push(raw("b")).unwrap();
        assert!(!tx.over_half(), "2 of 4 items");
        tx.push(raw("c")).unwrap();
        assert!(tx.over_half(), "3 of 4 items");
        let mut out = Vec::new();
        rx.try_drain(&mut out).unwrap();
        tx.push(Outbound::raw(Bytes::from(vec![0u8; 50]))).unwrap();
        assert!(!tx.over_half(), "50 of 100 bytes");
        tx.push(raw("x")).unwrap();
        assert!(tx.over_half(), "51 of 100 bytes");
    }

    #[test]
    fn the_receiver_tells_how_much_waits() {
        let (tx, rx) = queue(QueueLimits::default());
        assert_eq!((rx.len(), rx.is_empty()), (0, true));
        tx.push(raw("a")).unwrap();
        tx.push(raw("b")).unwrap();
        assert_eq!((rx.len(), rx.is_empty()), (2, false));
    }

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_push_wakes_the_task_that_polled_last() {
        // The receiver moves to another task (a new waker): the push must
        // wake that one, not the first.
        let (tx, mut rx) = queue(QueueLimits::default());
        let first = Arc::new(Count(Default::default()));
        let second = Arc::new(Count(Default::default()));
        let mut out = Vec::new();
        for w in [&first, &second] {
            let waker = Waker::from(w.clone());
            let mut cx = Context::from_waker(&waker);
            assert!(rx.poll_drain(&mut cx, &mut out).is_pending());
        }
        tx.push(raw("a")).unwrap();
        let wakes = |c: &Arc<Count>| c.0.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!((wakes(&first), wakes(&second)), (0, 1));
    }

    #[test]
    fn the_thread_waker_unparks_its_thread_by_value_and_by_reference() {
        // An unpark before the park makes the park return at once; without
        // it the park would wait the full 10 s.
        let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
        waker.wake_by_ref();
        let start = Instant::now();
        thread::park_timeout(Duration::from_secs(10));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "wake_by_ref did not unpark"
        );
        waker.wake();
        let start = Instant::now();
        thread::park_timeout(Duration::from_secs(10));
        assert!(start.elapsed() < Duration::from_secs(5), "wake did not unpark");
    }

    #[test]
    fn a_client_sent_one_item_at_a_time_keeps_no_buffer_while_idle() {
        let (tx, mut rx) = queue(QueueLimits::default());
        let mut out = Vec::new();
        // A burst first leaves a spare buffer behind; the next single
        // delivery releases it and its own.
        for _ in 0..3 {
            tx.push(raw("x")).unwrap();
        }
        assert_eq!(rx.try_drain(&mut out), Ok(3));
        assert!(rx.spare.capacity() > 0);
        for k in 0..3 {
            tx.push(raw("y")).unwrap();
            assert_eq!(rx.try_drain(&mut out), Ok(1), "delivery {k}");
            assert_eq!(tx.shared.state.lock().items.capacity(), 0, "delivery {k}");
            assert_eq!(rx.spare.capacity(), 0, "delivery {k}");
        }
        assert_eq!(out.len(), 6);
        // Still a queue: closing after a single item reports it first.
        tx.push(raw("z")).unwrap();
        tx.close(DisconnectReason::Shutdown);
        assert_eq!(rx.try_drain(&mut out), Ok(1));
        assert_eq!(rx.try_drain(&mut out), Err(DisconnectReason::Shutdown));
    }

    #[test]
    fn a_drained_burst_releases_its_buffer_and_a_small_one_keeps_it() {
        // What an idle client holds: after a drain, the receiver keeps the
        // drained buffer for the next swap only while it is small.
        for n in [2, 3, 60, 64, 65, 1_000] {
            let (tx, mut rx) = queue(QueueLimits::default());
            for _ in 0..n {
                tx.push(raw("x")).unwrap();
            }
            let capacity = tx.shared.state.lock().items.capacity();
            let mut out = Vec::new();
            assert_eq!(rx.try_drain(&mut out), Ok(n));
            let kept = if capacity > SPARE_KEEP { 0 } else { capacity };
            assert_eq!(rx.spare.capacity(), kept, "{n} items in a buffer of {capacity}");
        }
    }

    thread_local! {
        /// The clock [`millis`] reads in this test thread, when set.
        pub(super) static CLOCK: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
    }

    /// The writer waits again: its next poll, which hands the connection
    /// back after `written`, finds nothing to drain.
    fn waits(rx: &mut ClientReceiver) {
        let waker = Waker::from(Arc::new(Count(Default::default())));
        let mut out = Vec::new();
        assert!(rx
            .poll_drain(&mut Context::from_waker(&waker), &mut out)
            .is_pending());
    }

    /// Sets this thread's clock to `ms`.
    fn at(ms: u32) {
        CLOCK.with(|c| c.set(Some(ms)));
    }

    /// A transport's write at once that records what it wrote (and in how
    /// many writes) and takes only as many writes as it is told to.
    #[derive(Default)]
    struct Socket {
        wrote: Mutex<Vec<Bytes>>,
        writes: std::sync::atomic::AtomicUsize,
        room: std::sync::atomic::AtomicUsize,
        spread: std::sync::OnceLock<Arc<Keep>>,
    }

    /// An embedder's spread that keeps the flushes it is handed.
    #[derive(Default)]
    struct Keep(Mutex<Vec<Flush>>);

    impl Spread for Keep {
        fn spread(&self, flush: Flush) {
            self.0.lock().push(flush);
        }
    }

    impl WriteNow for Socket {
        fn write_now(&self, item: &Outbound) -> bool {
            self.write_all_now(std::slice::from_ref(item))
        }

        fn write_all_now(&self, items: &[Outbound]) -> bool {
            use std::sync::atomic::Ordering::SeqCst;
            for item in items {
                let Outbound::Raw(b) = item else { unreachable!() };
                self.wrote.lock().push((**b).clone());
            }
            self.writes.fetch_add(1, SeqCst);
            self.room
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
        }

        fn spread(&self) -> Option<&dyn Spread> {
            self.spread.get().map(|keep| &**keep as &dyn Spread)
        }
    }

    fn socket(room: usize) -> Arc<Socket> {
        let s = Arc::new(Socket::default());
        s.room.store(room, std::sync::atomic::Ordering::SeqCst);
        s
    }

    fn wrote(s: &Socket) -> Vec<Bytes> {
        s.wrote.lock().clone()
    }

    /// A queue with `sock` installed, its writer waiting (polled once,
    /// with a waker that counts).
    fn waiting(room: usize) -> (QueueSender, ClientReceiver, Arc<Socket>, Arc<Count>, Waker) {
        waiting_within(QueueLimits::default(), room)
    }

    /// [`waiting`], for a queue of `limits`.
    fn waiting_within(
        limits: QueueLimits,
        room: usize,
    ) -> (QueueSender, ClientReceiver, Arc<Socket>, Arc<Count>, Waker) {
        let (tx, mut rx) = queue(limits);
        let sock = socket(room);
        rx.write_now(sock.clone());
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        assert!(rx
            .poll_drain(&mut Context::from_waker(&waker), &mut Vec::new())
            .is_pending());
        (tx, rx, sock, count, waker)
    }

    #[test]
    fn a_push_to_an_idle_queue_is_written_at_once_without_a_wake_up() {
        let (tx, mut rx, sock, count, waker) = waiting(10);
        let mut out = Vec::new();
        at(1_000);
        tx.push_as(raw("a"), true).unwrap();
        at(1_000 + QUIET_MS);
        tx.push_as(raw("b"), true).unwrap();
        assert_eq!(wrote(&sock), vec![Bytes::from("a"), Bytes::from("b")]);
        assert_eq!((tx.len(), wakes(&count)), (0, 0));
        assert!(rx
            .poll_drain(&mut Context::from_waker(&waker), &mut out)
            .is_pending());
    }

    #[test]
    fn a_client_under_load_gets_its_pushes_through_its_writer_in_one_drain() {
        let (tx, mut rx, sock, count, _waker) = waiting(10);
        let mut out = Vec::new();
        at(5_000);
        tx.push_as(raw("a"), true).unwrap();
        at(5_000 + QUIET_MS - 1);
        tx.push_as(raw("b"), true).unwrap();
        tx.push_as(raw("c"), true).unwrap();
        assert_eq!(
            wrote(&sock),
            vec![Bytes::from("a")],
            "b and c came within {QUIET_MS} ms of a"
        );
        assert_eq!(wakes(&count), 1, "the writer is woken");
        assert_eq!(rx.try_drain(&mut out), Ok(2));
        // The writer's own write counts too: quiet only QUIET_MS after it.
        at(6_000);
        rx.written(false);
        waits(&mut rx);
        tx.push_as(raw("d"), true).unwrap();
        assert_eq!(tx.len(), 1);
        assert_eq!(rx.try_drain(&mut out), Ok(1));
        rx.written(false);
        waits(&mut rx);
        at(6_000 + QUIET_MS);
        tx.push_as(raw("e"), true).unwrap();
        assert_eq!(wrote(&sock).len(), 2, "quiet again: e is written at once");
        // A writer that joined several messages keeps the client longer.
        at(7_000);
        rx.hold();
        tx.push_as(raw("f"), true).unwrap();
        tx.push_as(raw("g"), true).unwrap();
        assert_eq!(rx.try_drain(&mut out), Ok(2));
        rx.written(true);
        waits(&mut rx);
        at(7_000 + QUIET_MS + LOADED_MS - 1);
        tx.push_as(raw("h"), true).unwrap();
        assert_eq!((wrote(&sock).len(), tx.len()), (2, 1), "h waits for the writer");
        assert_eq!(rx.try_drain(&mut out), Ok(1));
        rx.written(false);
        waits(&mut rx);
        at(8_000);
        tx.push_as(raw("i"), true).unwrap();
        assert_eq!(wrote(&sock).len(), 3, "i is written at once");
    }

    #[test]
    fn while_the_writer_writes_pushes_queue_behind_it_in_order() {
        let (tx, mut rx) = queue(QueueLimits::default());
        let sock = socket(10);
        rx.write_now(sock.clone());
        rx.hold(); // the writer sends a frame of its own (a ping)
        tx.push_as(raw("a"), true).unwrap();
        rx.written(false);
        tx.push_as(raw("b"), true).unwrap();
        assert!(wrote(&sock).is_empty(), "nothing may overtake a queued item");
        // Something waits: the writer's next poll drains it, and keeps the
        // connection.
        let waker = Waker::from(Arc::new(Count(Default::default())));
        let mut out = Vec::new();
        let poll = rx.poll_drain(&mut Context::from_waker(&waker), &mut out);
        assert_eq!(poll, Poll::Ready(Ok(2)));
        tx.push_as(raw("c"), true).unwrap();
        assert!(
            wrote(&sock).is_empty(),
            "the writer has not written what it drained"
        );
        assert_eq!(rx.try_drain(&mut out), Ok(1));
        at(20_000);
        rx.written(false);
        tx.push_as(raw("x"), true).unwrap();
        assert_eq!(
            tx.len(),
            1,
            "written, but not handed back before the writer polls"
        );
        assert_eq!(rx.try_drain(&mut out), Ok(1));
        rx.written(false);
        waits(&mut rx);
        at(20_000 + QUIET_MS);
        tx.push_as(raw("d"), true).unwrap();
        assert_eq!(wrote(&sock), vec![Bytes::from("d")]);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn what_a_full_socket_did_not_take_wakes_the_writer_and_holds_later_pushes() {
        let (tx, mut rx, sock, count, waker) = waiting(0);
        let mut out = Vec::new();
        tx.push_as(raw("a"), true).unwrap();
        assert_eq!(wakes(&count), 1, "the writer is woken");
        tx.push_as(raw("b"), true).unwrap();
        assert_eq!(wrote(&sock), vec![Bytes::from("a")], "b waits for the writer");
        // The writer is ready even though "a" never entered the queue (it
        // sends the transport's rest first), then drains "b".
        let poll = rx.poll_drain(&mut Context::from_waker(&waker), &mut out);
        assert_eq!(poll, Poll::Ready(Ok(1)));
        assert_eq!(out.len(), 1);
        at(10_000);
        rx.written(false);
        waits(&mut rx);
        sock.room.store(1, std::sync::atomic::Ordering::SeqCst);
        at(10_000 + QUIET_MS);
        tx.push_as(raw("c"), true).unwrap();
        assert_eq!(wrote(&sock).len(), 2, "idle again: c is written at once");
    }

    #[test]
    fn a_handoff_with_nothing_queued_is_reported_once() {
        let (tx, mut rx) = queue(QueueLimits::default());
        rx.write_now(socket(0));
        tx.push_as(raw("a"), true).unwrap();
        let mut out = Vec::new();
        assert_eq!(rx.try_drain(&mut out), Ok(0));
        let waker = Waker::from(Arc::new(Count(Default::default())));
        assert!(rx
            .poll_drain(&mut Context::from_waker(&waker), &mut out)
            .is_pending());
        // Still the writer's until it says written: a push queues.
        tx.push_as(raw("b"), true).unwrap();
        assert_eq!(tx.len(), 1);
    }

    fn wakes(count: &Count) -> usize {
        count.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A fan-out's push that may leave `item` to a flush, at the test
    /// clock's time.
    fn push_later(tx: &QueueSender, item: &Outbound) -> Result<bool, PushError> {
        tx.push_later(item, millis())
    }

    fn flush(tx: &QueueSender, item: Outbound) -> Flush {
        Flush::new(item, vec![tx.clone()])
    }

    #[test]
    fn a_push_left_for_a_flush_queues_nothing_wakes_nobody_and_the_flush_writes_it_at_once() {
        let (tx, mut rx, sock, count, waker) = waiting(10);
        at(30_000);
        assert_eq!(push_later(&tx, &raw("a")), Ok(true));
        assert_eq!(
            (tx.len(), wakes(&count)),
            (0, 0),
            "left to the flush, writer asleep"
        );
        assert!(wrote(&sock).is_empty());
        assert_eq!(
            tx.shared.state.lock().items.capacity(),
            0,
            "an idle client's queue allocates nothing for it"
        );
        at(30_001);
        flush(&tx, raw("a")).run();
        assert_eq!(wrote(&sock), vec![Bytes::from("a")]);
        assert_eq!((tx.len(), wakes(&count)), (0, 0));
        let mut out = Vec::new();
        assert!(rx
            .poll_drain(&mut Context::from_waker(&waker), &mut out)
            .is_pending());
        // Written at the flush: not quiet until QUIET_MS after it.
        at(30_001 + QUIET_MS - 1);
        assert_eq!(push_later(&tx, &raw("b")), Ok(false));
        assert_eq!((tx.len(), wakes(&count)), (1, 1), "b goes through the writer");
    }

    #[test]
    fn what_queues_behind_a_push_left_for_a_flush_goes_after_it_through_the_writer() {
        let (tx, mut rx, sock, count, waker) = waiting(10);
        at(31_000);
        assert_eq!(push_later(&tx, &raw("a")), Ok(true));
        assert_eq!(push_later(&tx, &raw("b")), Ok(false));
        tx.push_as(raw("c"), true).unwrap();
        assert_eq!(wakes(&count), 1, "b woke the writer");
        // The writer, woken, must not overtake the flush's `a`.
        let mut out = Vec::new();
        assert!(rx
            .poll_drain(&mut Context::from_waker(&waker), &mut out)
            .is_pending());
        assert_eq!(rx.try_drain(&mut out), Ok(0));
        flush(&tx, raw("a")).run();
        assert!(
            wrote(&sock).is_empty(),
            "a flush never writes ahead of what queued behind it"
        );
        assert_eq!(wakes(&count), 2, "the flush woke the writer");
        let poll = rx.poll_drain(&mut Context::from_waker(&waker), &mut out);
        assert_eq!(poll, Poll::Ready(Ok(3)));
        assert_eq!(describe_raw(&out), ["a", "b", "c"]);
    }

    #[test]
    fn a_flush_that_never_runs_queues_its_delivery_for_the_writer() {
        let (tx, mut rx, sock, count, _waker) = waiting(10);
        at(32_000);
        assert_eq!(push_later(&tx, &raw("a")), Ok(true));
        drop(flush(&tx, raw("a")));
        assert_eq!(wakes(&count), 1);
        let mut out = Vec::new();
        assert_eq!(rx.try_drain(&mut out), Ok(1));
        assert_eq!(describe_raw(&out), ["a"]);
        assert!(wrote(&sock).is_empty());
    }

    #[test]
    fn a_flush_finds_the_writer_holding_the_connection_and_queues_for_it() {
        let (tx, mut rx, sock, count, _waker) = waiting(10);
        at(33_500);
        assert_eq!(push_later(&tx, &raw("a")), Ok(true));
        // The writer's own frame (a ping) meanwhile.
        rx.hold();
        flush(&tx, raw("a")).run();
        assert!(wrote(&sock).is_empty(), "never two writers at once");
        assert_eq!(wakes(&count), 1);
        let mut out = Vec::new();
        assert_eq!(rx.try_drain(&mut out), Ok(1));
        assert_eq!(describe_raw(&out), ["a"]);
    }

    #[test]
    fn a_queue_closed_while_a_flush_holds_its_delivery_still_reports_the_reason() {
        let (tx, mut rx, sock, count, waker) = waiting(10);
        at(34_500);
        assert_eq!(push_later(&tx, &raw("a")), Ok(true));
        tx.close(DisconnectReason::Removed);
        assert_eq!(wakes(&count), 1);
        let mut out = Vec::new();
        assert!(rx
            .poll_drain(&mut Context::from_waker(&waker), &mut out)
            .is_pending());
        flush(&tx, raw("a")).run();
        assert!(wrote(&sock).is_empty(), "nothing is written to a closed queue");
        assert_eq!(wakes(&count), 2, "the flush woke the writer");
        let poll = rx.poll_drain(&mut Context::from_waker(&waker), &mut out);
        assert_eq!(poll, Poll::Ready(Err(DisconnectReason::Removed)));
    }

    #[test]
    fn what_a_full_socket_did_not_take_from_a_flush_goes_to_the_writer() {
        let (tx, mut rx, sock, count, waker) = waiting(0);
        at(33_000);
        assert_eq!(push_later(&tx, &raw("a")), Ok(true));
        flush(&tx, raw("a")).run();
        assert_eq!(wrote(&sock), vec![Bytes::from("a")]);
        assert_eq!(wakes(&count), 1, "the writer sends the rest");
        tx.push_as(raw("b"), true).unwrap();
        let mut out = Vec::new();
        let poll = rx.poll_drain(&mut Context::from_waker(&waker), &mut out);
        assert_eq!(poll, Poll::Ready(Ok(1)), "the rest first, then b");
        assert_eq!(describe_raw(&out), ["b"]);
    }

    #[test]
    fn a_queue_without_writes_at_once_never_leaves_a_push_for_a_flush() {
        let (tx, mut rx) = queue(QueueLimits::default());
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let mut out = Vec::new();
        assert!(rx
            .poll_drain(&mut Context::from_waker(&waker), &mut out)
            .is_pending());
        assert_eq!(push_later(&tx, &raw("a")), Ok(false));
        assert_eq!(wakes(&count), 1);
    }

    #[test]
    fn wake_ups_held_back_by_defer_wakes_come_once_it_returns_even_on_a_panic() {
        // A writer without writes at once (as over SSE): held back, then woken.
        let (tx, mut rx) = queue(QueueLimits::default());
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        assert!(rx
            .poll_drain(&mut Context::from_waker(&waker), &mut Vec::new())
            .is_pending());
        defer_wakes(|| {
            tx.push(raw("a")).unwrap();
            // Nested: the outermost wakes.
            defer_wakes(|| tx.push(raw("b")).unwrap());
            assert_eq!(wakes(&count), 0, "held back");
        });
        assert_eq!(wakes(&count), 1, "woken once, for both");
        let mut out = Vec::new();
        assert_eq!(rx.try_drain(&mut out), Ok(2));
        assert!(rx
            .poll_drain(&mut Context::from_waker(&waker), &mut out)
            .is_pending());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            defer_wakes(|| {
                tx.push(raw("c")).unwrap();
                panic!("a bug in the step");
            })
        }));
        assert!(panicked.is_err());
        assert_eq!(wakes(&count), 2, "a panic does not lose the wake-up");
        // And the thread is out of it: a push wakes at once again.
        assert!(rx
            .poll_drain(&mut Context::from_waker(&waker), &mut out)
            .is_ready());
        assert!(rx
            .poll_drain(&mut Context::from_waker(&waker), &mut out)
            .is_pending());
        tx.push(raw("d")).unwrap();
        assert_eq!(wakes(&count), 3);
    }

    #[test]
    fn what_defer_wakes_queued_for_a_waiting_writer_goes_out_in_one_write_when_it_returns() {
        let (tx, mut rx, sock, count, _waker) = waiting(10);
        defer_wakes(|| {
            tx.push(raw("a")).unwrap();
            tx.push(raw("b")).unwrap();
            assert!(wrote(&sock).is_empty(), "nothing before it returns");
        });
        assert_eq!(wrote(&sock), [Bytes::from("a"), Bytes::from("b")]);
        assert_eq!(
            sock.writes.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one write"
        );
        assert_eq!(wakes(&count), 0, "the writer slept through it");
        let mut out = Vec::new();
        assert_eq!(rx.try_drain(&mut out), Ok(0), "nothing left to drain");
        // The writer still waits: its waker was given back, and a later
        // push (through the writer: the client just took a batch) wakes it.
        tx.push(raw("c")).unwrap();
        assert_eq!(wakes(&count), 1);
        assert_eq!(rx.try_drain(&mut out), Ok(1));
        assert_eq!(describe_raw(&out), ["c"]);
    }

    #[test]
    fn defer_wakes_writes_at_most_cork_max_queues_and_wakes_the_other_writers() {
        let clients: Vec<_> = (0..CORK_MAX + 2).map(|_| waiting(10)).collect();
        defer_wakes(|| {
            for (tx, ..) in &clients {
                tx.push(raw("a")).unwrap();
            }
        });
        for (i, (_, _, sock, count, _)) in clients.iter().enumerate() {
            let written = i < CORK_MAX;
            assert_eq!(!wrote(sock).is_empty(), written, "client {i} written at once");
            assert_eq!(wakes(count), usize::from(!written), "client {i} woken");
        }
    }

    #[test]
    fn beyond_cork_max_defer_wakes_leaves_the_writes_to_flushes_on_other_threads() {
        let keep = Arc::new(Keep::default());
        let clients: Vec<_> = (0..2 * CORK_MAX + 2).map(|_| waiting(10)).collect();
        for (_, _, sock, ..) in &clients {
            assert!(sock.spread.set(keep.clone()).is_ok());
        }
        defer_wakes(|| {
            for (tx, ..) in &clients {
                tx.push(raw("a")).unwrap();
            }
        });
        let written = |range: std::ops::Range<usize>| {
            clients[range]
                .iter()
                .map(|(_, _, sock, count, _)| (wrote(sock).len(), wakes(count)))
                .collect::<Vec<_>>()
        };
        assert_eq!(written(0..CORK_MAX), vec![(1, 0); CORK_MAX], "on this thread");
        assert_eq!(
            written(CORK_MAX..2 * CORK_MAX + 2),
            vec![(0, 0); CORK_MAX + 2],
            "left"
        );
        let mut flushes = std::mem::take(&mut *keep.0.lock());
        assert_eq!(flushes.iter().map(Flush::len).collect::<Vec<_>>(), [CORK_MAX, 2]);
        // What is pushed before a flush runs goes with it, in order.
        clients[CORK_MAX].0.push(raw("b")).unwrap();
        let last = flushes.pop().unwrap();
        flushes.pop().unwrap().run();
        assert_eq!(written(CORK_MAX + 1..2 * CORK_MAX), vec![(1, 0); CORK_MAX - 1]);
        assert_eq!(wrote(&clients[CORK_MAX].2), [Bytes::from("a"), Bytes::from("b")]);
        assert_eq!(wakes(&clients[CORK_MAX].3), 0);
        assert_eq!(
            clients[CORK_MAX]
                .2
                .writes
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        // A flush dropped unrun (a runtime shutting down) wakes its writers.
        drop(last);
        assert_eq!(written(2 * CORK_MAX..2 * CORK_MAX + 2), vec![(0, 1); 2]);
        let mut out = Vec::new();
        let (_, rx, ..) = &mut clients.into_iter().last().unwrap();
        assert_eq!(rx.try_drain(&mut out), Ok(1));
    }

    #[test]
    fn a_backlogged_queue_is_left_to_its_writer_when_defer_wakes_returns() {
        // A reader waiting for its writer's next frame (backpressure) is
        // woken by that frame: a queue over half full is not written here.
        let limits = QueueLimits {
            max_messages: 4,
            max_bytes: 1 << 20,
        };
        let (tx, mut rx, sock, count, _waker) = waiting_within(limits, 10);
        defer_wakes(|| {
            for m in ["a", "b", "c"] {
                tx.push(raw(m)).unwrap();
            }
        });
        assert!(wrote(&sock).is_empty());
        assert_eq!(wakes(&count), 1, "woken instead");
        let mut out = Vec::new();
        assert_eq!(rx.try_drain(&mut out), Ok(3));
    }

    #[test]
    fn what_the_socket_leaves_of_a_write_when_defer_wakes_returns_goes_to_the_writer() {
        let (tx, mut rx, sock, count, _waker) = waiting(0);
        defer_wakes(|| tx.push(raw("a")).unwrap());
        assert_eq!(wrote(&sock), [Bytes::from("a")], "tried at once");
        assert_eq!(wakes(&count), 1, "the writer sends the rest");
        let mut out = Vec::new();
        assert_eq!(rx.try_drain(&mut out), Ok(0), "the rest, before anything queued");
        // The writer owns the connection until it has written the rest.
        tx.push(raw("b")).unwrap();
        assert_eq!(wrote(&sock).len(), 1);
        assert_eq!(rx.try_drain(&mut out), Ok(1));
    }

    #[test]
    fn a_writer_that_holds_the_connection_is_woken_when_defer_wakes_returns() {
        let (tx, mut rx, sock, count, waker) = waiting(10);
        // The writer drained and writes a frame: pushes meanwhile queue.
        tx.push(raw("a")).unwrap();
        let mut out = Vec::new();
        assert_eq!(rx.try_drain(&mut out), Ok(1));
        assert!(rx
            .poll_drain(&mut Context::from_waker(&waker), &mut out)
            .is_pending());
        let before = wakes(&count);
        defer_wakes(|| tx.push(raw("b")).unwrap());
        assert!(wrote(&sock).is_empty(), "not past the writer");
        assert_eq!(wakes(&count), before + 1);
        out.clear();
        assert_eq!(rx.try_drain(&mut out), Ok(1));
        assert_eq!(describe_raw(&out), ["b"]);
    }

    fn describe_raw(out: &[Outbound]) -> Vec<String> {
        out.iter()
            .map(|o| match o {
                Outbound::Raw(b) => String::from_utf8(b.to_vec()).unwrap(),
                Outbound::Event(_) => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn dropping_the_receiver_lets_go_of_the_transport() {
        let (tx, mut rx) = queue(QueueLimits::default());
        let sock = socket(10);
        rx.write_now(sock.clone());
        assert_eq!(Arc::strong_count(&sock), 2);
        drop(rx);
        assert_eq!(
            Arc::strong_count(&sock),
            1,
            "no write at once can follow the receiver"
        );
        assert_eq!(tx.push_as(raw("a"), true), Err(PushError::Closed));
        assert!(wrote(&sock).is_empty());
    }

    #[test]
    fn a_closed_queue_writes_nothing_at_once() {
        let (tx, mut rx) = queue(QueueLimits::default());
        let sock = socket(10);
        rx.write_now(sock.clone());
        tx.close(DisconnectReason::Shutdown);
        assert_eq!(tx.push_as(raw("a"), true), Err(PushError::Closed));
        assert!(wrote(&sock).is_empty());
    }
}
