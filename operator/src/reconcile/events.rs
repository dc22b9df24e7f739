//! Events on a TradeStore, published with kube's `Recorder` (events.k8s.io/v1).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tracing::warn;

use crate::crd::TradeStore;

/// Longest note an event may carry (the API allows 1 kB).
const NOTE_LIMIT: usize = 1000;

/// Publishes events as the controller `tradestore-operator`, instance `$POD_NAME`.
pub(crate) struct Events {
    recorder: Recorder,
}

impl Events {
    pub(crate) fn new(client: Client) -> Self {
        let reporter = Reporter { controller: "tradestore-operator".into(), instance: std::env::var("POD_NAME").ok() };
        Events { recorder: Recorder::new(client, reporter) }
    }

    /// An event on a store. A failure to publish is logged, never an error of the reconciliation.
    pub(crate) async fn publish(&self, ts: &TradeStore, type_: EventType, reason: &str, action: &str, note: String) {
        self.publish_on(&ts.object_ref(&()), type_, reason, action, note).await;
    }

    /// An event on any object (e.g. a TradeStore that does not deserialize, known only by its
    /// metadata).
    pub(crate) async fn publish_on(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(&note, NOTE_LIMIT)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, reference).await {
            warn!(error = %e, reason, "could not publish event");
        }
    }
}

/// `s` cut to at most `n` bytes (on a character boundary), with `…` when cut.
pub(crate) fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
