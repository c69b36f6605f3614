//! `/auth`: registration, sign-in and the current user.

use folio_domain::services::Bookstore;
use poem::web::Data;
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::models::{LoginRequest, RegisterRequest, TokenResponse, UserResponse};
use super::{ApiTags, BearerAuth, JsonBody};
use crate::limits::AuthLimiter;
use crate::problem::Answer;

/// Accounts and tokens.
pub struct AccountsApi;

#[derive(ApiResponse)]
enum Registered {
    /// The account exists and the caller is signed in.
    #[oai(status = 201)]
    Created(Json<TokenResponse>),
}

crate::statuses! {
    /// `register`
    Register = [400, 409, 413, 415, 422, 429];
    /// `login`
    Login = [400, 401, 413, 415, 429];
    /// `me`
    Me = [401];
}

#[OpenApi(prefix_path = "/auth", tag = "ApiTags::Auth")]
impl AccountsApi {
    /// Register a reader
    ///
    /// Creates an account with the USER role and returns a bearer token for it. 409 when
    /// the e-mail is taken, 422 when a field breaks a rule, 429 past the rate limits
    /// (per e-mail and per client address, shared with sign-in).
    #[oai(path = "/register", method = "post", operation_id = "register")]
    async fn register(
        &self,
        store: Data<&Bookstore>,
        limiter: Data<&AuthLimiter>,
        req: &Request,
        body: JsonBody<RegisterRequest>,
    ) -> Answer<Registered, Register> {
        limiter.check(&body.email, client_ip(req))?;
        let token = store
            .register(&body.email, &body.password, &body.display_name)
            .await?;
        Ok(Registered::Created(Json(token.into())))
    }

    /// Sign in
    ///
    /// Returns a bearer token. A wrong e-mail and a wrong password get the same 401, in
    /// the same time. 429 past the rate limits (per e-mail and per client address).
    #[oai(path = "/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        store: Data<&Bookstore>,
        limiter: Data<&AuthLimiter>,
        req: &Request,
        body: JsonBody<LoginRequest>,
    ) -> Answer<Json<TokenResponse>, Login> {
        limiter.check(&body.email, client_ip(req))?;
        let token = store.login(&body.email, &body.password).await?;
        Ok(Json(token.into()))
    }

    /// The current user
    #[oai(path = "/me", method = "get", operation_id = "me")]
    async fn me(
        &self,
        store: Data<&Bookstore>,
        auth: BearerAuth,
    ) -> Answer<Json<UserResponse>, Me> {
        Ok(Json(store.me(auth.0).await?.into()))
    }
}

/// The address of the peer that connected: the per-client limit counts it. Behind a reverse
/// proxy this is the proxy; forwarded headers are not trusted, since any client can send
/// them.
fn client_ip(req: &Request) -> Option<std::net::IpAddr> {
    req.remote_addr().as_socket_addr().map(|a| a.ip())
}
