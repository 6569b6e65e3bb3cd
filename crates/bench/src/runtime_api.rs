//! A Lambda Runtime API on loopback that hands one event to a function binary, so
//! [`crate::function_start`] can start the binary as Lambda would and time it. It answers
//! `GET .../runtime/invocation/next` once with the event (a second `next` waits forever, as on
//! Lambda between invocations) and takes `.../response` and `.../error` posts.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the function did, when.
#[derive(Debug)]
pub enum Signal {
    /// It asked for its first event: initialisation is over.
    Ready(Instant),
    /// It posted the response to that event.
    Answered(Instant),
    /// It posted an invocation or initialisation error, with its body.
    Failed(String),
}

/// A running Runtime API; stops when dropped.
pub struct RuntimeApi {
    addr: SocketAddr,
    signals: mpsc::UnboundedReceiver<Signal>,
    server: tokio::task::JoinHandle<()>,
}

struct Shared {
    event: Bytes,
    served: AtomicBool,
    signals: mpsc::UnboundedSender<Signal>,
}

impl RuntimeApi {
    /// Listens on an ephemeral loopback port and serves `event` as the first invocation.
    pub async fn start(event: Vec<u8>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (sender, signals) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            event: Bytes::from(event),
            served: AtomicBool::new(false),
            signals: sender,
        });
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| answer(Arc::clone(&shared), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, signals, server })
    }

    /// `AWS_LAMBDA_RUNTIME_API` for the function.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// The next thing the function did; `None` once the server is gone.
    pub async fn next_signal(&mut self) -> Option<Signal> {
        self.signals.recv().await
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

async fn answer(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if method == Method::GET && path.ends_with("/runtime/invocation/next") {
        if shared.served.swap(true, Ordering::SeqCst) {
            // Lambda freezes a function between invocations: the next event never comes.
            std::future::pending::<()>().await;
        }
        let _ = shared.signals.send(Signal::Ready(Instant::now()));
        let deadline_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() + 1_500)
            .unwrap_or_default();
        let mut response = respond(StatusCode::OK, shared.event.clone());
        let headers = response.headers_mut();
        for (name, value) in [
            ("content-type", "application/json".to_owned()),
            ("lambda-runtime-aws-request-id", "bench-1".to_owned()),
            ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:bench".to_owned(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000".to_owned(),
            ),
        ] {
            headers.insert(name, value.parse().expect("a valid header value"));
        }
        return Ok(response);
    }
    if method == Method::POST {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let signal = if path.ends_with("/response") {
            Signal::Answered(Instant::now())
        } else if path.ends_with("/error") {
            Signal::Failed(String::from_utf8_lossy(&body).into_owned())
        } else {
            return Ok(respond(StatusCode::NOT_FOUND, ""));
        };
        let _ = shared.signals.send(signal);
        return Ok(respond(StatusCode::ACCEPTED, "{}"));
    }
    Ok(respond(StatusCode::NOT_FOUND, ""))
}
