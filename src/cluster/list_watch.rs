//! A list-then-watch loop that says when the apiserver answered. kube-runtime's `watcher` emits
//! only object events, so a watch that resumes after an outage and sees no change is silent; this
//! loop also reports every list or watch request that succeeded ([`Signal::Connected`]) and every
//! one that failed ([`Signal::Failed`]), which is what a "connected" gauge must follow.
//!
//! The object events are kube-runtime's [`watcher::Event`], so a reflector's `Writer` can apply
//! them as they come (`Init`, `InitApply`…, `InitDone` after each full list).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// How long the apiserver keeps one watch open (kube-runtime's default, below the usual 5-minute
/// proxy and load-balancer idle limits).
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(290);
/// A watch that sends nothing (not even a bookmark) for this long is taken for a dead connection.
const IDLE_LIMIT: Duration = Duration::from_secs(WATCH_TIMEOUT.as_secs() + 30);
/// Objects per list page.
const PAGE_SIZE: u32 = 500;
/// The first wait after a failed request; it doubles up to [`MAX_BACKOFF`] and resets on success.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the loop reports.
#[derive(Debug)]
pub enum Signal<K> {
    /// A list or watch request succeeded: the apiserver answers, whether or not anything changed.
    Connected,
    /// A list or watch request failed (or a watch broke off); it is retried after a backoff.
    Failed(kube::Error),
    /// An object event, as kube-runtime's watcher gives it.
    Event(watcher::Event<K>),
}

enum Phase<K> {
    /// List everything (again) from the first page.
    List,
    /// Start a watch from this resourceVersion.
    Watch(String),
    /// Read the events of an open watch (opened at that instant).
    Watching(String, Instant, BoxStream<'static, kube::Result<WatchEvent<K>>>),
}

struct Loop<K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static> {
    api: Api<K>,
    field_selector: Option<String>,
    phase: Phase<K>,
    pending: VecDeque<Signal<K>>,
    wait: Option<Duration>,
    backoff: Duration,
}

/// Lists the objects of `api` (only those matching `field_selector`, e.g. `metadata.name=x`),
/// then watches from the list's resourceVersion, re-watching when a watch ends and re-listing when
/// the version has expired (410 Gone). Never ends.
pub fn list_watch<K>(api: Api<K>, field_selector: Option<String>) -> impl Stream<Item = Signal<K>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let state = Loop { api, field_selector, phase: Phase::List, pending: VecDeque::new(), wait: None, backoff: FIRST_BACKOFF };
    futures_util::stream::unfold(state, |mut state| async move {
        let signal = state.next().await;
        Some((signal, state))
    })
}

impl<K> Loop<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    async fn next(&mut self) -> Signal<K> {
        loop {
            if let Some(signal) = self.pending.pop_front() {
                return signal;
            }
            if let Some(wait) = self.wait.take() {
                tokio::time::sleep(wait).await;
            }
            let phase = std::mem::replace(&mut self.phase, Phase::List);
            self.phase = match phase {
                Phase::List => self.list().await,
                Phase::Watch(version) => self.watch(version).await,
                Phase::Watching(version, opened, stream) => self.read(version, opened, stream).await,
            };
        }
    }

    fn succeeded(&mut self) {
        self.backoff = FIRST_BACKOFF;
        self.pending.push_back(Signal::Connected);
    }

    fn failed(&mut self, error: kube::Error) {
        self.wait = Some(self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.pending.push_back(Signal::Failed(error));
    }

    /// Every page, then `Init`, `InitApply` per object and `InitDone`. A failure on any page
    /// starts over from the first.
    async fn list(&mut self) -> Phase<K> {
        let mut params = ListParams::default().limit(PAGE_SIZE);
        params.field_selector.clone_from(&self.field_selector);
        let mut objects = Vec::new();
        let version = loop {
            match self.api.list(&params).await {
                Ok(page) => {
                    objects.extend(page.items);
                    match page.metadata.continue_.filter(|c| !c.is_empty()) {
                        Some(token) => params.continue_token = Some(token),
                        None => break page.metadata.resource_version.unwrap_or_default(),
                    }
                }
                Err(e) => {
                    self.failed(e);
                    return Phase::List;
                }
            }
        };
        self.succeeded();
        self.pending.push_back(Signal::Event(watcher::Event::Init));
        self.pending.extend(objects.into_iter().map(|o| Signal::Event(watcher::Event::InitApply(o))));
        self.pending.push_back(Signal::Event(watcher::Event::InitDone));
        if version.is_empty() {
            // Without a version there is nothing to watch from; list again after a pause.
            self.wait = Some(self.backoff);
            return Phase::List;
        }
        Phase::Watch(version)
    }

    async fn watch(&mut self, version: String) -> Phase<K> {
        let mut params = WatchParams::default().timeout(u32::try_from(WATCH_TIMEOUT.as_secs()).unwrap_or(290));
        params.field_selector.clone_from(&self.field_selector);
        match self.api.watch(&params, &version).await {
            Ok(stream) => {
                self.succeeded();
                Phase::Watching(version, Instant::now(), stream.boxed())
            }
            Err(kube::Error::Api(status)) if status.code == 410 => Phase::List,
            Err(e) => {
                self.failed(e);
                Phase::Watch(version)
            }
        }
    }

    async fn read(&mut self, version: String, opened: Instant, mut stream: BoxStream<'static, kube::Result<WatchEvent<K>>>) -> Phase<K> {
        let event = match tokio::time::timeout(IDLE_LIMIT, stream.next()).await {
            Ok(event) => event,
            Err(_) => {
                let message = format!("the watch sent nothing for {} s; reconnecting", IDLE_LIMIT.as_secs());
                self.failed(kube::Error::Service(message.into()));
                return Phase::Watch(version);
            }
        };
        match event {
            Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                let version = o.resource_version().filter(|v| !v.is_empty()).unwrap_or(version);
                self.pending.push_back(Signal::Event(watcher::Event::Apply(o)));
                Phase::Watching(version, opened, stream)
            }
            Some(Ok(WatchEvent::Deleted(o))) => {
                let version = o.resource_version().filter(|v| !v.is_empty()).unwrap_or(version);
                self.pending.push_back(Signal::Event(watcher::Event::Delete(o)));
                Phase::Watching(version, opened, stream)
            }
            Some(Ok(WatchEvent::Bookmark(b))) => Phase::Watching(b.metadata.resource_version, opened, stream),
            // The version is too old to resume from: list again (at once, this is no outage).
            Some(Ok(WatchEvent::Error(status))) if status.code == 410 => Phase::List,
            Some(Ok(WatchEvent::Error(status))) => {
                self.failed(kube::Error::Api(status));
                Phase::Watch(version)
            }
            Some(Err(e)) => {
                self.failed(e);
                Phase::Watch(version)
            }
            // The apiserver closed the watch (its timeout): resume where it ended. Something that
            // closes every watch at once (a proxy) is not hammered: a short pause first.
            None => {
                if opened.elapsed() < Duration::from_secs(1) {
                    self.wait = Some(FIRST_BACKOFF);
                }
                Phase::Watch(version)
            }
        }
    }
}
