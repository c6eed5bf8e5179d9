//! File sources (`[[watch]]`): changes under a directory, or to one file,
//! become publications. A source publishes file events (created, modified,
//! removed, renamed) as JSON objects to its `channel` and, in tail mode,
//! every complete line appended to a matching file to the channel its
//! `tail_channel` template names for that file.
//!
//! How it runs: notify's own thread (inotify on Linux, FSEvents on macOS;
//! never polling) hands raw events through a bounded channel to one worker
//! thread per source. The worker reads files with plain blocking I/O and
//! publishes through a [`Sink`]: the hub's `publish` (memory engine), which
//! is synchronous and never waits on a client, or the node's broker publish
//! run to completion on the runtime from the worker's own thread. When the worker falls behind, the bounded channel holds notify's
//! thread back, the kernel's queue overflows, notify says "rescan", and the
//! worker rescans the files it follows: memory stays bounded, nothing
//! crashes, lines are not lost (only file events are).
//!
//! This module must never treat its own reads as changes: inotify reports
//! every open and close, the worker's included (the `Access` kinds), so only
//! create, data-modify, remove and rename kinds are acted upon. It never
//! polls and never sleeps; the one timeout is the short wait for the second
//! half of a rename.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use crier_core::{HubError, PublishOptions};
use globset::{GlobBuilder, GlobMatcher};
use notify::event::{ModifyKind, RemoveKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::{ChannelConfig, Config, ConfigError, WatchConfig};
use crate::error::ServerError;
use crate::node::Node;

/// Longest partial line kept while waiting for its newline. A longer line is
/// dropped, with a warning, up to and including its newline.
pub const MAX_LINE: usize = 1 << 20;

/// Raw events buffered between notify's thread and a source's worker.
const EVENT_QUEUE: usize = 4096;

/// How long the "from" half of a rename waits for its "to" half. inotify
/// queues both within one `rename(2)`, so this only covers scheduling; an
/// unpaired half means the file left the watched tree.
const RENAME_PAIRING: Duration = Duration::from_millis(100);

/// How long after a new directory appears it is listed again. notify adds
/// its watch on a new directory only after handing over the event that
/// announced it; a file created in that gap has no event of its own.
const NEW_DIR_SETTLE: Duration = Duration::from_millis(100);

/// Bytes asked for per `read(2)`.
const READ_CHUNK: usize = 64 * 1024;

/// The file sources of a node, watching since [`start`] returned.
pub struct Watchers {
    sources: Vec<Source>,
}

/// One `[[watch]]` entry: the OS watch and the state its worker will own.
struct Source {
    // Dropping it stops notify's thread, which drops the sending half of
    // the worker's channel, which ends the worker.
    watcher: RecommendedWatcher,
    worker: Worker,
}

/// Checks every `[[watch]]` entry exactly as [`start`] does, without
/// watching (what `crier check-config` reports): paths must exist, globs
/// and templates parse, channels belong to configured namespaces.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    for (i, entry) in config.watch.iter().enumerate() {
        Spec::new(i, entry, config)?;
    }
    Ok(())
}

/// Validates every `[[watch]]` entry and starts watching. When it returns,
/// the OS watches are in place and the read position of every existing
/// matching file is recorded (at its end), so anything written afterwards is
/// published once [`Watchers::run`] runs.
pub fn start(node: &Arc<Node>) -> Result<Watchers, ServerError> {
    let mut sources = Vec::with_capacity(node.config.watch.len());
    for (i, config) in node.config.watch.iter().enumerate() {
        let spec = Spec::new(i, config, &node.config)?;
        sources.push(Source::start(spec, Sink::of(node))?);
    }
    Ok(Watchers { sources })
}

impl Watchers {
    /// Publishes file changes until `shutdown` is cancelled, then drops the
    /// watches (their workers end on their own as their channels close).
    pub async fn run(self, shutdown: CancellationToken) {
        if self.sources.is_empty() {
            return;
        }
        let mut watchers = Vec::with_capacity(self.sources.len());
        for Source { watcher, worker } in self.sources {
            watchers.push(watcher);
            let key = worker.spec.key.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("crier-{key}"))
                .spawn(move || worker.run());
            if let Err(error) = spawned {
                tracing::error!(source = %key, %error, "cannot start the file source's thread");
            }
        }
        shutdown.cancelled().await;
        drop(watchers);
    }
}

impl Source {
    fn start(spec: Spec, hub: Sink) -> Result<Self, ServerError> {
        let watch_error = |source| ServerError::Watch {
            key: format!("{}.path", spec.key),
            path: spec.root.display().to_string(),
            source,
        };
        let (tx, rx) = mpsc::sync_channel(EVENT_QUEUE);
        // A full channel blocks notify's thread: back-pressure onto the
        // kernel queue, whose overflow the worker handles with a rescan.
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .map_err(watch_error)?;
        let mode = match spec.scope {
            Scope::Tree(_) => RecursiveMode::Recursive,
            // The directory, not the file: a watch on the file itself would
            // follow its inode away on rotation and miss the new file.
            Scope::File(_) => RecursiveMode::NonRecursive,
        };
        watcher.watch(&spec.root, mode).map_err(watch_error)?;
        let mut worker = Worker::new(spec, hub, rx);
        // After the watch is in place, so a change made meanwhile is either
        // before the recorded end or reported by an event.
        worker.follow_existing();
        Ok(Self { watcher, worker })
    }
}

// ----- configuration -------------------------------------------------------

/// A validated `[[watch]]` entry.
struct Spec {
    /// `watch[i]`, for errors and logs.
    key: String,
    /// The directory watched; event paths are reported relative to it.
    root: PathBuf,
    /// Which files under `root` count.
    scope: Scope,
    /// Where file events go; `None` = not published.
    events: Option<String>,
    /// Where lines go; `None` = no tail mode.
    tail: Option<TailChannel>,
}

