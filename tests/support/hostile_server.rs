//! A small hostile stand-in for Amplitude on 127.0.0.1, started by a test: it speaks raw
//! HTTP/1.1 over TCP, so an answer can be anything — a `Retry-After` of `1e20`, a redirect
//! to `file:///etc/passwd`, a header with control characters, a body that trickles
//! forever, a status line that is not one. Each route answers from the case's script (or
//! the default of a well-behaved server); every request is logged, so a test can assert
//! what was (not) sent.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The endpoints a script can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    List,
    Usage,
    Request,
    Status,
    File,
    /// `/presigned/...`: where a test's redirect may point.
    Presigned,
    Membership,
    Upload,
    Other,
}

/// What the server sends back.
#[derive(Clone)]
pub enum Reply {
    /// These bytes, as they are, then the connection is closed.
    Raw(Vec<u8>),
    /// `head` (status line and headers), then `piece` every `pause`, `count` times
    /// (forever when `None`), then the connection is closed.
    Trickle {
        head: Vec<u8>,
        piece: Vec<u8>,
        pause: Duration,
        count: Option<usize>,
    },
    /// Nothing: the connection is closed at once.
    Close,
    /// Nothing, for `Duration`, then closed.
    Silence(Duration),
    /// The n-th call gets the n-th reply; the last one answers every call after.
    Seq(Vec<Reply>),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub authorized: bool,
}

pub struct Hostile {
    pub base_url: String,
    log: Arc<Mutex<Vec<Logged>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    pub fn log(&self) -> Vec<Logged> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Requests other than GET (membership and upload calls).
    pub fn writes(&self) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }

    /// The quota-spending cohort requests received.
    pub fn cohort_requests(&self) -> usize {
        self.log()
            .iter()
            .filter(|r| route_of(&r.path) == Route::Request)
            .count()
    }
}

