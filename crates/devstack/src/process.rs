//! A Lambda function's own binary, run on this machine as Lambda runs it: a process that asks
//! the Runtime API (served here, on loopback) for each invocation and posts its answer. An
//! event source mapping invokes it like any other [`Function`], one invocation at a time, so a
//! consumer written outside the product, in any language, runs on the local stack unchanged.

use bytes::Bytes;
use event_source_mapping::{Function, FunctionError};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;

type Answer = Result<serde_json::Value, FunctionError>;

/// One invocation waiting for the function to take it.
struct Invocation {
    request_id: String,
    event: serde_json::Value,
    deadline: Instant,
    answer: oneshot::Sender<Answer>,
}

/// What the Runtime API shares between its connections.
struct Runtime {
    function_arn: String,
    queued: Mutex<mpsc::Receiver<Invocation>>,
    /// Taken invocations by request id, until the function answers them.
    taken: std::sync::Mutex<HashMap<String, oneshot::Sender<Answer>>>,
}

/// The function's process and the Runtime API it talks to; both stop when this is dropped.
pub struct ProcessFunction {
    queue: mpsc::Sender<Invocation>,
    /// One invocation at a time, as one Lambda execution environment takes them.
    one_at_a_time: Mutex<()>,
    child: tokio::process::Child,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ProcessFunction {
    fn drop(&mut self) {
        self.server.abort();
        let _ = self.child.start_kill();
    }
}

impl ProcessFunction {
    /// Starts `binary` as the function `name` with `env` (the Lambda variables are added), its
    /// output appended to `log`.
    pub async fn start(binary: &Path, name: &str, env: &HashMap<String, String>, log: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (queue, queued) = mpsc::channel(1);
        let runtime = Arc::new(Runtime {
            function_arn: format!("arn:aws:lambda:us-east-1:000000000000:function:{name}"),
            queued: Mutex::new(queued),
            taken: Default::default(),
        });
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let runtime = Arc::clone(&runtime);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| answer(Arc::clone(&runtime), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let output = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = tokio::process::Command::new(binary)
            .envs(env)
            .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", name)
            .stdout(output.try_clone()?)
            .stderr(output)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Self {
            queue,
            one_at_a_time: Mutex::new(()),
            child,
            server,
        })
    }
}

impl Function for ProcessFunction {
    async fn invoke(&self, event: serde_json::Value, deadline: Instant) -> Answer {
        let _one = self.one_at_a_time.lock().await;
        let (answer, answered) = oneshot::channel();
        let invocation = Invocation {
            request_id: next_request_id(),
            event,
            deadline,
            answer,
        };
        let stopped = || FunctionError::new("Runtime.ExitError", "the function's process is not running");
        self.queue.send(invocation).await.map_err(|_| stopped())?;
        tokio::select! {
            answer = answered => answer.map_err(|_| stopped())?,
            _ = tokio::time::sleep_until(deadline) => Err(FunctionError::new("Sandbox.Timedout", "the function did not answer in time")),
        }
    }
}

/// A request id, unique enough for one process's invocations.
fn next_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("local-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

/// The Runtime API: `GET .../invocation/next` waits for an invocation; `POST .../{id}/response`
/// and `.../{id}/error` answer it; `POST .../init/error` is a start that failed (the process
/// then exits, and invocations fail until it is started again).
async fn answer(runtime: Arc<Runtime>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.method() == Method::GET && path.ends_with("/runtime/invocation/next") {
        let Some(invocation) = runtime.queued.lock().await.recv().await else {
            return Ok(respond(StatusCode::GONE, ""));
        };
        let left = invocation.deadline.saturating_duration_since(Instant::now());
        let deadline_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|now| (now + left).as_millis())
            .unwrap_or_default();
        let body = serde_json::to_vec(&invocation.event).unwrap_or_default();
        let mut response = respond(StatusCode::OK, body);
        for (name, value) in [
            ("content-type", "application/json".to_owned()),
            ("lambda-runtime-aws-request-id", invocation.request_id.clone()),
            ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
            ("lambda-runtime-invoked-function-arn", runtime.function_arn.clone()),
        ] {
            if let Ok(value) = value.parse() {
                response.headers_mut().insert(name, value);
            }
        }
        lock(&runtime.taken).insert(invocation.request_id, invocation.answer);
        return Ok(response);
    }
    if req.method() != Method::POST {
        return Ok(respond(StatusCode::NOT_FOUND, ""));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut parts = path.rsplit('/');
    let (last, request_id) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let answer: Answer = match last {
        "response" => Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)),
        "error" => {
            let error: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let field = |name: &str| error[name].as_str().unwrap_or_default().to_owned();
            Err(FunctionError::new(field("errorType"), field("errorMessage")))
        }
        _ => return Ok(respond(StatusCode::NOT_FOUND, "")),
    };
    if request_id == "init" {
        // The start failed; the process exits, and the invocations waiting fail with it.
        return Ok(respond(StatusCode::ACCEPTED, "{}"));
    }
    match lock(&runtime.taken).remove(request_id) {
        Some(waiting) => {
            let _ = waiting.send(answer);
            Ok(respond(StatusCode::ACCEPTED, "{}"))
        }
        None => Ok(respond(StatusCode::NOT_FOUND, "")),
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
