//! The API behind API Gateway's REST API (ApiEndpoint RestApi): Lambda's payload 1.0 event, as a
//! REST API's proxy integration sends it, through the real handler. The REST API sends every path
//! to the function; the path arrives without the stage and the signer in the request's identity.

use adapters::{InMemoryReadModel, InMemoryStore};
use api::{App, AuthPolicy, ReservationService, RetryPolicy};
use lambda_http::Body;
use serde_json::Value;

/// A signed `PUT /slots/dinner` on the stage `prod`, its proxy resource `/{proxy+}`.
const SIGNED_PUT_SLOT: &str = include_str!("../fixtures/rest-api-put-slot.json");

fn app(auth: AuthPolicy) -> App<InMemoryStore, InMemoryReadModel> {
    App::new(
        ReservationService::new(InMemoryStore::new(), RetryPolicy::default()),
        InMemoryReadModel::default(),
    )
    .with_auth(auth)
}

/// The event with `edit` applied, as lambda_http reads it.
fn event(edit: impl FnOnce(&mut Value)) -> lambda_http::Request {
    let mut event: Value = serde_json::from_str(SIGNED_PUT_SLOT).expect("the fixture is JSON");
    edit(&mut event);
    lambda_http::request::from_str(&event.to_string()).expect("a REST API proxy event")
}

fn body(response: &http::Response<Body>) -> Value {
    let Body::Text(text) = response.body() else {
        panic!("a text body, got {:?}", response.body())
    };
    serde_json::from_str(text).expect("a JSON body")
}

#[tokio::test]
async fn a_signed_rest_api_request_is_routed_by_its_path_without_the_stage_and_its_signer_is_the_caller() {
    let app = app(AuthPolicy::Iam);
    let response = api::handle(&app, event(|_| {})).await;
    assert_eq!(response.status(), 201, "{:?}", response.body());
    assert_eq!(body(&response)["slot_id"], "dinner");

    // The same slot read back through a GET on the same stage.
    let read = event(|e| {
        e["httpMethod"] = "GET".into();
        e["requestContext"]["httpMethod"] = "GET".into();
        e["body"] = Value::Null;
    });
    let response = api::handle(&app, read).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body(&response)["capacity"], 20);
}

#[tokio::test]
async fn an_unsigned_rest_api_request_under_auth_mode_iam_is_a_problem_json_401() {
    let unsigned = event(|e| {
        let identity = &mut e["requestContext"]["identity"];
        identity["userArn"] = Value::Null;
        identity["caller"] = Value::Null;
        identity["user"] = Value::Null;
        identity["accessKey"] = Value::Null;
    });
    let response = api::handle(&app(AuthPolicy::Iam), unsigned).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert_eq!(body(&response)["code"], "unauthorized");
}

#[tokio::test]
async fn an_unknown_path_through_the_rest_api_is_the_functions_problem_json_404_naming_the_path() {
    let unknown = event(|e| {
        e["path"] = "/nope".into();
        e["requestContext"]["path"] = "/prod/nope".into();
    });
    let response = api::handle(&app(AuthPolicy::Open), unknown).await;
    assert_eq!(response.status(), 404);
    assert_eq!(body(&response)["detail"], "no route for /nope");
}
