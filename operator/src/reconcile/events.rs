//! Events on a TradeStore, published with kube's `Recorder` (events.k8s.io/v1).
//!
//! A `Recorder` folds an event with the same type, reason and action as an earlier one (within
//! 6 minutes) into that one: it only bumps the series count and keeps the first note, so a second
//! `BackupTaken` would still name the first snapshot. So a note that differs from the last one of
//! the same object and reason is published by a fresh `Recorder` (a new event, as kube's docs
//! allow: "intended to be created at the start of your controller's reconcile fn"); a repeat of
//! the same note reuses the recorder and is folded into a count, as intended.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tracing::warn;

use crate::crd::TradeStore;

/// Longest note an event may carry (the API allows 1 kB).
const NOTE_LIMIT: usize = 1000;

/// Publishes events as the controller `tradestore-operator`, instance `$POD_NAME`.
pub(crate) struct Events {
    client: Client,
    reporter: Reporter,
    /// Per (object uid, reason): the last note and the recorder that published it.
    last: Mutex<HashMap<(String, String), (String, Recorder)>>,
}

impl Events {
    pub(crate) fn new(client: Client) -> Self {
        let reporter = Reporter { controller: "tradestore-operator".into(), instance: std::env::var("POD_NAME").ok() };
        Events { client, reporter, last: Mutex::new(HashMap::new()) }
    }

    /// The recorder for this note: the last one when the note repeats (folded into a count), a
    /// fresh one when it says something new.
    fn recorder_for(&self, reference: &ObjectReference, reason: &str, note: &str) -> Recorder {
        let object = reference.uid.clone().or_else(|| reference.name.clone()).unwrap_or_default();
        let mut last = self.last.lock().expect("events lock");
        let entry = last.entry((object, reason.to_string()));
        let (last_note, recorder) =
            entry.or_insert_with(|| (String::new(), Recorder::new(self.client.clone(), self.reporter.clone())));
        if last_note != note {
            *last_note = note.to_string();
            *recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        }
        recorder.clone()
    }

    /// Forgets a store that is gone (its events need no folding any more).
    pub(crate) fn forget(&self, ts: &TradeStore) {
        let uid = ts.metadata.uid.clone().unwrap_or_default();
        self.last.lock().expect("events lock").retain(|(object, _), _| *object != uid);
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
        let note = truncate(&note, NOTE_LIMIT);
        let recorder = self.recorder_for(reference, reason, &note);
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(e) = recorder.publish(&ev, reference).await {
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
