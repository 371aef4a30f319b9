//! The local door to the nodes' status sockets: one HTTP reverse proxy per runtime on
//! `127.0.0.1:<port>`, forwarding `/pods/<pod>/<path>?<query>` to the API server's pod
//! proxy (`/api/v1/namespaces/<ns>/pods/<pod>:7071/proxy/<path>`) through the runtime's
//! authenticated kube [`Client`].
//!
//! Why this and not a port-forward: `kubectl port-forward` needs `socat` on the node with
//! dockershim (the lab cluster has none), and a stream per node is hundreds of streams at
//! scale; the pod proxy is plain HTTP through the API server, which every cluster offers
//! (RBAC `pods/proxy`). The observer ([`crate::orchestrator::observer`]) and the link
//! faults ([`crate::runtime::links`]) append their paths to a node's `status_url`, so with
//! `status_url = http://127.0.0.1:<port>/pods/<pod>` they work unchanged.
//!
//! A node that cannot be reached (killed, held, not scheduled yet) must look to those
//! callers exactly like a process that does not answer: when the API server itself answers
//! for the pod (its own `Status` object: "error trying to reach service", "pods not
//! found"), the proxy closes the connection without a response, so callers see a
//! connection error ("unreachable") and not a node that refused a request. Every answer of
//! the node itself (200, 400, 503 "not joined yet") passes through with its status and body.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube::Client;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::runtime::RuntimeError;
use crate::runtime::container::STATUS_PORT;

/// How long one forwarded request may take, API server round trip included: longer than
/// any status or admin answer, short enough that a hung API server does not hold a caller.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest request or response body forwarded (status of a large network, delivered
/// messages): anything bigger is a mistake, not something to buffer.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The running proxy; stops when dropped.
#[derive(Debug)]
pub struct PodProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl PodProxy {
    /// Binds `127.0.0.1:0` and serves until dropped, forwarding to pods of `namespace`.
    pub async fn start(client: Client, namespace: String) -> Result<PodProxy, RuntimeError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| {
            RuntimeError::Failed(format!(
                "cannot open the local proxy to the pods' status sockets on 127.0.0.1: {e}"
            ))
        })?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors, say: keep serving the connections there are.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let client = client.clone();
                let namespace = namespace.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let client = client.clone();
                        let namespace = namespace.clone();
                        async move { forward(&client, &namespace, request).await }
                    });
                    // A connection ends with an error when a pod is unreachable (on
                    // purpose, see the module docs) or the caller went away: nothing to do.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(PodProxy { addr, task })
    }

    /// Where the proxy listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The status URL of `pod`: its status socket as the orchestrator reaches it.
    pub fn url_of(&self, pod: &str) -> String {
        format!("http://{}/pods/{pod}", self.addr)
    }
}

impl Drop for PodProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a request was not answered: the connection is closed instead (see the module docs).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unreachable(String);

/// `/pods/<pod>/<rest>` split into the pod and the rest (without its leading `/`); `None`
/// for any other path or a pod name that is not a DNS label (it goes into an API path).
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/pods/")?;
    let (pod, rest) = rest.split_once('/').unwrap_or((rest, ""));
    // A StatefulSet's pods are DNS labels; nothing else (`..`, `/`) may reach the API path.
    let valid = !pod.is_empty()
        && pod.len() <= 63
        && pod
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    valid.then_some((pod, rest))
}

/// The API server path of `rest` on `pod`'s status port, query included.
pub fn upstream_path(namespace: &str, pod: &str, rest: &str, query: Option<&str>) -> String {
    let mut path = format!("/api/v1/namespaces/{namespace}/pods/{pod}:{STATUS_PORT}/proxy/{rest}");
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        path.push('?');
        path.push_str(q);
    }
    path
}

/// Whether an answer came from the API server about the pod (a `Status` object: the pod
/// is missing or does not accept connections) rather than from the node.
pub fn is_api_server_error(status: StatusCode, body: &[u8]) -> bool {
    if status.is_success() {
        return false;
    }
    #[derive(serde::Deserialize)]
    struct Kind {
        kind: Option<String>,
        #[serde(rename = "apiVersion")]
        api_version: Option<String>,
    }
    serde_json::from_slice::<Kind>(body)
        .is_ok_and(|k| k.kind.as_deref() == Some("Status") && k.api_version.is_some())
}

