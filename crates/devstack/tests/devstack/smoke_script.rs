//! scripts/smoke.sh, the check users run against a deployed endpoint, passes against the local
//! API with the relay and projector running behind it, as under scripts/dev.sh; and in front of
//! that API, doors that let through only what AWS would (a SigV4-signed request for AuthMode IAM,
//! a bearer token for JWT), it passes with `--auth iam` and `--auth jwt` and is turned away without.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use test_support::stack::TestStack;

/// What a door checks of a request's headers: `Ok` lets it through, `Err` answers 403.
type Check = fn(&http::HeaderMap) -> Result<(), String>;

/// A front door on loopback that forwards what `check` accepts to `api` and keeps every refusal.
async fn door(api: SocketAddr, check: Check) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refusals = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&refusals);
    let client = reqwest::Client::new();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (client, refusals) = (client.clone(), Arc::clone(&kept));
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let (client, refusals) = (client.clone(), Arc::clone(&refusals));
                    async move {
                        if let Err(why) = check(req.headers()) {
                            refusals.lock().unwrap().push(why.clone());
                            let mut refused = hyper::Response::new(Full::new(Bytes::from(why)));
                            *refused.status_mut() = hyper::StatusCode::FORBIDDEN;
                            return Ok::<_, Infallible>(refused);
                        }
                        let (parts, body) = req.into_parts();
                        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                        let mut forward = client.request(parts.method.clone(), format!("http://{api}{path}"));
                        if let Some(content_type) = parts.headers.get(http::header::CONTENT_TYPE) {
                            forward = forward.header(http::header::CONTENT_TYPE, content_type);
                        }
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let answer = forward.body(body).send().await.expect("the local API answers");
                        let status = answer.status();
                        let mut response = hyper::Response::new(Full::new(answer.bytes().await.unwrap_or_default()));
                        *response.status_mut() = status;
                        Ok(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, refusals)
}

/// AuthMode IAM: SigV4 with the caller's key, scoped to the region and execute-api, over the host
/// and the date, with the session token.
fn sigv4(headers: &http::HeaderMap) -> Result<(), String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let authorization = header("authorization");
    let date = header("x-amz-date");
    let valid = date.len() == 16
        && authorization.starts_with(&format!(
            "AWS4-HMAC-SHA256 Credential=AKIDSMOKE/{}/eu-west-1/execute-api/aws4_request, SignedHeaders=",
            &date[..8]
        ))
        && authorization
            .split("SignedHeaders=")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .is_some_and(|signed| {
                signed.split(';').any(|h| h == "host") && signed.split(';').any(|h| h == "x-amz-date")
            })
        && authorization
            .rsplit("Signature=")
            .next()
            .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        && header("x-amz-security-token") == "smoke-session";
    if valid {
        Ok(())
    } else {
        Err(format!("not signed: {authorization:?}"))
    }
}

/// AuthMode JWT: the bearer token.
fn bearer(headers: &http::HeaderMap) -> Result<(), String> {
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some("Bearer smoke-token") => Ok(()),
        other => Err(format!("no bearer token: {other:?}")),
    }
}

async fn smoke(url: String, args: &[&str], env: &[(&str, &str)]) -> Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/smoke.sh");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(script)
            .arg(url)
            .args(args)
            .env("SMOKE_READ_MODEL_WAIT", "30")
            .env_remove("AWS_SESSION_TOKEN")
            .envs(env)
            .output()
            .expect("scripts/smoke.sh runs")
    })
    .await
    .unwrap()
}

fn passed(output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "smoke.sh failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("smoke: all checks passed"), "{stdout}");
    assert_eq!(stdout.matches("smoke: ok").count(), 8, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_script_passes_against_the_local_api_plain_signed_and_with_a_token() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let relay = stack.relay_mapping().await;
    let projector = stack.projector_mapping().await;
    let running = [
        tokio::spawn(relay.run(Duration::from_millis(50), until_stopped(stopped.clone()))),
        tokio::spawn(projector.run(Duration::from_millis(50), until_stopped(stopped.clone()))),
    ];

    passed(&smoke(api.url(""), &[], &[]).await);

    let credentials = [
        ("AWS_ACCESS_KEY_ID", "AKIDSMOKE"),
        ("AWS_SECRET_ACCESS_KEY", "smoke-secret"),
        ("AWS_SESSION_TOKEN", "smoke-session"),
        ("AWS_REGION", "eu-west-1"),
    ];
    let (iam_door, iam_refusals) = door(api.addr, sigv4).await;
    passed(&smoke(format!("http://{iam_door}"), &["--auth", "iam"], &credentials).await);
    assert!(
        iam_refusals.lock().unwrap().is_empty(),
        "{:?}",
        iam_refusals.lock().unwrap()
    );
    // The door does turn away what is not signed.
    let unsigned = smoke(format!("http://{iam_door}"), &[], &[]).await;
    assert!(!unsigned.status.success());
    assert!(String::from_utf8_lossy(&unsigned.stderr).contains("PUT slot: 403"));

    let (jwt_door, jwt_refusals) = door(api.addr, bearer).await;
    passed(
        &smoke(
            format!("http://{jwt_door}"),
            &["--auth", "jwt"],
            &[("SMOKE_JWT", "smoke-token")],
        )
        .await,
    );
    assert!(jwt_refusals.lock().unwrap().is_empty());

    // Asked to sign without credentials, it says what it needs in one line.
    let no_credentials = smoke(
        format!("http://{iam_door}"),
        &["--auth", "iam"],
        &[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")],
    )
    .await;
    assert_eq!(no_credentials.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&no_credentials.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--auth iam needs AWS_ACCESS_KEY_ID"), "{stderr}");

    stop.send(true).unwrap();
    for task in running {
        task.await.unwrap();
    }
}
