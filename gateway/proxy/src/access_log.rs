//! Access log (`run --access-log PATH`, Istio's `meshConfig.accessLogFile`): one line per
//! request in Istio's default TEXT format, written when the response body has been sent (or
//! abandoned), with Envoy's response flags and details.
//!
//! `--access-log-format` replaces the line with a format of Envoy command operators (Istio's
//! `meshConfig.accessLogFormat`): the ones of Istio's default line, and meshgate's
//! `%WASM_PLUGINS%` (each WasmPlugin's `name:outcome`). Unset, the line is Istio's default.
//!
//! Off by default (as in Istio's default profile), and then it costs nothing. When on, a
//! worker formats the line and hands it to a writer thread through a bounded channel: a full
//! channel drops the line (counted) rather than slowing requests down.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;
use http_body::Frame;

use crate::body::{Body, Watch, Watched};

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 8192;

/// Where lines go.
pub struct AccessLog {
    tx: SyncSender<String>,
    format: Format,
    /// Lines dropped because the writer fell behind.
    pub dropped: AtomicU64,
}

/// Errors opening the log.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// The file could not be opened for appending.
    #[error("access log {path}: {source}")]
    Open {
        /// The path given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The format names an operator meshgate does not log, or is malformed.
    #[error("access log format: {0}")]
    Format(String),
}

/// Istio's default TEXT format (`meshConfig.accessLogFormat` unset).
pub const ISTIO_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// A command operator the log knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StartTime,
    Method,
    /// `X-ENVOY-ORIGINAL-PATH?:PATH` or `:PATH`: the path as the client asked.
    Path,
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamServiceTime,
    ForwardedFor,
    UserAgent,
    RequestId,
    Authority,
    UpstreamHost,
    UpstreamCluster,
    DownstreamLocal,
    DownstreamRemote,
    RouteName,
    /// Operators meshgate knows but has no value for (always `-`).
    Dash,
    /// meshgate's own: `name:outcome` of each WasmPlugin the request met.
    WasmPlugins,
}