enum Scope {
    /// A directory watched recursively; files whose path relative to the
    /// root matches the glob.
    Tree(GlobMatcher),
    /// One file, by name, in the watched directory (its parent).
    File(OsString),
}

impl Spec {
    fn new(i: usize, c: &WatchConfig, config: &Config) -> Result<Self, ConfigError> {
        let key = format!("watch[{i}]");
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            key: format!("{key}.{field}"),
            message,
        };
        if c.path.trim().is_empty() {
            return Err(invalid("path", "must name a directory or a file".into()));
        }
        let path = fs::canonicalize(&c.path).map_err(|e| invalid("path", format!("{:?}: {e}", c.path)))?;
        let meta = fs::metadata(&path).map_err(|e| invalid("path", format!("{:?}: {e}", c.path)))?;
        let (root, scope) = if meta.is_dir() {
            let glob = GlobBuilder::new(&c.glob)
                .literal_separator(true)
                .build()
                .map_err(|e| invalid("glob", e.to_string()))?;
            (path, Scope::Tree(glob.compile_matcher()))
        } else if meta.is_file() {
            match (path.parent(), path.file_name()) {
                (Some(dir), Some(name)) => (dir.to_owned(), Scope::File(name.to_owned())),
                _ => return Err(invalid("path", format!("{:?} has no parent directory", c.path))),
            }
        } else {
            return Err(invalid(
                "path",
                format!("{:?} is neither a directory nor a regular file", c.path),
            ));
        };

        let channels = &config.channel;
        let events = if c.channel.is_empty() {
            None
        } else if channels.options_for(&c.channel).is_none() {
            return Err(invalid("channel", unknown_namespace(channels, &c.channel)));
        } else {
            Some(c.channel.clone())
        };

        let tail = if !c.tail {
            None
        } else if c.tail_channel.is_empty() {
            return Err(invalid(
                "tail_channel",
                "tail = true needs a channel template, e.g. \"conversation:{stem}\"".into(),
            ));
        } else {
            let parts = parse_template(&c.tail_channel).map_err(|m| invalid("tail_channel", m))?;
            let namespace = channels.namespace_of(&c.tail_channel);
            if namespace.is_some_and(|ns| ns.contains('{')) {
                return Err(invalid(
                    "tail_channel",
                    format!(
                        "{:?}: the namespace (before {:?}) must be fixed; put {{stem}} or {{name}} after it",
                        c.tail_channel, channels.namespace_boundary
                    ),
                ));
            }
            if channels.options_for(&c.tail_channel).is_none() {
                return Err(invalid(
                    "tail_channel",
                    unknown_namespace(channels, &c.tail_channel),
                ));
            }
            Some(TailChannel {
                parts,
                namespace: namespace.map(str::to_owned),
                channels: channels.clone(),
            })
        };

        if events.is_none() && tail.is_none() {
            return Err(ConfigError::Invalid {
                key,
                message: "publishes nothing: set channel (file events), tail = true (lines), or both".into(),
            });
        }
        Ok(Self {
            key,
            root,
            scope,
            events,
            tail,
        })
    }

    /// `path` relative to the root, `/`-separated, if it is a file this
    /// source covers.
    fn relative(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        if rel.as_os_str().is_empty() {
            return None;
        }
        let covered = match &self.scope {
            Scope::Tree(glob) => glob.is_match(rel),
            Scope::File(name) => rel.as_os_str() == name.as_os_str(),
        };
        covered.then(|| {
            let parts: Vec<_> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect();
            parts.join("/")
        })
    }
}

fn unknown_namespace(channels: &ChannelConfig, channel: &str) -> String {
    format!(
        "channel {channel:?} is in namespace {:?}, which is not configured in channel.namespaces",
        channels.namespace_of(channel).unwrap_or_default()
    )
}

/// The channel of a tailed file: `tail_channel` with `{stem}` and `{name}`
/// filled in.
struct TailChannel {
    parts: Vec<Part>,
    /// The template's namespace; a file name must not change it.
    namespace: Option<String>,
    channels: ChannelConfig,
}

#[derive(Debug, PartialEq)]
pub(crate) enum Part {
    Text(String),
    /// The file name without its last extension.
    Stem,
    /// The file name.
    Name,
}

pub(crate) fn parse_template(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    loop {
        let open = rest.find('{').unwrap_or(rest.len());
        let text = &rest[..open];
        if text.contains('}') {
            return Err(format!("{template:?}: unmatched \"}}\""));
        }
        if !text.is_empty() {
            parts.push(Part::Text(text.to_owned()));
        }
        if open == rest.len() {
            return Ok(parts);
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("{template:?}: unclosed \"{{\""))?;
        parts.push(match &after[..close] {
            "stem" => Part::Stem,
            "name" => Part::Name,
            other => {
                return Err(format!(
                    "{template:?}: unknown placeholder {{{other}}}; use {{stem}} or {{name}}"
                ))
            }
        });
        rest = &after[close + 1..];
    }
}

impl TailChannel {
    /// The channel for the file at `rel`, or why it has none (a file name
    /// that would move the channel into another namespace).
    fn render(&self, rel: &str) -> Result<String, String> {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let stem = Path::new(name)
            .file_stem()
            .map_or_else(|| name.to_owned(), |s| s.to_string_lossy().into_owned());
        let mut channel = String::new();
        for part in &self.parts {
            channel.push_str(match part {
                Part::Text(t) => t,
                Part::Stem => &stem,
                Part::Name => name,
            });
        }
        if self.channels.namespace_of(&channel) != self.namespace.as_deref() {
            return Err(format!(
                "file {rel:?} would publish to {channel:?}, outside the namespace of tail_channel"
            ));
        }
        Ok(channel)
    }
}