fn answer(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn forward(
    client: &Client,
    namespace: &str,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Unreachable> {
    let Some((pod, rest)) = split_path(request.uri().path()) else {
        return Ok(answer(
            StatusCode::NOT_FOUND,
            "peerlab's pod proxy serves /pods/<pod>/<path> only",
        ));
    };
    if !matches!(
        *request.method(),
        Method::GET | Method::POST | Method::DELETE | Method::PUT
    ) {
        return Ok(answer(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET, POST, PUT and DELETE are forwarded",
        ));
    }
    let path = upstream_path(namespace, pod, rest, request.uri().query());
    let pod = pod.to_string();
    let method = request.method().clone();
    let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
    // The API server authenticates this runtime by `Authorization`, so the caller's admin
    // token travels to the node in the header nodes also accept for it.
    let admin_token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| header::HeaderValue::from_str(t).ok());
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Ok(answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body not forwarded: {e}"),
            ));
        }
    };
    let mut upstream = Request::builder().method(method).uri(&path);
    if let Some(ct) = content_type {
        upstream = upstream.header(header::CONTENT_TYPE, ct);
    }
    if let Some(token) = admin_token {
        upstream = upstream.header(crate::contract::ADMIN_TOKEN_HEADER, token);
    }
    let upstream = match upstream.body(kube::client::Body::from(body.to_vec())) {
        Ok(r) => r,
        Err(e) => {
            return Ok(answer(
                StatusCode::BAD_REQUEST,
                &format!("cannot forward this request: {e}"),
            ));
        }
    };
    let exchange = async {
        let response = client
            .send(upstream)
            .await
            .map_err(|e| Unreachable(format!("{pod}: API server: {e}")))?;
        let (parts, body) = response.into_parts();
        let bytes = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| Unreachable(format!("{pod}: reading the answer: {e}")))?
            .to_bytes();
        Ok::<_, Unreachable>((parts, bytes))
    };
    let (parts, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| Unreachable(format!("{pod}: no answer within {REQUEST_TIMEOUT:?}")))??;
    if is_api_server_error(parts.status, &bytes) {
        return Err(Unreachable(format!(
            "{pod}: {}",
            String::from_utf8_lossy(&bytes)
        )));
    }
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = parts.status;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, ct.clone());
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_a_pod_and_what_to_ask_it() {
        assert_eq!(
            split_path("/pods/peers-3/status"),
            Some(("peers-3", "status"))
        );
        assert_eq!(
            split_path("/pods/genesis-0/admin/block"),
            Some(("genesis-0", "admin/block"))
        );
        assert_eq!(split_path("/pods/genesis-0"), Some(("genesis-0", "")));
        assert_eq!(split_path("/pods/../secrets/x"), None);
        assert_eq!(split_path("/pods/Peers/x"), None);
        assert_eq!(split_path("/pods//x"), None);
        assert_eq!(split_path("/status"), None);
        assert_eq!(
            upstream_path("peerlab-q-1", "peers-3", "messages", Some("limit=5")),
            "/api/v1/namespaces/peerlab-q-1/pods/peers-3:7071/proxy/messages?limit=5"
        );
        assert_eq!(
            upstream_path("ns", "genesis-0", "ready", None),
            "/api/v1/namespaces/ns/pods/genesis-0:7071/proxy/ready"
        );
    }

    #[test]
    fn the_api_servers_own_errors_are_told_from_the_nodes() {
        let status = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"error trying to reach service: dial tcp 10.22.0.5:7071: connect: connection refused","reason":"ServiceUnavailable","code":503}"#;
        assert!(is_api_server_error(StatusCode::SERVICE_UNAVAILABLE, status));
        assert!(is_api_server_error(StatusCode::NOT_FOUND, status));
        // The node's own refusal passes through.
        assert!(!is_api_server_error(
            StatusCode::SERVICE_UNAVAILABLE,
            b"{\"error\":\"not joined yet\"}"
        ));
        assert!(!is_api_server_error(
            StatusCode::SERVICE_UNAVAILABLE,
            b"not joined yet\n"
        ));
        assert!(!is_api_server_error(StatusCode::OK, status));
    }
}
