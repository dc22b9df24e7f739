//! The store's API token Secret: generated once (never applied again, so the token is never
//! rotated by accident), or the user's own one, checked.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;

use super::namespace;
use crate::build::{generate_token, token_secret};
use crate::crd::TradeStore;
use crate::names::token_secret_name;
use crate::reconcile::error::{Dependency, MIN_TOKEN_LEN};
use crate::reconcile::{Context, Error, Result};
use crate::validate::Validated;
use tradestore_api::wire::mount::TOKEN_FILE;

fn token_of(secret: &Secret) -> Option<String> {
    let raw = secret.data.as_ref()?.get(TOKEN_FILE)?;
    Some(String::from_utf8_lossy(&raw.0).trim().to_string())
}

/// The store's API token from its Secret, without creating anything.
pub(crate) async fn read(ts: &TradeStore, ctx: &Context) -> Result<Option<String>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace(ts));
    Ok(secrets.get_opt(&token_secret_name(ts)).await?.as_ref().and_then(token_of))
}

/// Creates the generated token Secret once; checks a user-provided one. Returns the token (the
/// operator needs it to read `/v1/status` when reads are protected, and for snapshots).
pub(crate) async fn ensure(store: &Validated<'_>, ctx: &Context) -> Result<Option<String>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace(store));
    let name = token_secret_name(store);
    if store.spec.auth.token_secret_name.is_some() {
        return check_user_secret(store, ctx, &secrets, name).await.map(Some);
    }
    if let Some(existing) = secrets.get_opt(&name).await? {
        return Ok(token_of(&existing));
    }
    create(store, ctx, &secrets, name).await
}

async fn check_user_secret(ts: &TradeStore, ctx: &Context, secrets: &Api<Secret>, name: String) -> Result<String> {
    let Some(secret) = secrets.get_opt(&name).await? else {
        return Err(refuse(ts, ctx, "TokenSecretMissing", Dependency::TokenSecretMissing(name)).await);
    };
    let token = token_of(&secret).unwrap_or_default();
    if token.len() < MIN_TOKEN_LEN {
        return Err(refuse(ts, ctx, "TokenSecretInvalid", Dependency::TokenSecretInvalid(name)).await);
    }
    Ok(token)
}

/// A Warning event naming the missing dependency, and the error.
async fn refuse(ts: &TradeStore, ctx: &Context, reason: &str, missing: Dependency) -> Error {
    ctx.events.publish(ts, EventType::Warning, reason, "Reconcile", missing.to_string()).await;
    missing.into()
}

async fn create(ts: &TradeStore, ctx: &Context, secrets: &Api<Secret>, name: String) -> Result<Option<String>> {
    let token = generate_token();
    let pp = PostParams { field_manager: Some(ctx.settings.field_manager.clone()), ..PostParams::default() };
    match secrets.create(&pp, &token_secret(ts, &token)).await {
        Ok(_) => {
            let note = format!("generated API token Secret {name}");
            ctx.events.publish(ts, EventType::Normal, "TokenCreated", "Create", note).await;
            Ok(Some(token))
        }
        // Someone else created it meanwhile: theirs wins, read it next time.
        Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(None),
        Err(e) => Err(e.into()),
    }
}