// ----- the worker ----------------------------------------------------------

/// Owns everything one source knows about its files; runs on its own thread.
struct Worker {
    spec: Spec,
    hub: Sink,
    events: Receiver<notify::Result<notify::Event>>,
    /// Files followed in tail mode, by absolute path.
    tailed: HashMap<PathBuf, Tailed>,
    /// A rename's "from" half waiting for its "to" half.
    pending: Option<PendingRename>,
    /// New directories to list once more when notify watches them surely.
    new_dirs: Vec<NewDir>,
    /// Read buffer, reused for every read.
    buf: Box<[u8]>,
}

struct PendingRename {
    path: PathBuf,
    tracker: Option<usize>,
    deadline: Instant,
}

struct NewDir {
    path: PathBuf,
    /// Files in it announced already (by the first listing or by events).
    seen: HashSet<PathBuf>,
    due: Instant,
}

impl Worker {
    fn new(spec: Spec, hub: Sink, events: Receiver<notify::Result<notify::Event>>) -> Self {
        Self {
            spec,
            hub,
            events,
            tailed: HashMap::new(),
            pending: None,
            new_dirs: Vec::new(),
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
        }
    }

    fn run(mut self) {
        loop {
            let deadline = self
                .pending
                .as_ref()
                .map(|p| p.deadline)
                .into_iter()
                .chain(self.new_dirs.iter().map(|d| d.due))
                .min();
            let received = match deadline {
                None => self.events.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => self
                    .events
                    .recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            let keep_going = match received {
                Ok(Ok(event)) => self.handle(event),
                Ok(Err(error)) => {
                    self.notify_error(error);
                    true
                }
                Err(RecvTimeoutError::Timeout) => self.on_deadline(),
                Err(RecvTimeoutError::Disconnected) => false,
            };
            if !keep_going {
                return;
            }
        }
    }

    /// Acts on one event; `false` once the watched directory is gone.
    fn handle(&mut self, event: notify::Event) -> bool {
        if event.need_rescan() {
            if !self.flush_pending() {
                return false;
            }
            self.rescan();
            return true;
        }
        match event.kind {
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                if !self.flush_pending() {
                    return false;
                }
                if let Some(path) = event.paths.into_iter().next() {
                    self.pending = Some(PendingRename {
                        path,
                        tracker: event.attrs.tracker(),
                        deadline: Instant::now() + RENAME_PAIRING,
                    });
                }
                true
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                let tracker = event.attrs.tracker();
                let paired = self
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.tracker.is_some() && p.tracker == tracker);
                // A paired "to" is followed by a "both" with the two paths.
                if !paired {
                    if !self.flush_pending() {
                        return false;
                    }
                    // Moved in from outside the tree: a new file.
                    for path in &event.paths {
                        self.appeared(path);
                    }
                }
                true
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                let paired = match (&self.pending, &event.paths[..]) {
                    (Some(p), [from, _]) => p.path == *from,
                    _ => false,
                };
                if paired {
                    self.pending = None;
                    if let [from, to] = &event.paths[..] {
                        self.renamed(from, to);
                    }
                    true
                } else {
                    // Its halves were already handled as moved out and in.
                    self.flush_pending()
                }
            }
            // Opens and closes (the worker's own reads among them),
            // metadata changes, and anything unknown: not changes, and not
            // a reason to stop waiting for a rename's second half.
            EventKind::Access(_)
            | EventKind::Modify(ModifyKind::Metadata(_) | ModifyKind::Other)
            | EventKind::Other
            | EventKind::Any => true,
            kind => {
                if !self.flush_pending() {
                    return false;
                }
                for path in &event.paths {
                    let alive = match kind {
                        EventKind::Create(_) => {
                            self.appeared(path);
                            true
                        }
                        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
                            self.modified(path);
                            true
                        }
                        // Backends that cannot tell rename halves apart.
                        EventKind::Modify(ModifyKind::Name(_)) => {
                            if path.exists() {
                                self.appeared(path);
                                true
                            } else {
                                self.gone(path, true)
                            }
                        }
                        EventKind::Remove(kind) => self.gone(path, kind != RemoveKind::Folder),
                        _ => true,
                    };
                    if !alive {
                        return false;
                    }
                }
                true
            }
        }
    }

    /// Something waited for is due: an unpaired rename half, or the second
    /// listing of a new directory.
    fn on_deadline(&mut self) -> bool {
        let now = Instant::now();
        if self.pending.as_ref().is_some_and(|p| p.deadline <= now) && !self.flush_pending() {
            return false;
        }
        let (due, waiting): (Vec<NewDir>, Vec<NewDir>) = std::mem::take(&mut self.new_dirs)
            .into_iter()
            .partition(|d| d.due <= now);
        self.new_dirs = waiting;
        for dir in due {
            for (file, rel) in self.covered_files(&dir.path) {
                if !dir.seen.contains(&file) {
                    self.file_appeared(&file, &rel);
                }
            }
        }
        true
    }

    fn notify_error(&self, error: notify::Error) {
        if matches!(error.kind, notify::ErrorKind::MaxFilesWatch) {
            tracing::warn!(
                source = %self.spec.key,
                "inotify watch limit reached (sysctl fs.inotify.max_user_watches): \
                 new directories are not watched"
            );
        } else {
            tracing::warn!(source = %self.spec.key, %error, "file watch error");
        }
    }

    /// A rename's "from" half that found no "to": the file (or directory)
    /// left the watched tree. `false` once the watched directory is gone.
    fn flush_pending(&mut self) -> bool {
        match self.pending.take() {
            None => true,
            Some(p) => {
                let was_dir = self.tailed.keys().any(|t| t != &p.path && t.starts_with(&p.path));
                self.gone(&p.path, !was_dir)
            }
        }
    }

    /// A file or directory appeared at `path` (created, or moved in).
    fn appeared(&mut self, path: &Path) {
        let Ok(meta) = fs::metadata(path) else {
            return; // already gone; its removal is reported next
        };
        if meta.is_dir() {
            // Files created in it before notify added its watch send no
            // event of their own: list it now, and once more when notify
            // watches it for sure.
            let mut seen = HashSet::new();
            for (file, rel) in self.covered_files(path) {
                self.file_appeared(&file, &rel);
                seen.insert(file);
            }
            self.new_dirs.push(NewDir {
                path: path.to_owned(),
                seen,
                due: Instant::now() + NEW_DIR_SETTLE,
            });
            return;
        }
        if !meta.is_file() {
            return;
        }
        if let Some(rel) = self.spec.relative(path) {
            let mut listed = false;
            for dir in &mut self.new_dirs {
                if path.starts_with(&dir.path) {
                    listed |= !dir.seen.insert(path.to_owned());
                }
            }
            if listed {
                // Announced by the listing of its new directory already.
                self.read(path, &rel, &meta);
            } else {
                self.file_appeared(path, &rel);
            }
        }
    }

    fn file_appeared(&mut self, path: &Path, rel: &str) {
        let meta = fs::metadata(path).ok();
        self.publish_event("created", rel, meta.as_ref());
        if let Some(meta) = meta {
            self.read(path, rel, &meta);
        }
    }

    fn modified(&mut self, path: &Path) {
        let Some(rel) = self.spec.relative(path) else {
            return;
        };
        let meta = fs::metadata(path).ok();
        if meta.as_ref().is_some_and(|m| !m.is_file()) {
            return;
        }
        self.publish_event("modified", &rel, meta.as_ref());
        if let Some(meta) = meta {
            self.read(path, &rel, &meta);
        }
    }

    /// `path` (a file, or a directory with everything under it) is gone.
    /// `false` when it is the watched directory itself.
    fn gone(&mut self, path: &Path, is_file: bool) -> bool {
        let under: Vec<PathBuf> = self
            .tailed
            .iter()
            .filter(|(t, tailed)| t.starts_with(path) && !tailed.is_at(t))
            .map(|(t, _)| t.clone())
            .collect();
        for t in under {
            if let Some(tailed) = self.tailed.remove(&t) {
                tailed.finish(&t, &self.hub, &mut self.buf, &self.spec.key);
            }
        }
        self.new_dirs.retain(|d| !d.path.starts_with(path));
        for dir in &mut self.new_dirs {
            dir.seen.remove(path);
        }
        if self.spec.root.starts_with(path) {
            tracing::warn!(
                source = %self.spec.key,
                path = %self.spec.root.display(),
                "the watched directory was moved or removed: this file source stops; restart crier to watch it again"
            );
            return false;
        }
        if is_file {
            if let Some(rel) = self.spec.relative(path) {
                self.publish_event("removed", &rel, None);
            }
        }
        true
    }

    fn renamed(&mut self, from: &Path, to: &Path) {
        let meta = fs::metadata(to).ok();
        if meta.as_ref().is_some_and(Metadata::is_dir) {
            // A directory moved inside the tree: its followed files keep
            // their positions under their new paths.
            let moved: Vec<PathBuf> = self
                .tailed
                .keys()
                .filter(|t| t.starts_with(from))
                .cloned()
                .collect();
            for old in moved {
                let Some(tailed) = self.tailed.remove(&old) else {
                    continue;
                };
                let new = match old.strip_prefix(from) {
                    Ok(suffix) => to.join(suffix),
                    Err(_) => continue,
                };
                self.rehome(old, tailed, new);
            }
            // Files that match only under the new name are new to us.
            for (file, rel) in self.covered_files(to) {
                if let Ok(meta) = fs::metadata(&file) {
                    self.read(&file, &rel, &meta);
                }
            }
            return;
        }
        let from_rel = self.spec.relative(from);
        let to_rel = self.spec.relative(to);
        if let Some(channel) = &self.spec.events {
            if from_rel.is_some() || to_rel.is_some() {
                let rel = |p: &Path| {
                    p.strip_prefix(&self.spec.root)
                        .map_or_else(|_| p.to_string_lossy(), |r| r.to_string_lossy())
                        .into_owned()
                };
                let (size, mtime) = size_and_mtime(meta.as_ref());
                let to = Value::from(rel(to));
                let data = event_json(&[
                    ("event", "renamed".into()),
                    ("path", to.clone()),
                    ("from", rel(from).into()),
                    ("to", to),
                    ("size", size.into()),
                    ("mtime", mtime.into()),
                ]);
                publish(&self.hub, channel, data, &self.spec.key);
            }
        }
        if self.spec.tail.is_none() {
            return;
        }
        let renamed = match self.tailed.get(from) {
            Some(t) if !t.is_at(from) => self.tailed.remove(from),
            _ => None,
        };
        match (renamed, to_rel) {
            (Some(tailed), Some(_)) => self.rehome(from.to_owned(), tailed, to.to_owned()),
            (Some(tailed), None) => tailed.finish(from, &self.hub, &mut self.buf, &self.spec.key),
            (None, Some(rel)) => {
                if let Some(meta) = meta {
                    self.read(to, &rel, &meta);
                }
            }
            (None, None) => {}
        }
    }

    /// Moves a followed file from `old` to `new`: what was appended under
    /// the old name goes to the old channel, later lines to the new one;
    /// the position is kept (its content was published already).
    fn rehome(&mut self, old: PathBuf, mut tailed: Tailed, new: PathBuf) {
        if let Err(error) = tailed.read_new(&self.hub, &mut self.buf, &self.spec.key) {
            tracing::warn!(source = %self.spec.key, path = %old.display(), %error, "cannot read file");
        }
        let Some(rel) = self.spec.relative(&new) else {
            tailed.finish(&old, &self.hub, &mut self.buf, &self.spec.key);
            return;
        };
        tailed.channel = self.tail_channel(&rel);
        if let Some(replaced) = self.tailed.insert(new.clone(), tailed) {
            replaced.finish(&new, &self.hub, &mut self.buf, &self.spec.key);
        }
    }

    /// The queue overflowed and events were lost: catch up on every
    /// followed file, follow new ones from their start, forget vanished ones.
    fn rescan(&mut self) {
        tracing::warn!(source = %self.spec.key, "file event queue overflowed: rescanning");
        if let Some(channel) = &self.spec.events {
            publish(&self.hub, channel, &b"{\"event\":\"rescan\"}"[..], &self.spec.key);
        }
        if self.spec.tail.is_none() {
            return;
        }
        let root = self.spec.root.clone();
        let found = self.covered_files(&root);
        let present: HashSet<&PathBuf> = found.iter().map(|(p, _)| p).collect();
        let vanished: Vec<PathBuf> = self
            .tailed
            .keys()
            .filter(|t| !present.contains(t))
            .cloned()
            .collect();
        for path in vanished {
            if let Some(tailed) = self.tailed.remove(&path) {
                tailed.finish(&path, &self.hub, &mut self.buf, &self.spec.key);
            }
        }
        for (path, rel) in found {
            if let Ok(meta) = fs::metadata(&path) {
                self.read(&path, &rel, &meta);
            }
        }
    }

    /// At start: follow every covered file from its current end.
    fn follow_existing(&mut self) {
        if self.spec.tail.is_none() {
            return;
        }
        let root = self.spec.root.clone();
        for (path, rel) in self.covered_files(&root) {
            let channel = self.tail_channel(&rel);
            match Tailed::open(&path, channel, true) {
                Ok(tailed) => {
                    self.tailed.insert(path, tailed);
                }
                Err(error) => {
                    tracing::warn!(source = %self.spec.key, path = %path.display(), %error, "cannot open file");
                }
            }
        }
    }

    /// Tail mode: publishes what was appended to `path` since the last read.
    /// A file not followed yet, or a new file at a followed path (rotation),
    /// is read from its start.
    fn read(&mut self, path: &Path, rel: &str, meta: &Metadata) {
        if self.spec.tail.is_none() {
            return;
        }
        let same = self
            .tailed
            .get(path)
            .map(|t| t.id.is_none() || t.id == file_id(meta));
        if same == Some(false) {
            if let Some(old) = self.tailed.remove(path) {
                old.finish(path, &self.hub, &mut self.buf, &self.spec.key);
            }
        }
        if same != Some(true) {
            let channel = self.tail_channel(rel);
            match Tailed::open(path, channel, false) {
                Ok(tailed) => {
                    self.tailed.insert(path.to_owned(), tailed);
                }
                Err(error) => {
                    tracing::warn!(source = %self.spec.key, path = %path.display(), %error, "cannot open file");
                    return;
                }
            }
        }
        let Some(tailed) = self.tailed.get_mut(path) else {
            return;
        };
        if let Err(error) = tailed.read_new(&self.hub, &mut self.buf, &self.spec.key) {
            tracing::warn!(source = %self.spec.key, path = %path.display(), %error, "cannot read file");
        }
    }

    fn tail_channel(&self, rel: &str) -> Option<String> {
        let template = self.spec.tail.as_ref()?;
        match template.render(rel) {
            Ok(channel) => Some(channel),
            Err(why) => {
                tracing::warn!(source = %self.spec.key, "{why}; its lines are not published");
                None
            }
        }
    }

    /// Every regular file under `dir` (or the one file) this source covers.
    fn covered_files(&self, dir: &Path) -> Vec<(PathBuf, String)> {
        let mut found = Vec::new();
        if let Scope::File(name) = &self.spec.scope {
            let path = self.spec.root.join(name);
            if dir == self.spec.root && path.is_file() {
                if let Some(rel) = self.spec.relative(&path) {
                    found.push((path, rel));
                }
            }
            return found;
        }
        let mut dirs = vec![dir.to_owned()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                match entry.file_type() {
                    // Symlinked directories are not followed: no loops.
                    Ok(t) if t.is_dir() => dirs.push(path),
                    Ok(_) if path.is_file() => {
                        if let Some(rel) = self.spec.relative(&path) {
                            found.push((path, rel));
                        }
                    }
                    _ => {}
                }
            }
        }
        found
    }

    /// Publishes `{"event", "path", "size", "mtime"}`; a removal carries
    /// no size or mtime.
    fn publish_event(&self, event: &str, rel: &str, meta: Option<&Metadata>) {
        let Some(channel) = &self.spec.events else {
            return;
        };
        let data = if event == "removed" {
            event_json(&[("event", event.into()), ("path", rel.into())])
        } else {
            let (size, mtime) = size_and_mtime(meta);
            event_json(&[
                ("event", event.into()),
                ("path", rel.into()),
                ("size", size.into()),
                ("mtime", mtime.into()),
            ])
        };
        publish(&self.hub, channel, data, &self.spec.key);
    }
}