/// A response with a status line, headers (`Content-Length` and `Connection: close`
/// added) and a body.
pub fn http(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut out = format!("HTTP/1.1 {status}\r\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
    Reply::Raw(out)
}

/// `200 OK` with a JSON body.
pub fn json(status: &str, body: &str) -> Reply {
    http(
        status,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// A trickling `200 OK` body: `head` first, then `piece` every `pause`.
pub fn trickle(first: &[u8], piece: &[u8], pause: Duration, count: Option<usize>) -> Reply {
    let mut head =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nConnection: close\r\n\r\n".to_vec();
    head.extend_from_slice(first);
    Reply::Trickle {
        head,
        piece: piece.to_vec(),
        pause,
        count,
    }
}

/// A cohort of `size` members named `name`, as the list shows it.
pub fn list_of(id: &str, name: &str, size: u64) -> String {
    format!(
        r#"{{"cohorts":[{{"id":{},"name":{},"size":{size},"published":true,"archived":false,"lastComputed":1700000000}}]}}"#,
        serde_json::Value::String(id.into()),
        serde_json::Value::String(name.into())
    )
}

/// The body of a 3-member cohort.
pub const GOOD_CSV: &str = "\"amplitude_id\",\"user_id\"\n1,\"u1\"\n2,\"u2\"\n3,\"u3\"\n";

/// What a well-behaved server answers on `route` (cohort `c1`, request `r1`).
pub fn default_reply(route: Route) -> Reply {
    match route {
        Route::List => json("200 OK", &list_of("c1", "Cohort one", 3)),
        Route::Usage => json("200 OK", r#"{"rest_download":{"limit":500,"usage":0}}"#),
        Route::Request => json("202 Accepted", r#"{"request_id":"r1","cohort_id":"c1"}"#),
        Route::Status => json(
            "200 OK",
            r#"{"request_id":"r1","cohort_id":"c1","async_status":"JOB COMPLETED"}"#,
        ),
        Route::File | Route::Presigned => http(
            "200 OK",
            &[("Content-Type", "text/csv")],
            GOOD_CSV.as_bytes(),
        ),
        Route::Membership => json(
            "200 OK",
            r#"{"cohort_id":"c1","memberships_result":[{"skipped_ids":[],"id_type":"BY_NAME","operation":"ADD"}]}"#,
        ),
        Route::Upload => json("200 OK", r#"{"cohortId":"c1"}"#),
        Route::Other => json("404 Not Found", r#"{"error":{"message":"no such path"}}"#),
    }
}

pub fn route_of(path: &str) -> Route {
    let path = path.split('?').next().unwrap_or(path);
    if path.starts_with("/presigned/") {
        Route::Presigned
    } else if path == "/api/3/cohorts" {
        Route::List
    } else if path == "/api/3/cohorts/usage" {
        Route::Usage
    } else if path == "/api/3/cohorts/membership" {
        Route::Membership
    } else if path == "/api/3/cohorts/upload" {
        Route::Upload
    } else if path.starts_with("/api/5/cohorts/request-status/") {
        Route::Status
    } else if path.starts_with("/api/5/cohorts/request/") && path.ends_with("/file") {
        Route::File
    } else if path.starts_with("/api/5/cohorts/request/") {
        Route::Request
    } else {
        Route::Other
    }
}

/// The answers of one case: a route not in `replies` gets [`default_reply`]. `{base}` in
/// a raw reply is replaced by the server's own `http://127.0.0.1:PORT`.
#[derive(Clone, Default)]
pub struct Script {
    pub replies: HashMap<Route, Reply>,
    /// Calls answered so far, per route (for [`Reply::Seq`]).
    calls: Arc<Mutex<HashMap<Route, usize>>>,
}

impl Script {
    pub fn with(mut self, route: Route, reply: Reply) -> Self {
        self.replies.insert(route, reply);
        self
    }
}

/// Starts the server on a free loopback port.
pub async fn start(script: Script) -> Hostile {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let base_url = format!("http://{addr}");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (log2, base2) = (Arc::clone(&log), base_url.clone());
    let script = Arc::new(script);
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let (log, script, base) = (Arc::clone(&log2), Arc::clone(&script), base2.clone());
            tokio::spawn(async move {
                let _ = serve(sock, &log, &script, &base).await;
            });
        }
    });
    Hostile {
        base_url,
        log,
        task,
    }
}

async fn serve(
    mut sock: TcpStream,
    log: &Mutex<Vec<Logged>>,
    script: &Script,
    base: &str,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let mut length = 0usize;
    let mut authorized = false;
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("authorization:") {
            authorized = true;
        }
    }
    // Read the request body (membership and upload calls) before answering.
    let mut have = buf.len() - head_end;
    while have < length {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        have += n;
    }
    if let Ok(mut l) = log.lock() {
        l.push(Logged {
            method,
            path: path.clone(),
            authorized,
        });
    }
    let route = route_of(&path);
    let nth = script
        .calls
        .lock()
        .map(|mut c| {
            let n = c.entry(route).or_insert(0);
            *n += 1;
            *n - 1
        })
        .unwrap_or(0);
    let mut reply = script
        .replies
        .get(&route)
        .cloned()
        .unwrap_or_else(|| default_reply(route));
    if let Reply::Seq(seq) = reply {
        reply = seq.get(nth).or(seq.last()).cloned().unwrap_or(Reply::Close);
    }
    let with_base = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .replace("{base}", base)
            .into_bytes()
    };
    match reply {
        Reply::Raw(bytes) => {
            let bytes = if find(&bytes, b"{base}").is_some() {
                with_base(&bytes)
            } else {
                bytes
            };
            sock.write_all(&bytes).await?;
        }
        Reply::Trickle {
            head,
            piece,
            pause,
            count,
        } => {
            sock.write_all(&head).await?;
            let mut sent = 0;
            while count.is_none_or(|c| sent < c) {
                tokio::time::sleep(pause).await;
                sock.write_all(&piece).await?;
                sock.flush().await?;
                sent += 1;
            }
        }
        Reply::Close | Reply::Seq(_) => {}
        Reply::Silence(d) => tokio::time::sleep(d).await,
    }
    sock.flush().await?;
    let _ = sock.shutdown().await;
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
