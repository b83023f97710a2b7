//! Who may call a route: the bearer token's role, checked before any body is read.

use crate::auth::{bearer, Identity, Role, Tokens};
use crate::http::ApiError;
use crate::Error;
use std::sync::Arc;
use warp::{Filter, Rejection};

/// The caller's identity, if its token has at least `needed`: `401` without a token or with
/// an unknown or revoked one, `403` with too small a role.
pub fn identity(
    tokens: Arc<Tokens>,
    needed: Role,
) -> impl Filter<Extract = (Identity,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization").and_then(move |header: Option<String>| {
        let tokens = tokens.clone();
        async move { check(&tokens, header.as_deref(), needed).map_err(reject) }
    })
}

/// [`identity`] for routes that only need the check.
pub fn require(
    tokens: Arc<Tokens>,
    needed: Role,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    identity(tokens, needed).map(|_| ()).untuple_one()
}

/// The inference routes: open, or (with `required`) any valid token.
pub fn inference(
    tokens: Arc<Tokens>,
    required: bool,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let tokens = tokens.clone();
            async move {
                if required {
                    check(&tokens, header.as_deref(), Role::Viewer).map_err(reject)?;
                }
                Ok::<_, Rejection>(())
            }
        })
        .untuple_one()
}

fn check(tokens: &Tokens, header: Option<&str>, needed: Role) -> Result<Identity, Error> {
    let token = header.and_then(bearer).ok_or_else(|| {
        Error::Unauthorized(
            "this route needs a token: send `Authorization: Bearer <token>` \
             (`so1s token create`, or the admin token in <data-dir>/admin.token)"
                .into(),
        )
    })?;
    let identity = tokens
        .authenticate(&token)?
        .ok_or_else(|| Error::Unauthorized("the token is unknown or revoked".into()))?;
    identity.require(needed)?;
    Ok(identity)
}

fn reject(error: Error) -> Rejection {
    warp::reject::custom(ApiError::from(error))
}