/// A JSON object with its keys in the order given (`json!` would sort them).
fn event_json(fields: &[(&str, Value)]) -> Vec<u8> {
    let mut out = String::from("{");
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(*key).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    }
    out.push('}');
    out.into_bytes()
}

fn size_and_mtime(meta: Option<&Metadata>) -> (Option<u64>, Option<u64>) {
    let size = meta.map(Metadata::len);
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    (size, mtime)
}

type PublishFn = dyn Fn(&str, Bytes) -> Result<(), HubError> + Send + Sync;

/// Where a source's publications go; cheap to clone.
#[derive(Clone)]
pub struct Sink {
    publish: Arc<PublishFn>,
}

impl Sink {
    /// Straight into `hub` (memory engine), untimed.
    #[cfg(test)]
    pub fn hub(hub: crier_core::Hub) -> Self {
        Self {
            publish: Arc::new(move |channel, data| {
                hub.publish(channel, data, PublishOptions::default()).map(|_| ())
            }),
        }
    }

    /// Through `node`: timed in the publish metrics, and through the broker
    /// on a cluster engine (blocking the worker thread, never a runtime one).
    pub fn of(node: &Arc<Node>) -> Self {
        let node = node.clone();
        let runtime = tokio::runtime::Handle::try_current().ok();
        Self {
            publish: Arc::new(move |channel, data| {
                let options = PublishOptions::default();
                match &runtime {
                    Some(rt) if node.clustered() => {
                        rt.block_on(node.publish(channel, data, options)).map(|_| ())
                    }
                    _ => node.publish_in_hub(channel, data, options).map(|_| ()),
                }
            }),
        }
    }

