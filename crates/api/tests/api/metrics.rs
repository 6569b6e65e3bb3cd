//! The API's business metrics as CloudWatch EMF lines, read back: one per created reservation
//! (with its id and the request's trace id as properties) and one per sold-out refusal.

use adapters::{InMemoryReadModel, InMemoryStore};
use api::{App, ReservationService, RetryPolicy};
use http::Request;
use lambda_http::Body;
use serde_json::Value;

async fn send(app: &App<InMemoryStore, InMemoryReadModel>, method: &str, path: &str, body: &str) -> u16 {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("x-amzn-trace-id", "Root=1-6743a000-0123456789abcdef01234567")
        .body(Body::Text(body.to_owned()))
        .unwrap();
    api::handle(app, request).await.status().as_u16()
}

#[tokio::test]
async fn created_and_sold_out_are_counted_in_emf() {
    let (emitter, lines) = telemetry::Emitter::memory();
    let app = App::new(
        ReservationService::new(InMemoryStore::new(), RetryPolicy::default()),
        InMemoryReadModel::default(),
    )
    .with_metrics(emitter);
    assert_eq!(send(&app, "PUT", "/slots/s1", r#"{"capacity": 1}"#).await, 201);
    let reserve = r#"{"slot_id": "s1", "guest_id": "ada", "seats": 1}"#;
    assert_eq!(send(&app, "POST", "/reservations", reserve).await, 201);
    assert_eq!(send(&app, "POST", "/reservations", reserve).await, 409);
    assert_eq!(send(&app, "POST", "/reservations", "{").await, 400);

    let docs: Vec<Value> = lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "bad input is not a business metric: {docs:?}");
    assert_eq!(docs[0]["ReservationsCreated"], 1.0);
    assert_eq!(docs[0]["Function"], "api");
    assert_eq!(docs[0]["trace_id"], "Root=1-6743a000-0123456789abcdef01234567");
    assert!(docs[0]["reservation_id"].as_str().is_some_and(|id| id.len() == 26));
    assert_eq!(docs[1]["SoldOut"], 1.0);
    assert_eq!(docs[1]["slot_id"], "s1");
    assert_eq!(docs[1]["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], "SoldOut");
}
