//! `openapi/openapi.yaml` against the real handler: the documented operations are exactly the
//! routed ones, every documented status of every operation is produced by a request here, every
//! answer's status is documented for its operation, and every body matches its documented schema.

use adapters::{InMemoryReadModel, InMemoryStore};
use api::{App, AuthPolicy, ROUTES, ReservationService, RetryPolicy};
use domain::ports::{CommitError, ReadModelStore, StoreErrorKind};
use http::{Method, Request};
use lambda_http::{Body, RequestExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const OPENAPI: &str = include_str!("../../../../openapi/openapi.yaml");
const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options", "trace"];

fn document() -> Value {
    serde_yaml_ng::from_str(OPENAPI).expect("openapi.yaml parses")
}

/// (METHOD, template) → documented status codes.
fn documented_operations(doc: &Value) -> BTreeMap<(String, String), BTreeSet<u16>> {
    let mut operations = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let statuses = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .map(|code| code.parse::<u16>().expect("explicit status codes only, no 'default'"))
                .collect();
            operations.insert((method.to_uppercase(), path.clone()), statuses);
        }
    }
    operations
}

/// Resolves a `$ref` inside the document, if the value is one.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("local refs only");
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {reference}")),
            )
        }
        None => value,
    }
}

struct Contract {
    doc: Value,
    app: App<InMemoryStore, InMemoryReadModel>,
    seen: BTreeSet<(String, String, u16)>,
    /// The verified token's claims API Gateway would pass with each request (AuthMode JWT).
    claims: Option<Vec<(&'static str, &'static str)>>,
}

impl Contract {
    fn new() -> Self {
        let retry = RetryPolicy {
            max_attempts: 3,
            backoff: domain::Backoff::new(Duration::from_micros(1), Duration::from_micros(1)),
            ..RetryPolicy::default()
        };
        Self {
            doc: document(),
            app: App::new(
                ReservationService::new(InMemoryStore::new(), retry),
                InMemoryReadModel::default(),
            ),
            seen: BTreeSet::new(),
            claims: None,
        }
    }

    fn store(&self) -> &InMemoryStore {
        self.app.service.store()
    }

    /// Sends one request, checks its answer against the document, returns the JSON body.
    async fn call(
        &mut self,
        method: Method,
        template: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
        expected_status: u16,
    ) -> Value {
        let mut builder = Request::builder().method(method.clone()).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(body.map(Body::Text).unwrap_or(Body::Empty)).unwrap();
        if let Some(claims) = &self.claims {
            request = request.with_request_context(jwt_context(claims));
        }
        let response = api::handle(&self.app, request).await;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = match response.body() {
            Body::Text(t) => t.clone(),
            other => panic!("{method} {path}: expected a text body, got {other:?}"),
        };
        assert_eq!(status, expected_status, "{method} {path} answered {text}");
        assert!(
            response.headers().contains_key("x-request-id"),
            "{method} {path}: no X-Request-Id"
        );

        let operation = &self.doc["paths"][template][method.as_str().to_lowercase()];
        let documented = resolve(&self.doc, &operation["responses"][status.to_string()]);
        assert!(
            documented.is_object(),
            "{method} {template} answered {status}, which is not documented"
        );
        let (media_type, media) = documented["content"].as_object().unwrap().iter().next().unwrap();
        assert_eq!(
            content_type.as_deref(),
            Some(media_type.as_str()),
            "{method} {path} {status}"
        );
        let body: Value = serde_json::from_str(&text).unwrap();
        let mut schema = json!({ "components": self.doc["components"].clone() });
        schema["$ref"] = media["schema"]["$ref"].clone();
        let validator = jsonschema::validator_for(&schema).expect("schema compiles");
        let errors: Vec<_> = validator.iter_errors(&body).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status}: body {body} does not match the schema: {errors:?}"
        );

        self.seen
            .insert((method.as_str().to_owned(), template.to_owned(), status));
        body
    }
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// The request context API Gateway's JWT authorizer passes on after verifying a token.
fn jwt_context(claims: &[(&str, &str)]) -> lambda_http::request::RequestContext {
    use lambda_http::aws_lambda_events::apigw::{
        ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequestContext,
    };
    let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
    jwt.claims = claims.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut authorizer = ApiGatewayRequestAuthorizer::default();
    authorizer.jwt = Some(jwt);
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.authorizer = Some(authorizer);
    lambda_http::request::RequestContext::ApiGatewayV2(context)
}