    fn publish(&self, channel: &str, data: impl Into<Bytes>) -> Result<(), HubError> {
        (self.publish)(channel, data.into())
    }
}

fn publish(hub: &Sink, channel: &str, data: impl Into<Bytes>, key: &str) {
    if let Err(error) = hub.publish(channel, data) {
        tracing::warn!(source = %key, %channel, %error, "cannot publish a file event");
    }
}

// ----- one followed file ---------------------------------------------------

/// Which file a handle or a path refers to, to notice a replaced file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

#[cfg(unix)]
fn file_id(meta: &Metadata) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some(FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

#[cfg(not(unix))]
fn file_id(_meta: &Metadata) -> Option<FileId> {
    None
}

/// A file followed in tail mode. The handle stays open, so reading it
/// causes no further open/close events, and lines appended just before a
/// rename or removal can still be read from it.
struct Tailed {
    file: File,
    id: Option<FileId>,
    /// Bytes consumed so far (the handle's offset).
    pos: u64,
    lines: LineBuffer,
    /// `None` when the file's name gives no acceptable channel.
    channel: Option<String>,
    /// Publishing failed once already (warn once per file, not per line).
    failed: bool,
}

impl Tailed {
    /// Opens `path` at its start, or at its end (`at_end`, for files that
    /// exist at start-up: only new lines count).
    fn open(path: &Path, channel: Option<String>, at_end: bool) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut lines = LineBuffer::new(MAX_LINE);
        let mut pos = 0;
        if at_end && meta.len() > 0 {
            // Mid-line at start-up: the rest of that line is not a line.
            file.seek(SeekFrom::End(-1))?;
            let mut last = [0u8; 1];
            file.read_exact(&mut last)?;
            pos = meta.len();
            lines.discarding = last[0] != b'\n';
        }
        Ok(Self {
            file,
            id: file_id(&meta),
            pos,
            lines,
            channel,
            failed: false,
        })
    }

    /// Whether this is (still, or already) the file at `path`. Events are
    /// handled after the fact: when one says the file at `path` went away,
    /// the followed file may be its replacement, which stays.
    fn is_at(&self, path: &Path) -> bool {
        let now = fs::metadata(path).ok().and_then(|m| file_id(&m));
        now.is_some() && now == self.id
    }

    /// Reads everything appended since the last read and publishes each
    /// complete line. A file shorter than the position was truncated: it is
    /// read again from its start.
    fn read_new(&mut self, hub: &Sink, buf: &mut [u8], key: &str) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        if len < self.pos {
            tracing::info!(source = %key, "file truncated: reading it again from the start");
            self.file.seek(SeekFrom::Start(0))?;
            self.pos = 0;
            self.lines.clear();
        }
        loop {
            let n = match self.file.read(buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.pos += n as u64;
            let Self {
                lines,
                channel,
                failed,
                ..
            } = self;
            let dropped = lines.push(&buf[..n], |line| {
                if let Some(channel) = channel.as_deref() {
                    if let Some(data) = line_data(line) {
                        if !publish_line(hub, channel, data) && !*failed {
                            *failed = true;
                            tracing::warn!(source = %key, %channel, "cannot publish a line to this channel");
                        }
                    }
                }
            });
            if dropped > 0 {
                tracing::warn!(
                    source = %key,
                    lines = dropped,
                    max_bytes = MAX_LINE,
                    "dropped lines longer than the limit"
                );
            }
        }
    }

    /// The file is gone from its path: publish what was appended before,
    /// then let go of it. A last line without its newline is dropped.
    fn finish(mut self, path: &Path, hub: &Sink, buf: &mut [u8], key: &str) {
        if let Err(error) = self.read_new(hub, buf, key) {
            tracing::debug!(source = %key, path = %path.display(), %error, "cannot read a file gone away");
        }
        if !self.lines.partial.is_empty() {
            tracing::debug!(
                source = %key,
                path = %path.display(),
                bytes = self.lines.partial.len(),
                "file gone with an unterminated last line; dropped"
            );
        }
    }
}

