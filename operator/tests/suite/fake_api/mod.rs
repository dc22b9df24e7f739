//! A small in-memory Kubernetes API behind kube's tower-test mock service: enough of GET, POST,
//! PATCH (apply, merge, status), DELETE (with finalizers, preconditions and optionally graceful
//! pods) for the reconcile tests to drive the real `kube::Client` against.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

/// One request as seen by the fake.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub content_type: String,
    pub body: Value,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    calls: Vec<Call>,
    next_uid: u64,
    next_rv: u64,
    graceful_pods: bool,
}

/// Handle to the fake API's state.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

fn status(code: u16, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        StatusCode::from_u16(code).unwrap(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = json!({});
        }
        let t = target.as_object_mut().unwrap();
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

impl FakeApi {
    /// A client talking to a new fake.
    pub fn new() -> (FakeApi, Client) {
        let fake = FakeApi::default();
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let f = fake.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let (code, value) = f.handle(&parts, &bytes);
                let resp = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&value).unwrap()))
                    .unwrap();
                send.send_response(resp);
            }
        });
        (fake, Client::new(svc, "default"))
    }

    /// Pods get a deletionTimestamp on DELETE instead of vanishing (as with a real kubelet).
    pub fn graceful_pods(&self, on: bool) {
        self.state.lock().unwrap().graceful_pods = on;
    }

    /// Every request so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Forgets the request log.
    pub fn clear_calls(&self) {
        self.state.lock().unwrap().calls.clear();
    }

    /// Mutating requests (anything but GET), minus events.
    pub fn writes(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.method != Method::GET && !c.path.contains("/events"))
            .map(|c| format!("{} {}", c.method, c.path))
            .collect()
    }

    /// Reasons of the events published so far.
    pub fn events(&self) -> Vec<(String, String)> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == Method::POST && c.path.contains("/events"))
            .map(|c| {
                (c.body["type"].as_str().unwrap_or("").to_string(), c.body["reason"].as_str().unwrap_or("").to_string())
            })
            .collect()
    }

    /// Notes of the events with this reason created so far (a new event each, not a count
    /// bumped on an older one).
    pub fn event_notes(&self, reason: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == Method::POST && c.path.contains("/events") && c.body["reason"] == reason)
            .map(|c| c.body["note"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// How many times an event was folded into an earlier one (a PATCH of its series count).
    pub fn folded_events(&self) -> usize {
        self.calls().into_iter().filter(|c| c.method == Method::PATCH && c.path.contains("/events/")).count()
    }

    /// An object by API path (e.g. `/api/v1/namespaces/ns/pods/name`).
    pub fn get(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Stores an object as is (filling uid and resourceVersion when missing).
    pub fn put(&self, path: &str, mut obj: Value) {
        let mut st = self.state.lock().unwrap();
        st.next_rv += 1;
        let rv = st.next_rv.to_string();
        if obj["metadata"]["uid"].is_null() {
            st.next_uid += 1;
            obj["metadata"]["uid"] = json!(format!("uid-{}", st.next_uid));
        }
        obj["metadata"]["resourceVersion"] = json!(rv);
        st.objects.insert(path.to_string(), obj);
    }

    /// Edits a stored object in place.
    pub fn edit(&self, path: &str, f: impl FnOnce(&mut Value)) {
        let mut obj = self.get(path).unwrap_or_else(|| panic!("no object at {path}"));
        f(&mut obj);
        self.put(path, obj);
    }

    /// Removes an object (e.g. a terminating pod that finished stopping).
    pub fn remove(&self, path: &str) {
        self.state.lock().unwrap().objects.remove(path);
    }

    fn handle(&self, parts: &http::request::Parts, body: &[u8]) -> (StatusCode, Value) {
        let path = parts.uri.path().to_string();
        let content_type = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let body: Value =
            if body.is_empty() { Value::Null } else { serde_json::from_slice(body).unwrap_or(Value::Null) };
        let mut st = self.state.lock().unwrap();
        st.calls.push(Call {
            method: parts.method.clone(),
            path: path.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
        });
        let (key, sub_status) = match path.strip_suffix("/status") {
            Some(k) => (k.to_string(), true),
            None => (path.clone(), false),
        };
        st.next_rv += 1;
        let rv = st.next_rv.to_string();
        match parts.method {
            Method::GET => match st.objects.get(&key) {
                Some(o) => (StatusCode::OK, o.clone()),
                None => status(404, "NotFound", &format!("{key} not found")),
            },
            Method::POST => {
                let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
                let key = format!("{path}/{name}");
                if path.ends_with("/events") {
                    let mut o = body.clone();
                    o["metadata"]["resourceVersion"] = json!(rv);
                    return (StatusCode::CREATED, o);
                }
                if st.objects.contains_key(&key) {
                    return status(409, "AlreadyExists", &format!("{key} already exists"));
                }
                st.next_uid += 1;
                let mut o = body.clone();
                o["metadata"]["uid"] = json!(format!("uid-{}", st.next_uid));
                o["metadata"]["resourceVersion"] = json!(rv);
                o["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                if let Some(sd) = o.as_object_mut().unwrap().remove("stringData") {
                    let mut data = serde_json::Map::new();
                    for (k, v) in sd.as_object().unwrap() {
                        let b = k8s_openapi::ByteString(v.as_str().unwrap().as_bytes().to_vec());
                        data.insert(k.clone(), serde_json::to_value(b).unwrap());
                    }
                    o["data"] = Value::Object(data);
                }
                st.objects.insert(key, o.clone());
                (StatusCode::CREATED, o)
            }
            Method::PATCH => {
                if path.contains("/events/") {
                    return (StatusCode::OK, body);
                }
                let apply = content_type.starts_with("application/apply-patch");
                let existing = st.objects.get(&key).cloned();
                let mut o = match existing {
                    Some(o) => o,
                    None if apply && !sub_status => {
                        st.next_uid += 1;
                        json!({"metadata": {"uid": format!("uid-{}", st.next_uid), "creationTimestamp": "2026-01-01T00:00:00Z"}})
                    }
                    None => return status(404, "NotFound", &format!("{key} not found")),
                };
                if let Some(want) = body["metadata"]["resourceVersion"].as_str()
                    && o["metadata"]["resourceVersion"].as_str() != Some(want)
                {
                    return status(409, "Conflict", "the object has been modified");
                }
                let mut patch = body.clone();
                if let Some(m) = patch.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                    m.remove("resourceVersion");
                }
                if sub_status {
                    let mut s = o.get("status").cloned().unwrap_or(json!({}));
                    merge(&mut s, &patch["status"]);
                    o["status"] = s;
                } else {
                    if !apply {
                        // status is a subresource: ignored on the main resource
                        if let Some(p) = patch.as_object_mut() {
                            p.remove("status");
                        }
                    }
                    merge(&mut o, &patch);
                }
                o["metadata"]["resourceVersion"] = json!(rv);
                // An object being deleted goes once its last finalizer is gone.
                let finalizers_left = o["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
                if !o["metadata"]["deletionTimestamp"].is_null() && !finalizers_left {
                    st.objects.remove(&key);
                } else {
                    st.objects.insert(key, o.clone());
                }
                (StatusCode::OK, o)
            }
            Method::DELETE => {
                let Some(mut o) = st.objects.get(&key).cloned() else {
                    return status(404, "NotFound", &format!("{key} not found"));
                };
                if let Some(uid) = body["preconditions"]["uid"].as_str()
                    && o["metadata"]["uid"].as_str() != Some(uid)
                {
                    return status(409, "Conflict", "precondition failed: uid");
                }
                let finalizers = o["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
                let graceful = st.graceful_pods && key.contains("/pods/");
                if finalizers || graceful {
                    o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                    o["metadata"]["resourceVersion"] = json!(rv);
                    st.objects.insert(key, o.clone());
                } else {
                    st.objects.remove(&key);
                }
                (StatusCode::OK, o)
            }
            _ => status(405, "MethodNotAllowed", "unsupported"),
        }
    }
}