#[test]
fn documented_operations_are_exactly_the_routed_ones() {
    let documented: BTreeSet<_> = documented_operations(&document()).into_keys().collect();
    let routed: BTreeSet<_> = ROUTES.iter().map(|(m, p, _)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, routed, "routes and openapi.yaml disagree");
}

#[tokio::test]
async fn every_documented_status_is_produced_and_every_answer_matches_the_document() {
    let mut c = Contract::new();
    let slot = "/slots/{slot_id}";
    let reservations = "/reservations";
    let one = "/reservations/{reservation_id}";
    let cancel = "/reservations/{reservation_id}/cancel";
    let big = Some(format!(r#"{{"capacity": 1, "pad": "{}"}}"#, "x".repeat(17 * 1024)));

    // PUT /slots/{slot_id}
    c.call(
        Method::PUT,
        slot,
        "/slots/s1",
        &[JSON],
        Some(r#"{"capacity": 2}"#.into()),
        201,
    )
    .await;
    c.call(
        Method::PUT,
        slot,
        "/slots/s1",
        &[JSON],
        Some(r#"{"capacity": 3}"#.into()),
        200,
    )
    .await;
    c.call(Method::PUT, slot, "/slots/s1", &[JSON], Some("{oops".into()), 400)
        .await;
    c.call(Method::PUT, slot, "/slots/s1", &[JSON], big.clone(), 413).await;
    c.call(
        Method::PUT,
        slot,
        "/slots/s1",
        &[("content-type", "text/plain")],
        Some("3".into()),
        415,
    )
    .await;
    let problem = c
        .call(
            Method::PUT,
            slot,
            "/slots/s1",
            &[JSON],
            Some(r#"{"capacity": -1}"#.into()),
            422,
        )
        .await;
    assert_eq!(problem["errors"][0]["field"], "capacity");
    let problem = c
        .call(
            Method::PUT,
            slot,
            "/slots/bad%20id",
            &[JSON],
            Some(r#"{"capacity": 1}"#.into()),
            422,
        )
        .await;
    assert_eq!(problem["errors"][0]["field"], "slot_id");
    c.store().fail_next_call(StoreErrorKind::Other);
    let problem = c
        .call(
            Method::PUT,
            slot,
            "/slots/s1",
            &[JSON],
            Some(r#"{"capacity": 3}"#.into()),
            500,
        )
        .await;
    assert!(problem["request_id"].is_string());
    c.store().fail_next_call(StoreErrorKind::Throttled);
    c.call(
        Method::PUT,
        slot,
        "/slots/s1",
        &[JSON],
        Some(r#"{"capacity": 3}"#.into()),
        503,
    )
    .await;
    c.store().fail_next_call(StoreErrorKind::Contended);
    let problem = c
        .call(
            Method::PUT,
            slot,
            "/slots/s1",
            &[JSON],
            Some(r#"{"capacity": 3}"#.into()),
            429,
        )
        .await;
    assert_eq!(problem["code"], "contended");

    // GET /slots/{slot_id}
    let got = c.call(Method::GET, slot, "/slots/s1", &[], None, 200).await;
    assert_eq!(
        got,
        json!({ "slot_id": "s1", "capacity": 3, "reserved": 0, "available": 3, "shards": 1 })
    );
    c.call(Method::GET, slot, "/slots/nope", &[], None, 404).await;
    c.store().fail_next_call(StoreErrorKind::Other);
    c.call(Method::GET, slot, "/slots/s1", &[], None, 500).await;
    c.store().fail_next_call(StoreErrorKind::Throttled);
    c.call(Method::GET, slot, "/slots/s1", &[], None, 503).await;

    // POST /reservations
    let body = |seats: i64| Some(json!({ "slot_id": "s1", "guest_id": "ada", "seats": seats }).to_string());
    let created = c
        .call(
            Method::POST,
            reservations,
            "/reservations",
            &[JSON, ("idempotency-key", "k1")],
            body(2),
            201,
        )
        .await;
    let replayed = c
        .call(
            Method::POST,
            reservations,
            "/reservations",
            &[JSON, ("idempotency-key", "k1")],
            body(2),
            201,
        )
        .await;
    assert_eq!(created, replayed);
    c.call(
        Method::POST,
        reservations,
        "/reservations",
        &[JSON, ("idempotency-key", "k1")],
        body(1),
        422,
    )
    .await;
    c.call(
        Method::POST,
        reservations,
        "/reservations",
        &[JSON],
        Some("[".into()),
        400,
    )
    .await;
    c.call(Method::POST, reservations, "/reservations", &[JSON], big.clone(), 413)
        .await;
    c.call(Method::POST, reservations, "/reservations", &[], body(1), 415)
        .await;
    let problem = c
        .call(
            Method::POST,
            reservations,
            "/reservations",
            &[JSON],
            Some("{}".into()),
            422,
        )
        .await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 3);
    let other_slot = Some(json!({ "slot_id": "nope", "guest_id": "ada", "seats": 1 }).to_string());
    c.call(Method::POST, reservations, "/reservations", &[JSON], other_slot, 404)
        .await;
    let problem = c
        .call(Method::POST, reservations, "/reservations", &[JSON], body(2), 409)
        .await;
    assert_eq!(problem["code"], "sold_out");
    c.store().fail_next_call(StoreErrorKind::Other);
    c.call(Method::POST, reservations, "/reservations", &[JSON], body(1), 500)
        .await;
    // Throttled commits are retried like conflicts; throttled on every attempt, it is a 503.
    for _ in 0..3 {
        c.store().fail_next_call(StoreErrorKind::Throttled);
    }
    let problem = c
        .call(Method::POST, reservations, "/reservations", &[JSON], body(1), 503)
        .await;
    assert_eq!(problem["code"], "throttled");
    for _ in 0..3 {
        c.store().fail_next_commit(|| CommitError::Contention);
    }
    let problem = c
        .call(Method::POST, reservations, "/reservations", &[JSON], body(1), 429)
        .await;
    assert_eq!(problem["code"], "contended");

    let problem = c
        .call(
            Method::PUT,
            slot,
            "/slots/s1",
            &[JSON],
            Some(r#"{"capacity": 1}"#.into()),
            409,
        )
        .await;
    assert_eq!(problem["code"], "capacity_below_reserved");

    // GET /reservations/{reservation_id}
    let id = created["reservation_id"].as_str().unwrap().to_owned();
    let fetched = c
        .call(Method::GET, one, &format!("/reservations/{id}"), &[], None, 200)
        .await;
    assert_eq!(fetched, created);
    c.call(Method::GET, one, "/reservations/01JNOPE", &[], None, 404).await;
    c.store().fail_next_call(StoreErrorKind::Other);
    c.call(Method::GET, one, &format!("/reservations/{id}"), &[], None, 500)
        .await;
    c.store().fail_next_call(StoreErrorKind::Throttled);
    c.call(Method::GET, one, &format!("/reservations/{id}"), &[], None, 503)
        .await;

    // POST /reservations/{reservation_id}/cancel
    let cancel_path = format!("/reservations/{id}/cancel");
    c.store().fail_next_call(StoreErrorKind::Other);
    c.call(Method::POST, cancel, &cancel_path, &[], None, 500).await;
    c.store().fail_next_call(StoreErrorKind::Throttled);
    c.call(Method::POST, cancel, &cancel_path, &[], None, 503).await;
    for _ in 0..3 {
        c.store().fail_next_commit(|| CommitError::Contention);
    }
    c.call(Method::POST, cancel, &cancel_path, &[], None, 429).await;
    c.call(Method::POST, cancel, &cancel_path, &[JSON], big.clone(), 413)
        .await;
    c.call(Method::POST, cancel, "/reservations/01JNOPE/cancel", &[], None, 404)
        .await;
    let cancelled = c.call(Method::POST, cancel, &cancel_path, &[], None, 200).await;
    assert_eq!(
        (cancelled["status"].as_str(), cancelled["version"].as_u64()),
        (Some("CANCELLED"), Some(2))
    );
    let problem = c.call(Method::POST, cancel, &cancel_path, &[], None, 409).await;
    assert_eq!(problem["code"], "not_cancellable");

    // GET /guests/{guest_id}/reservations, from the read model the projector keeps
    let guests = "/guests/{guest_id}/reservations";
    let page = c
        .call(Method::GET, guests, "/guests/ada/reservations", &[], None, 200)
        .await;
    assert_eq!(page, json!({ "items": [] }));
    // The projector applies versions in order: the creation, then the cancel.
    let mut guest = String::new();
    for snapshot in [&created, &cancelled] {
        let reservation: domain::Reservation = serde_json::from_value(snapshot.clone()).unwrap();
        guest = reservation.guest_id.as_str().to_owned();
        let outcome = c
            .app
            .guests
            .apply(&domain::GuestReservation {
                reservation,
                updated_at: time::OffsetDateTime::now_utc(),
                last_event_id: domain::EventId::generate(),
            })
            .await
            .unwrap();
        assert_eq!(outcome, domain::ApplyOutcome::Applied);
    }
    let page = c
        .call(
            Method::GET,
            guests,
            &format!("/guests/{guest}/reservations?limit=1"),
            &[],
            None,
            200,
        )
        .await;
    assert_eq!(page["items"][0], cancelled);
    let problem = c
        .call(
            Method::GET,
            guests,
            "/guests/ada/reservations?limit=1000&cursor=x",
            &[],
            None,
            422,
        )
        .await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2);
    c.app.guests.fail_next_call(StoreErrorKind::Other);
    c.call(Method::GET, guests, "/guests/ada/reservations", &[], None, 500)
        .await;
    c.app.guests.fail_next_call(StoreErrorKind::Throttled);
    c.call(Method::GET, guests, "/guests/ada/reservations", &[], None, 503)
        .await;

    // Several Regions: a slot at home in another Region is written only there (421).
    c.call(
        Method::PUT,
        slot,
        "/slots/far",
        &[JSON],
        Some(r#"{"capacity": 2}"#.into()),
        201,
    )
    .await;
    let far = Some(json!({ "slot_id": "far", "guest_id": "ada", "seats": 1 }).to_string());
    let booked = c
        .call(Method::POST, reservations, "/reservations", &[JSON], far.clone(), 201)
        .await;
    let far_cancel = format!("/reservations/{}/cancel", booked["reservation_id"].as_str().unwrap());
    // A slot at home elsewhere is written only there (421); while its home moves, no Region
    // writes it (503, retry in a moment).
    let far_slot = domain::SlotId::parse("far").unwrap();
    for (moving, status, code, region) in [
        (false, 421, "wrong_region", "eu-central-1"),
        (true, 503, "home_moving", "ap-south-1"),
    ] {
        if moving {
            c.store().move_slot_home(&far_slot, region);
        } else {
            c.store().home_slot_elsewhere(&far_slot, region);
        }
        for (method, template, path, body) in [
            (Method::PUT, slot, "/slots/far", Some(r#"{"capacity": 3}"#.to_owned())),
            (Method::POST, reservations, "/reservations", far.clone()),
            (Method::POST, cancel, far_cancel.as_str(), None),
        ] {
            let problem = c.call(method, template, path, &[JSON], body, status).await;
            assert_eq!(
                (problem["code"].as_str(), problem["home_region"].as_str()),
                (Some(code), Some(region))
            );
        }
    }

    // AuthMode JWT: a guest reaches only their own; a request without a verified token is 401.
    c.app.auth = AuthPolicy::default_jwt();
    c.claims = Some(vec![("sub", "bob")]);
    let forbidden = c
        .call(Method::GET, one, &format!("/reservations/{id}"), &[], None, 403)
        .await;
    assert_eq!(forbidden["code"], "forbidden");
    c.call(Method::POST, cancel, &cancel_path, &[], None, 403).await;
    c.call(Method::GET, guests, "/guests/ada/reservations", &[], None, 403)
        .await;
    c.call(Method::POST, reservations, "/reservations", &[JSON], body(1), 403)
        .await;
    c.call(
        Method::PUT,
        slot,
        "/slots/s1",
        &[JSON],
        Some(r#"{"capacity": 9}"#.into()),
        403,
    )
    .await;
    // Bob's own are his: his page, and a booking for himself.
    c.call(Method::GET, guests, "/guests/bob/reservations", &[], None, 200)
        .await;
    let own = Some(json!({ "slot_id": "s1", "guest_id": "bob", "seats": 1 }).to_string());
    c.call(Method::POST, reservations, "/reservations", &[JSON], own, 201)
        .await;
    c.claims = None;
    for (method, template, path) in [
        (Method::PUT, slot, "/slots/s1"),
        (Method::GET, slot, "/slots/s1"),
        (Method::POST, reservations, "/reservations"),
        (Method::GET, one, "/reservations/01JNOPE"),
        (Method::POST, cancel, "/reservations/01JNOPE/cancel"),
        (Method::GET, guests, "/guests/ada/reservations"),
    ] {
        let problem = c.call(method, template, path, &[JSON], Some("{}".into()), 401).await;
        assert_eq!(problem["code"], "unauthorized");
    }

    // Every documented status of every operation was produced above.
    let documented: BTreeSet<_> = documented_operations(&c.doc)
        .into_iter()
        .flat_map(|((method, path), statuses)| statuses.into_iter().map(move |s| (method.clone(), path.clone(), s)))
        .collect();
    let missing: Vec<_> = documented.difference(&c.seen).collect();
    assert!(missing.is_empty(), "documented but never exercised: {missing:?}");
}

#[tokio::test]
async fn contention_that_outlasts_the_retries_is_a_429_to_retry_never_a_409() {
    let mut c = Contract::new();
    c.call(
        Method::PUT,
        "/slots/{slot_id}",
        "/slots/s1",
        &[JSON],
        Some(r#"{"capacity": 5}"#.into()),
        201,
    )
    .await;
    for _ in 0..3 {
        c.store().fail_next_commit(|| CommitError::Contention);
    }
    let body = Some(json!({ "slot_id": "s1", "guest_id": "ada", "seats": 1 }).to_string());
    let problem = c
        .call(
            Method::POST,
            "/reservations",
            "/reservations",
            &[JSON],
            body.clone(),
            429,
        )
        .await;
    assert_eq!(problem["code"], "contended");
    let problem = c
        .call(
            Method::POST,
            "/reservations",
            "/reservations",
            &[JSON],
            body.clone(),
            201,
        )
        .await;
    assert_eq!(problem["status"], "CONFIRMED", "the retry the 429 asked for books");
    assert_eq!(
        c.store().commit_attempts(),
        4,
        "bounded retries: exactly max_attempts commits, then the client's retry"
    );

    // Contention that clears within the bound is invisible to the client.
    c.store().fail_next_commit(|| CommitError::Contention);
    c.store().fail_next_commit(|| CommitError::Contention);
    c.call(Method::POST, "/reservations", "/reservations", &[JSON], body, 201)
        .await;
    assert_eq!(c.store().outbox().len(), 2, "one event for each committed reservation");
}

#[tokio::test]
async fn an_empty_retry_budget_answers_a_conflict_at_once_so_a_burst_is_not_multiplied() {
    let retry = RetryPolicy {
        max_attempts: 10,
        backoff: domain::Backoff::new(Duration::from_micros(1), Duration::from_micros(1)),
        // Each request adds half a retry, and none is in reserve beyond one.
        budget: api::RetryBudget::new(0.5, 1.0),
    };
    let app = App::new(
        ReservationService::new(InMemoryStore::new(), retry),
        InMemoryReadModel::default(),
    );
    let put = Request::builder()
        .method(Method::PUT)
        .uri("/slots/s1")
        .header("content-type", "application/json")
        .body(Body::Text(r#"{"capacity": 100}"#.into()))
        .unwrap();
    assert_eq!(api::handle(&app, put).await.status(), 201);
    let store = app.service.store();
    // Every commit conflicts: 20 requests may retry about 10 times between them, not 180.
    for _ in 0..200 {
        store.fail_next_commit(|| CommitError::Contention);
    }
    let mut statuses = Vec::new();
    for i in 0..20 {
        let post = Request::builder()
            .method(Method::POST)
            .uri("/reservations")
            .header("content-type", "application/json")
            .body(Body::Text(
                json!({ "slot_id": "s1", "guest_id": format!("g{i}"), "seats": 1 }).to_string(),
            ))
            .unwrap();
        let response = api::handle(&app, post).await;
        if response.status() == 429 {
            assert_eq!(response.headers()["retry-after"], "1");
        }
        statuses.push(response.status().as_u16());
    }
    assert!(statuses.iter().all(|s| *s == 429), "{statuses:?}");
    let retries = store.commit_attempts() - 20;
    assert!(
        retries <= 11,
        "{retries} retries for 20 requests with half a retry each"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problem_json_404_and_405() {
    let app = App::new(
        ReservationService::new(InMemoryStore::new(), RetryPolicy::default()),
        InMemoryReadModel::default(),
    );
    let send = |method: Method, path: &str| {
        let request = Request::builder().method(method).uri(path).body(Body::Empty).unwrap();
        api::handle(&app, request)
    };
    let response = send(Method::GET, "/nope").await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let response = send(Method::DELETE, "/slots/s1").await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "PUT, GET");
    let Body::Text(text) = response.body() else {
        panic!("text body")
    };
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap()["code"],
        "method_not_allowed"
    );
}
