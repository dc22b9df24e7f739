//! The one error type of a reconciliation. Every variant requeues with backoff; the metric label
//! of each is one of a fixed set, so `reconcile_errors_total` cannot grow without bound.

use crate::sidecar::client::SidecarError;
use tradestore_api::wire::mount::TOKEN_FILE;

/// Errors of one reconciliation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The pod's name is taken by a pod this store does not own.
    #[error("conflict: pod {0} exists and is not owned by this TradeStore; not touching it")]
    ForeignPod(String),
    /// A volume claim of the store is controlled by another object.
    #[error("conflict: volume claim {0} is controlled by another object")]
    ForeignVolume(String),
    /// A referenced object is missing or wrong.
    #[error("missing dependency: {0}")]
    Dependency(#[from] Dependency),
    /// A sidecar API call failed (unreachable, timed out, or answered with an error).
    #[error("sidecar: {0}")]
    Sidecar(#[from] SidecarError),
}

/// An object the store refers to that is missing or unusable.
#[derive(Debug, thiserror::Error)]
pub enum Dependency {
    /// `spec.auth.tokenSecretName` names a Secret that does not exist.
    #[error("token Secret {0} does not exist")]
    TokenSecretMissing(String),
    /// That Secret has no usable token.
    #[error("token Secret {0} needs a key {TOKEN_FILE:?} of at least {MIN_TOKEN_LEN} characters")]
    TokenSecretInvalid(String),
}

/// A user-provided token shorter than this is refused (the generated ones have 48 characters).
pub(crate) const MIN_TOKEN_LEN: usize = 16;

/// Result of a reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Label of an object that does not even deserialize (no [`Error`]: it is not retried).
pub(crate) const INVALID_OBJECT: &str = "InvalidObject";

/// Kubernetes API reasons reported as themselves; any other becomes `ApiError`.
const API_REASONS: [&str; 14] = [
    "Conflict",
    "NotFound",
    "AlreadyExists",
    "Forbidden",
    "Unauthorized",
    "Invalid",
    "BadRequest",
    "Gone",
    "Timeout",
    "ServerTimeout",
    "TooManyRequests",
    "InternalError",
    "ServiceUnavailable",
    "MethodNotAllowed",
];

impl Error {
    /// Every label [`Error::metric_label`] can return, and `InvalidObject` (counted by the
    /// driver for objects that do not deserialize), so each series exists, at 0, from the start.
    pub fn metric_labels() -> impl Iterator<Item = &'static str> {
        API_REASONS.into_iter().chain(["ApiError", "ClientError", "Dependency", "Sidecar", INVALID_OBJECT])
    }

    /// Short, bounded label for the errors metric: the Kubernetes API reason when it is a known
    /// one, else the kind of failure.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) => {
                API_REASONS.iter().copied().find(|r| *r == s.reason).unwrap_or("ApiError")
            }
            Error::Kube(_) => "ClientError",
            Error::ForeignPod(_) | Error::ForeignVolume(_) => "Conflict",
            Error::Dependency(_) => "Dependency",
            Error::Sidecar(_) => "Sidecar",
        }
    }

    /// Optimistic-concurrency conflicts are routine (retried at once): no event for them.
    pub(crate) fn is_routine(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.is_conflict())
    }
}