fn publish_line(hub: &Sink, channel: &str, data: Bytes) -> bool {
    hub.publish(channel, data).is_ok()
}

/// What a line publishes: the line itself when it is JSON, else the line
/// as a JSON string (invalid UTF-8 replaced). `None` for a blank line.
fn line_data(line: &[u8]) -> Option<Bytes> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok() {
        return Some(Bytes::copy_from_slice(line));
    }
    Some(
        Value::String(String::from_utf8_lossy(line).into_owned())
            .to_string()
            .into(),
    )
}

/// Cuts a byte stream into `\n`-terminated lines, keeping an unterminated
/// tail until its newline arrives.
struct LineBuffer {
    partial: Vec<u8>,
    /// Skipping the rest of a line that is over the limit (or that started
    /// before we did).
    discarding: bool,
    max: usize,
}

impl LineBuffer {
    fn new(max: usize) -> Self {
        Self {
            partial: Vec::new(),
            discarding: false,
            max,
        }
    }

    fn clear(&mut self) {
        self.partial = Vec::new();
        self.discarding = false;
    }

    /// Feeds `chunk`; calls `emit` for each complete line (without its
    /// `\n`). Returns how many lines were dropped for being too long.
    fn push(&mut self, mut chunk: &[u8], mut emit: impl FnMut(&[u8])) -> usize {
        let mut dropped = 0;
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            let line = &chunk[..i];
            chunk = &chunk[i + 1..];
            if std::mem::take(&mut self.discarding) {
                continue;
            }
            if self.partial.len() + line.len() > self.max {
                self.partial = Vec::new();
                dropped += 1;
            } else if self.partial.is_empty() {
                emit(line);
            } else {
                self.partial.extend_from_slice(line);
                emit(&self.partial);
                self.partial.clear();
                if self.partial.capacity() > READ_CHUNK {
                    self.partial = Vec::new();
                }
            }
        }
        if !self.discarding && !chunk.is_empty() {
            if self.partial.len() + chunk.len() > self.max {
                self.partial = Vec::new();
                self.discarding = true;
                dropped += 1;
            } else {
                self.partial.extend_from_slice(chunk);
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(buf: &mut LineBuffer, chunk: &[u8]) -> (Vec<String>, usize) {
        let mut out = Vec::new();
        let dropped = buf.push(chunk, |l| out.push(String::from_utf8_lossy(l).into_owned()));
        (out, dropped)
    }

    #[test]
    fn lines_wait_for_their_newline() {
        let mut b = LineBuffer::new(100);
        assert_eq!(lines(&mut b, b"one\ntw"), (vec!["one".to_string()], 0));
        assert_eq!(lines(&mut b, b"o"), (vec![], 0));
        assert_eq!(
            lines(&mut b, b"\nthree\n"),
            (vec!["two".to_string(), "three".to_string()], 0)
        );
        assert!(b.partial.is_empty());
    }

    #[test]
    fn an_over_long_line_is_dropped_up_to_its_newline() {
        let mut b = LineBuffer::new(4);
        assert_eq!(lines(&mut b, b"abc"), (vec![], 0));
        assert_eq!(lines(&mut b, b"defgh"), (vec![], 1), "over the cap while partial");
        assert_eq!(lines(&mut b, b"ij\nok\n"), (vec!["ok".to_string()], 0));
        assert_eq!(lines(&mut b, b"toolong\nok2\n"), (vec!["ok2".to_string()], 1));
        assert_eq!(lines(&mut b, b"abc"), (vec![], 0));
        assert_eq!(lines(&mut b, b"de\n"), (vec![], 1), "partial + rest over the cap");
    }

    #[test]
    fn line_data_is_json_or_a_json_string() {
        assert_eq!(line_data(br#"{"a":1}"#).as_deref(), Some(&br#"{"a":1}"#[..]));
        assert_eq!(line_data(b"42\r").as_deref(), Some(&b"42"[..]));
        assert_eq!(
            line_data(b"hello \"x\"").as_deref(),
            Some(&br#""hello \"x\"""#[..])
        );
        assert_eq!(line_data(b"{broken").as_deref(), Some(&br#""{broken""#[..]));
        assert_eq!(line_data(b"\xff").as_deref(), Some("\"\u{fffd}\"".as_bytes()));
        assert_eq!(line_data(b"  \r"), None);
    }

    #[test]
    fn templates_parse_and_refuse_unknown_placeholders() {
        assert_eq!(
            parse_template("conversation:{stem}").unwrap(),
            vec![Part::Text("conversation:".into()), Part::Stem]
        );
        assert_eq!(
            parse_template("{name}-{stem}").unwrap(),
            vec![Part::Name, Part::Text("-".into()), Part::Stem]
        );
        assert!(parse_template("a:{size}")
            .unwrap_err()
            .contains("unknown placeholder {size}"));
        assert!(parse_template("a:{stem").unwrap_err().contains("unclosed"));
        assert!(parse_template("a:stem}").unwrap_err().contains("unmatched"));
    }

    #[test]
    fn a_file_name_cannot_move_its_channel_to_another_namespace() {
        let channels = ChannelConfig::default();
        let t = TailChannel {
            parts: parse_template("{stem}").unwrap(),
            namespace: None,
            channels: channels.clone(),
        };
        assert_eq!(t.render("logs/app.jsonl").unwrap(), "app");
        assert!(t.render("chat:room.jsonl").is_err());
        let t = TailChannel {
            parts: parse_template("conversation:{name}").unwrap(),
            namespace: Some("conversation".into()),
            channels,
        };
        assert_eq!(t.render("a/b.c.jsonl").unwrap(), "conversation:b.c.jsonl");
    }

    // ----- the worker, fed by hand (no OS watch) --------------------------

    use std::collections::VecDeque;

    use crier_core::{ChannelOptions as HubOptions, ClientReceiver, HubConfig, Outbound, SubscribeOptions};
    use notify::event::{AccessKind, AccessMode, DataChange, Flag};

    type Sender = mpsc::SyncSender<notify::Result<notify::Event>>;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!("crier-watch-unit-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    struct Harness {
        events: Option<Sender>,
        sub: ClientReceiver,
        seen: VecDeque<(String, String)>,
        worker: Option<std::thread::JoinHandle<()>>,
    }

    impl Harness {
        /// A worker over `root` (glob `**/*.jsonl`, events to `file_events`,
        /// tail to `conversation:{stem}`) that has recorded existing files,
        /// running on its thread, and a subscriber of `channels`.
        fn start(root: &Path, channels: &[&str]) -> Self {
            let opts = HubOptions::default();
            let hub = crier_core::Hub::new(HubConfig {
                channels: crier_core::ChannelConfig::new(opts.clone()).namespace("conversation", opts),
                ..HubConfig::default()
            });
            let (id, sub) = hub.connect("", None);
            for ch in channels {
                hub.subscribe(id, ch, SubscribeOptions::default()).unwrap();
            }
            let spec = Spec {
                key: "watch[0]".into(),
                root: root.to_owned(),
                scope: Scope::Tree(
                    GlobBuilder::new("**/*.jsonl")
                        .literal_separator(true)
                        .build()
                        .unwrap()
                        .compile_matcher(),
                ),
                events: Some("file_events".into()),
                tail: Some(TailChannel {
                    parts: parse_template("conversation:{stem}").unwrap(),
                    namespace: Some("conversation".into()),
                    channels: ChannelConfig::default(),
                }),
            };
            let (tx, rx) = mpsc::sync_channel(16);
            let mut worker = Worker::new(spec, Sink::hub(hub), rx);
            worker.follow_existing();
            let worker = std::thread::spawn(move || worker.run());
            Self {
                events: Some(tx),
                sub,
                seen: VecDeque::new(),
                worker: Some(worker),
            }
        }

        fn send(&self, event: notify::Event) {
            self.events.as_ref().unwrap().send(Ok(event)).unwrap();
        }

        /// The next publication as (channel, data); fails after 5 s.
        fn next(&mut self) -> (String, String) {
            while self.seen.is_empty() {
                let mut out = Vec::new();
                let n = self.sub.drain_blocking(&mut out, Duration::from_secs(5)).unwrap();
                assert!(n > 0, "nothing published within 5 s");
                for item in out {
                    if let Outbound::Event(ev) = item {
                        if let crier_core::EventKind::Publication(p) = &ev.kind {
                            let channel = ev.channel.as_deref().unwrap_or_default().to_owned();
                            self.seen
                                .push_back((channel, String::from_utf8_lossy(&p.data).into_owned()));
                        }
                    }
                }
            }
            self.seen.pop_front().unwrap()
        }
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.events = None; // closes the channel: the worker ends
            if let Some(worker) = self.worker.take() {
                worker.join().unwrap();
            }
        }
    }

    fn append(path: &Path, bytes: &[u8]) {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    fn kind(kind: EventKind, path: &Path) -> notify::Event {
        notify::Event::new(kind).add_path(path.to_owned())
    }

    #[test]
    fn a_queue_overflow_rescans_followed_new_and_vanished_files() {
        let dir = Dir::new("rescan");
        let (a, b, c) = (
            dir.0.join("a.jsonl"),
            dir.0.join("b.jsonl"),
            dir.0.join("c.jsonl"),
        );
        append(&a, b"old\n");
        append(&c, b"");
        let mut h = Harness::start(
            &dir.0,
            &[
                "file_events",
                "conversation:a",
                "conversation:b",
                "conversation:c",
            ],
        );
        // Changes whose events were lost in the overflow.
        append(&a, b"new\n");
        append(&b, b"b1\n");
        append(&c, b"c-last\n");
        fs::rename(&c, dir.0.join("c.old")).unwrap();
        h.send(notify::Event::new(EventKind::Other).set_flag(Flag::Rescan));
        assert_eq!(h.next(), ("file_events".into(), r#"{"event":"rescan"}"#.into()));
        let mut got = vec![h.next(), h.next(), h.next()];
        got.sort();
        assert_eq!(
            got,
            vec![
                ("conversation:a".into(), "\"new\"".into()),
                ("conversation:b".into(), "\"b1\"".into()),
                ("conversation:c".into(), "\"c-last\"".into()),
            ],
            "followed files catch up, new ones are read from the start, vanished ones are drained"
        );
    }

    #[test]
    fn open_and_close_events_are_not_changes() {
        let dir = Dir::new("access");
        let a = dir.0.join("a.jsonl");
        append(&a, b"");
        let mut h = Harness::start(&dir.0, &["file_events", "conversation:a"]);
        append(&a, b"x\n");
        h.send(kind(EventKind::Access(AccessKind::Open(AccessMode::Any)), &a));
        h.send(kind(EventKind::Access(AccessKind::Close(AccessMode::Read)), &a));
        h.send(kind(EventKind::Modify(ModifyKind::Data(DataChange::Any)), &a));
        let (channel, data) = h.next();
        assert_eq!(channel, "file_events");
        assert!(data.starts_with(r#"{"event":"modified","#), "{data}");
        assert_eq!(h.next(), ("conversation:a".into(), "\"x\"".into()));
        h.send(kind(EventKind::Access(AccessKind::Close(AccessMode::Read)), &a));
        h.send(kind(EventKind::Remove(RemoveKind::File), &a));
        let (_, data) = h.next();
        assert!(
            data.starts_with(r#"{"event":"removed","path":"a.jsonl""#),
            "{data}"
        );
    }

    #[test]
    fn an_unpaired_rename_half_is_a_move_out_or_in() {
        let dir = Dir::new("unpaired");
        let a = dir.0.join("a.jsonl");
        append(&a, b"");
        let mut h = Harness::start(&dir.0, &["file_events"]);
        // "from" alone: after the pairing wait, the file left the tree.
        h.send(kind(EventKind::Modify(ModifyKind::Name(RenameMode::From)), &a).set_tracker(7));
        let (_, data) = h.next();
        assert!(
            data.starts_with(r#"{"event":"removed","path":"a.jsonl""#),
            "{data}"
        );
        // "to" alone: a file moved in from outside is new.
        h.send(kind(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &a).set_tracker(8));
        let (_, data) = h.next();
        assert!(
            data.starts_with(r#"{"event":"created","path":"a.jsonl""#),
            "{data}"
        );
    }
}