impl Op {
    fn parse(name: &str) -> Option<Op> {
        if let Some(h) = name.strip_prefix("REQ(").and_then(|h| h.strip_suffix(')')) {
            return Some(match h.to_ascii_lowercase().as_str() {
                ":method" => Op::Method,
                "x-envoy-original-path?:path" | ":path" => Op::Path,
                "x-forwarded-for" => Op::ForwardedFor,
                "user-agent" => Op::UserAgent,
                "x-request-id" => Op::RequestId,
                ":authority" => Op::Authority,
                _ => return None,
            });
        }
        if let Some(h) = name.strip_prefix("RESP(").and_then(|h| h.strip_suffix(')')) {
            return h
                .eq_ignore_ascii_case("x-envoy-upstream-service-time")
                .then_some(Op::UpstreamServiceTime);
        }
        Some(match name {
            "START_TIME" => Op::StartTime,
            "PROTOCOL" => Op::Protocol,
            "RESPONSE_CODE" => Op::ResponseCode,
            "RESPONSE_FLAGS" => Op::ResponseFlags,
            "RESPONSE_CODE_DETAILS" => Op::ResponseCodeDetails,
            "BYTES_RECEIVED" => Op::BytesReceived,
            "BYTES_SENT" => Op::BytesSent,
            "DURATION" => Op::Duration,
            "UPSTREAM_HOST" => Op::UpstreamHost,
            "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => Op::UpstreamCluster,
            "DOWNSTREAM_LOCAL_ADDRESS" => Op::DownstreamLocal,
            "DOWNSTREAM_REMOTE_ADDRESS" => Op::DownstreamRemote,
            "ROUTE_NAME" => Op::RouteName,
            "CONNECTION_TERMINATION_DETAILS"
            | "UPSTREAM_TRANSPORT_FAILURE_REASON"
            | "UPSTREAM_LOCAL_ADDRESS"
            | "REQUESTED_SERVER_NAME" => Op::Dash,
            "WASM_PLUGINS" => Op::WasmPlugins,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Op(Op),
}

/// A parsed TEXT format: text and `%OPERATOR%`s.
#[derive(Debug, Clone)]
pub struct Format {
    parts: Vec<Part>,
    /// Whether `%WASM_PLUGINS%` is used (the request then keeps its plugins' outcomes).
    pub wasm_plugins: bool,
}

impl Format {
    /// Parses `format`; an unknown operator or a lone `%` is an error (nothing would log it).
    pub fn parse(format: &str) -> Result<Format, AccessLogError> {
        let mut parts = Vec::new();
        let mut rest = format;
        while let Some(at) = rest.find('%') {
            if at > 0 {
                parts.push(Part::Text(rest[..at].to_owned()));
            }
            let after = &rest[at + 1..];
            let end = after.find('%').ok_or_else(|| {
                AccessLogError::Format(format!("unclosed `%` before {:?}", truncate(after)))
            })?;
            let name = &after[..end];
            let op = Op::parse(name)
                .ok_or_else(|| AccessLogError::Format(format!("meshgate does not log %{name}%")))?;
            parts.push(Part::Op(op));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        // Envoy ends a TEXT format's line itself when the format does not.
        if !matches!(parts.last(), Some(Part::Text(t)) if t.ends_with('\n')) {
            parts.push(Part::Text("\n".to_owned()));
        }
        let wasm_plugins = parts.contains(&Part::Op(Op::WasmPlugins));
        Ok(Format {
            parts,
            wasm_plugins,
        })
    }

    /// Istio's default line.
    pub fn istio() -> Format {
        // The constant is known to parse (a unit test checks it).
        Format::parse(ISTIO_FORMAT).unwrap_or(Format {
            parts: Vec::new(),
            wasm_plugins: false,
        })
    }
}

fn truncate(s: &str) -> &str {
    s.get(..s.len().min(20)).unwrap_or(s)
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish()
    }
}

impl AccessLog {
    /// Opens `path` for appending (`-` or `/dev/stdout`: standard output) and starts the
    /// writer thread; lines follow `format` (Istio's default when `None`).
    pub fn open(path: &str, format: Option<&str>) -> Result<Arc<AccessLog>, AccessLogError> {
        let format = match format {
            Some(f) => Format::parse(f)?,
            None => Format::istio(),
        };
        let mut out: Box<dyn std::io::Write + Send> = if path == "-" || path == "/dev/stdout" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AccessLogError::Open {
                        path: path.to_owned(),
                        source,
                    })?,
            )
        };
        let (tx, rx) = mpsc::sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("meshgate-access-log".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(64 * 1024);
                while let Ok(line) = rx.recv() {
                    buf.extend_from_slice(line.as_bytes());
                    // Batch what is already queued, then write once.
                    while let Ok(more) = rx.try_recv() {
                        buf.extend_from_slice(more.as_bytes());
                        if buf.len() > 60 * 1024 {
                            break;
                        }
                    }
                    let _ = out.write_all(&buf).and_then(|()| out.flush());
                    buf.clear();
                }
            })
            .map_err(|source| AccessLogError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Arc::new(AccessLog {
            tx,
            format,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Whether lines show the plugins' outcomes.
    pub fn wants_plugins(&self) -> bool {
        self.format.wasm_plugins
    }

    fn write(&self, line: String) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Request bytes received, counted by the body as it streams (put in the request's extensions).
#[derive(Clone, Default)]
pub struct Received(pub Arc<AtomicU64>);

/// Everything one line says.
pub struct Entry {
    /// When the request started (wall clock, for `START_TIME`).
    pub start: SystemTime,
    /// When the request started (for `DURATION`).
    pub started: Instant,
    /// `:method`.
    pub method: http::Method,
    /// The path as the client asked (normalized, before rewrites).
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// Request headers the line shows.
    pub xff: Option<HeaderValue>,
    /// `user-agent`.
    pub user_agent: Option<HeaderValue>,
    /// `x-request-id` (as forwarded).
    pub request_id: Option<HeaderValue>,
    /// `:authority`.
    pub authority: Option<HeaderValue>,
    /// The listener's address.
    pub downstream_local: SocketAddr,
    /// The client's address.
    pub downstream_remote: SocketAddr,
    /// Response status.
    pub status: u16,
    /// Envoy's response flags.
    pub flags: &'static str,
    /// Envoy's response code details.
    pub details: &'static str,
    /// `x-envoy-upstream-service-time` of the response.
    pub upstream_service_time: Option<HeaderValue>,
    /// The endpoint of the last attempt.
    pub upstream_host: Option<SocketAddr>,
    /// The cluster.
    pub cluster: Option<Arc<str>>,
    /// The route's name.
    pub route: Option<Arc<str>>,
    /// Request body bytes.
    pub received: Received,
    /// The request's WasmPlugins (for `%WASM_PLUGINS%`), once they ran.
    pub plugins: Option<Rc<crate::wasm::filter::Chain>>,
}

impl Entry {
    /// An entry for a request that started at `started`, response fields still empty.
    pub fn new(
        started: Instant,
        downstream_local: SocketAddr,
        downstream_remote: SocketAddr,
        received: Received,
    ) -> Entry {
        Entry {
            start: SystemTime::now(),
            started,
            method: http::Method::GET,
            path: String::new(),
            protocol: "HTTP/1.1",
            xff: None,
            user_agent: None,
            request_id: None,
            authority: None,
            downstream_local,
            downstream_remote,
            status: 0,
            flags: "-",
            details: "-",
            upstream_service_time: None,
            upstream_host: None,
            cluster: None,
            route: None,
            received,
            plugins: None,
        }
    }

    /// Takes the request side from `req` (after the edge rules); routing replaces the path
    /// with its normalized form.
    pub fn request<B>(&mut self, req: &http::Request<B>) {
        let h = req.headers();
        self.method = req.method().clone();
        self.path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        self.protocol = crate::http::protocol_name(req.version());
        self.xff = h.get("x-forwarded-for").cloned();
        self.user_agent = h.get(http::header::USER_AGENT).cloned();
        self.request_id = h.get("x-request-id").cloned();
        self.authority = crate::router::authority_value(req)
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    }
}

fn header(out: &mut String, v: &Option<HeaderValue>) {
    match v.as_ref().and_then(|v| v.to_str().ok()) {
        Some(s) => out.push_str(s),
        None => out.push('-'),
    }
}

fn opt<T: std::fmt::Display>(out: &mut String, v: Option<T>) {
    match v {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push('-'),
    }
}

impl Entry {
    /// The line in `format` (`sent`: response body bytes).
    pub fn line(&self, format: &Format, sent: u64) -> String {
        let mut o = String::with_capacity(320);
        for part in &format.parts {
            match part {
                Part::Text(t) => o.push_str(t),
                Part::Op(op) => self.put(&mut o, *op, sent),
            }
        }
        o
    }

    fn put(&self, o: &mut String, op: Op, sent: u64) {
        match op {
            Op::StartTime => rfc3339_millis(o, self.start),
            Op::Method => o.push_str(self.method.as_str()),
            Op::Path => o.push_str(&self.path),
            Op::Protocol => o.push_str(self.protocol),
            Op::ResponseCode => {
                let _ = write!(o, "{}", self.status);
            }
            Op::ResponseFlags => o.push_str(self.flags),
            Op::ResponseCodeDetails => o.push_str(self.details),
            Op::BytesReceived => {
                let _ = write!(o, "{}", self.received.0.load(Ordering::Relaxed));
            }
            Op::BytesSent => {
                let _ = write!(o, "{sent}");
            }
            Op::Duration => {
                let _ = write!(o, "{}", self.started.elapsed().as_millis());
            }
            Op::UpstreamServiceTime => header(o, &self.upstream_service_time),
            Op::ForwardedFor => header(o, &self.xff),
            Op::UserAgent => header(o, &self.user_agent),
            Op::RequestId => header(o, &self.request_id),
            Op::Authority => header(o, &self.authority),
            Op::UpstreamHost => opt(o, self.upstream_host),
            Op::UpstreamCluster => opt(o, self.cluster.as_deref()),
            Op::DownstreamLocal => {
                let _ = write!(o, "{}", self.downstream_local);
            }
            Op::DownstreamRemote => {
                let _ = write!(o, "{}", self.downstream_remote);
            }
            Op::RouteName => opt(o, self.route.as_deref()),
            Op::Dash => o.push('-'),
            Op::WasmPlugins => match &self.plugins {
                Some(c) if !c.is_empty() => c.write_outcomes(o),
                _ => o.push('-'),
            },
        }
    }
}

/// `t` as `2026-12-01T08:50:55.123Z` (Envoy's default `START_TIME`).
fn rfc3339_millis(out: &mut String, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    );
}

/// Watches a response body and writes the request's line when it ends or is dropped.
pub struct Logged {
    entry: Option<Box<Entry>>,
    sent: u64,
    log: Arc<AccessLog>,
}

impl Logged {
    /// The response `body`, wrapped so the line of `entry` is written once, at its end.
    pub fn wrap(body: Body, entry: Entry, log: Arc<AccessLog>) -> Body {
        Box::pin(Watched::new(
            body,
            Logged {
                entry: Some(Box::new(entry)),
                sent: 0,
                log,
            },
        ))
    }
}

impl Watch for Logged {
    fn frame(&mut self, f: &Frame<Bytes>) {
        if let Some(d) = f.data_ref() {
            self.sent += d.len() as u64;
        }
    }

    fn end(&mut self, _complete: bool) {
        if let Some(e) = self.entry.take() {
            let line = e.line(&self.log.format, self.sent);
            self.log.write(line);
        }
    }
}

/// Counts the request body bytes that go by into a [`Received`].
pub struct Counted(Received);

impl Counted {
    /// The request `body`, wrapped to count into `received`.
    pub fn wrap(body: Body, received: Received) -> Body {
        Box::pin(Watched::new(body, Counted(received)))
    }
}

impl Watch for Counted {
    fn frame(&mut self, f: &Frame<Bytes>) {
        if let Some(d) = f.data_ref() {
            self.0 .0.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn start_time_is_rfc3339_with_millis() {
        let mut s = String::new();
        rfc3339_millis(
            &mut s,
            UNIX_EPOCH + Duration::from_millis(1_796_113_855_123),
        );
        assert_eq!(s, "2026-12-01T08:30:55.123Z");
        s.clear();
        rfc3339_millis(&mut s, UNIX_EPOCH + Duration::from_secs(951_782_400));
        assert_eq!(s, "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn a_line_has_istios_default_fields() {
        let e = Entry {
            start: UNIX_EPOCH,
            started: Instant::now(),
            method: http::Method::GET,
            path: "/a?b=1".into(),
            protocol: "HTTP/1.1",
            xff: Some(HeaderValue::from_static("10.0.0.1,127.0.0.1")),
            user_agent: None,
            request_id: Some(HeaderValue::from_static("id-1")),
            authority: Some(HeaderValue::from_static("app.example.com")),
            downstream_local: "127.0.0.1:8080".parse().expect("addr"),
            downstream_remote: "127.0.0.1:5555".parse().expect("addr"),
            status: 503,
            flags: "UF,URX",
            details: "upstream_reset_before_response_started{remote_connection_failure}",
            upstream_service_time: None,
            upstream_host: Some("127.0.0.1:9000".parse().expect("addr")),
            cluster: Some(Arc::from("outbound|80||svc.test.svc.cluster.local")),
            route: Some(Arc::from("default")),
            received: Received::default(),
            plugins: None,
        };
        let line = e.line(
            &Format::parse(ISTIO_FORMAT).expect("Istio's format parses"),
            91,
        );
        assert!(line.starts_with("[1970-01-01T00:00:00.000Z] \"GET /a?b=1 HTTP/1.1\" 503 UF,URX upstream_reset_before_response_started{remote_connection_failure} - \"-\" 0 91 "), "{line}");
        assert!(line.ends_with(" - \"10.0.0.1,127.0.0.1\" \"-\" \"id-1\" \"app.example.com\" \"127.0.0.1:9000\" outbound|80||svc.test.svc.cluster.local - 127.0.0.1:8080 127.0.0.1:5555 - default\n"), "{line}");
    }

    #[test]
    fn formats_parse_or_say_what_is_wrong() {
        let f = Format::parse("%RESPONSE_CODE% %WASM_PLUGINS% %REQ(user-agent)%").expect("parses");
        assert!(f.wasm_plugins);
        assert!(!Format::istio().wasm_plugins);
        assert_eq!(
            Format::istio().parts.len(),
            Format::parse(ISTIO_FORMAT).expect("p").parts.len()
        );
        // A line always ends.
        assert_eq!(f.parts.last(), Some(&Part::Text("\n".into())));
        for (bad, says) in [
            ("%NOPE%", "does not log %NOPE%"),
            ("%REQ(x-custom)%", "does not log %REQ(x-custom)%"),
            ("50% off", "unclosed"),
        ] {
            let e = Format::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
