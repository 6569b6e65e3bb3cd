//! Authorization under AuthMode JWT, through the local HTTP server standing in for API Gateway's
//! JWT authorizer, on DynamoDB Local, with signed test tokens (no network): a guest reaches only
//! their own reservations, an admin everyone's, and Idempotency-Keys are each caller's own.

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use test_support::stack::{TestApi, TestStack, tokens};

async fn call(
    http: &Client,
    api: &TestApi,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = http.request(method, api.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_guest_reaches_only_their_own_reservations_and_an_admin_everyones() {
    let stack = TestStack::start().await;
    let api = stack
        .spawn_api_with_auth(tokens::policy(), Some(tokens::authorizer()))
        .await;
    let http = Client::new();
    let (ada, bob) = (tokens::token("ada", json!({})), tokens::token("bob", json!({})));
    let admin = tokens::token("ops", json!({ "scope": api::auth::DEFAULT_ADMIN_SCOPE }));
    use reqwest::Method;

    // Slots are an admin's.
    let slot = json!({ "capacity": 10 });
    let (status, body) = call(
        &http,
        &api,
        Method::PUT,
        "/slots/s1",
        Some(&ada),
        Some(slot.clone()),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    assert_eq!(
        call(&http, &api, Method::PUT, "/slots/s1", Some(&admin), Some(slot), None)
            .await
            .0,
        201
    );

    // Ada books for herself, not for Bob.
    let booking = |guest: &str| Some(json!({ "slot_id": "s1", "guest_id": guest, "seats": 1 }));
    let (status, _) = call(
        &http,
        &api,
        Method::POST,
        "/reservations",
        Some(&ada),
        booking("bob"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, created) = call(
        &http,
        &api,
        Method::POST,
        "/reservations",
        Some(&ada),
        booking("ada"),
        Some("k1"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["reservation_id"].as_str().unwrap().to_owned();

    // Bob can neither read nor cancel it, nor list Ada's reservations; Ada and an admin can.
    let one = format!("/reservations/{id}");
    let cancel = format!("/reservations/{id}/cancel");
    for (method, path) in [
        (Method::GET, one.as_str()),
        (Method::POST, cancel.as_str()),
        (Method::GET, "/guests/ada/reservations"),
    ] {
        let (status, body) = call(&http, &api, method.clone(), path, Some(&bob), None, None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{method} {path}"
        );
    }
    assert_eq!(
        call(&http, &api, Method::GET, &one, Some(&ada), None, None).await.0,
        200
    );
    assert_eq!(
        call(
            &http,
            &api,
            Method::GET,
            "/guests/ada/reservations",
            Some(&admin),
            None,
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            &http,
            &api,
            Method::GET,
            "/guests/bob/reservations",
            Some(&bob),
            None,
            None
        )
        .await
        .0,
        200
    );

    // Bob's "k1" is not Ada's: his request books his own seat instead of replaying hers.
    let (status, his) = call(
        &http,
        &api,
        Method::POST,
        "/reservations",
        Some(&bob),
        booking("bob"),
        Some("k1"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(his["reservation_id"], created["reservation_id"]);
    // Ada's own retry with her key replays her answer.
    let (status, again) = call(
        &http,
        &api,
        Method::POST,
        "/reservations",
        Some(&ada),
        booking("ada"),
        Some("k1"),
    )
    .await;
    assert_eq!((status, &again), (StatusCode::CREATED, &created));

    // The cancel as its owner.
    assert_eq!(
        call(&http, &api, Method::POST, &cancel, Some(&ada), None, None).await.0,
        200
    );

    // No token, a forged one, an expired one: 401.
    let forged = format!("{}x", &ada[..ada.len() - 1]);
    let expired = tokens::token("ada", json!({ "exp": 1_000_000_000 }));
    for token in [None, Some(forged.as_str()), Some(expired.as_str())] {
        let (status, body) = call(&http, &api, Method::GET, &one, token, None, None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized"))
        );
    }
}
