use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn register_login_and_me() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/auth/register",
            &json!({"email": " Ann@Folio.TEST ", "password": PASSWORD, "display_name": "Ann"}),
        )
        .await;
    let reg = r.expect(201);
    assert_eq!(reg["token_type"], "Bearer");
    assert_eq!(reg["role"], "USER");
    assert_eq!(reg["expires_at"], "2025-03-01T22:00:00Z");
    let user_id = reg["user_id"].as_i64().expect("id");

    let r = app
        .post(
            "/api/v1/auth/login",
            &json!({"email": "ann@folio.test", "password": PASSWORD}),
        )
        .await;
    let login = r.expect(200);
    assert_eq!(login["user_id"], user_id);
    let token = login["token"].as_str().expect("token");

    let me = app.get_as(token, "/api/v1/auth/me").await.expect(200);
    assert_eq!(
        me,
        json!({"id": user_id, "email": "ann@folio.test", "display_name": "Ann", "role": "USER",
               "created_at": "2025-03-01T10:00:00Z"})
    );
    let admin = app.get_as(&app.admin, "/api/v1/auth/me").await.expect(200);
    assert_eq!(admin["role"], "ADMIN");
}

#[tokio::test]
async fn duplicate_and_invalid_registrations_are_refused() {
    let app = spawn_app().await;
    app.reader("ann").await;
    let r = app
        .post(
            "/api/v1/auth/register",
            &json!({"email": "ANN@folio.test", "password": PASSWORD, "display_name": "Ann 2"}),
        )
        .await;
    let p = r.problem(409, "");
    assert_eq!(p["type"], "urn:folio:problem:duplicate");
    assert_eq!(p["instance"], "/api/v1/auth/register");

    for (body, says) in [
        (
            json!({"email": "not-an-email", "password": PASSWORD, "display_name": "X"}),
            "email",
        ),
        (
            json!({"email": "x@folio.test", "password": "short", "display_name": "X"}),
            "password",
        ),
        (
            json!({"email": "x@folio.test", "password": PASSWORD, "display_name": "  "}),
            "display_name",
        ),
    ] {
        let p = app
            .post("/api/v1/auth/register", &body)
            .await
            .problem(422, says);
        assert_eq!(p["type"], "urn:folio:problem:invalid");
    }
    // Nothing was stored: the e-mail is still free.
    let r = app
        .post(
            "/api/v1/auth/register",
            &json!({"email": "x@folio.test", "password": PASSWORD, "display_name": "X"}),
        )
        .await;
    r.expect(201);
}

#[tokio::test]
async fn malformed_bodies_are_400_problems_that_name_the_problem() {
    let app = spawn_app().await;
    let r = send(
        app.cli
            .post("/api/v1/auth/register")
            .content_type("application/json")
            .body("{\"email\": "),
    )
    .await;
    r.problem(400, "EOF");

    let r = app
        .post(
            "/api/v1/auth/register",
            &json!({"email": "x@folio.test", "password": PASSWORD}),
        )
        .await;
    r.problem(400, "field `display_name` is required");

    let r = app
        .post(
            "/api/v1/auth/register",
            &json!({"email": ["x@folio.test"], "password": PASSWORD, "display_name": "X"}),
        )
        .await;
    r.problem(400, "field `email` must be a string");

    let r = send(
        app.cli
            .post("/api/v1/auth/login")
            .content_type("text/plain")
            .body("hi"),
    )
    .await;
    r.problem(415, "text/plain");
    let huge =
        json!({"email": "x@folio.test", "password": PASSWORD, "display_name": "x".repeat(300_000)});
    app.post("/api/v1/auth/register", &huge)
        .await
        .problem(413, "larger than");
    let r = send(app.cli.post("/api/v1/auth/login").body("{}")).await;
    r.problem(415, "Content-Type");
}

#[tokio::test]
async fn bad_credentials_and_tokens_are_401() {
    let app = spawn_app().await;
    let (token, _) = app.reader("ann").await;
    let wrong_pw = app
        .post(
            "/api/v1/auth/login",
            &json!({"email": "ann@folio.test", "password": "wrong password"}),
        )
        .await
        .problem(401, "wrong");
    let unknown = app
        .post(
            "/api/v1/auth/login",
            &json!({"email": "nobody@folio.test", "password": PASSWORD}),
        )
        .await
        .problem(401, "wrong");
    assert_eq!(
        wrong_pw["detail"], unknown["detail"],
        "no hint which part was wrong"
    );

    app.get("/api/v1/auth/me")
        .await
        .problem(401, "bearer token");
    app.get_as("garbage", "/api/v1/auth/me")
        .await
        .problem(401, "malformed");
    let mut forged = token.clone();
    forged.push('x');
    app.get_as(&forged, "/api/v1/auth/me")
        .await
        .problem(401, "signature");
    let r = send(
        app.cli
            .get("/api/v1/auth/me")
            .header("authorization", "Basic YTpi"),
    )
    .await;
    r.problem(401, "bearer token");

    app.clock.advance(std::time::Duration::from_secs(12 * 3600));
    app.get_as(&token, "/api/v1/auth/me")
        .await
        .problem(401, "expired");
}
