//! The plugin supply chain against real peers: a real OCI registry (`docker-registry`, with
//! htpasswd auth where needed), images pushed by meshgate's own `plugin push`, by skopeo and by
//! oras, a real TLS server for `https://` modules, and the real gateway binary. Every process
//! listens on loopback only; every wait is bounded.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::registry::{self, Registry};
use support::{fixtures, plugins, Client, Gateway, Upstream};

/// Every host routed to the echo upstream, with two named routes: `scoped` (`/scoped…`) and
/// `main`; `plugins` (YAML documents) appended.
fn config(up: &Upstream, plugins: &str) -> String {
    let mut y = fixtures::base(&[("svc.test.svc.cluster.local", &[(up, "v1")], "HTTP")]);
    y.push_str(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: test}\n\
         spec:\n  hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n\
         \x20 - name: scoped\n    match: [{uri: {prefix: /scoped}}]\n    route: [{destination: {host: svc.test.svc.cluster.local}}]\n\
         \x20 - name: main\n    route: [{destination: {host: svc.test.svc.cluster.local}}]\n",
    );
    y.push_str(plugins);
    y
}

/// A WasmPlugin in `istio-system` fetching `url`, adding response header `x-from: NAME-TAG`
/// (the add-headers test plugin), with extra spec lines.
fn wasm_plugin(name: &str, url: &str, tag: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: {name}, namespace: istio-system}}\n\
         spec:\n  url: {url}\n  pluginConfig: {{response: {{x-from: {name}-{tag}}}}}\n{spec}"
    )
}

/// The same, limited to the route named `route`.
fn scoped_plugin(name: &str, url: &str, tag: &str, route: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: {name}, namespace: istio-system, annotations: {{plugins.meshgate.io/routes: {route}}}}}\n\
         spec:\n  url: {url}\n  pluginConfig: {{response: {{x-from: {name}-{tag}}}}}\n{spec}"
    )
}

fn plugin_dump(gw: &Gateway, name: &str) -> Value {
    let dump = Client::http1(gw.admin).get("admin", "/config_dump").json();
    dump["plugins"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["name"] == format!("istio-system/{name}"))
                .cloned()
        })
        .unwrap_or_else(|| panic!("no plugin {name} in {dump}"))
}

/// Polls `/config_dump` until plugin `name`'s state satisfies `done` (bounded).
fn wait_for(gw: &Gateway, name: &str, within: Duration, done: impl Fn(&str) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let p = plugin_dump(gw, name);
        if done(p["state"].as_str().unwrap_or_default()) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "plugin {name} never reached the state wanted: {p}\n{}",
            gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn loaded(gw: &Gateway, name: &str) -> Value {
    wait_for(gw, name, Duration::from_secs(20), |s| s == "loaded")
}

fn failed(gw: &Gateway, name: &str) -> Value {
    wait_for(gw, name, Duration::from_secs(20), |s| {
        s.starts_with("failed")
    })
}

fn stats(gw: &Gateway) -> String {
    String::from_utf8_lossy(
        &Client::http1(gw.admin)
            .get("admin", "/stats/prometheus")
            .body,
    )
    .into_owned()
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `x-from` on a response to `path`.
fn x_from(gw: &Gateway, path: &str) -> (u16, Option<String>) {
    let r = Client::http1(gw.port).get("app.example.com", path);
    (r.status.as_u16(), r.header("x-from").map(str::to_owned))
}

/// Gateway arguments for `reg`: plain HTTP to it, a module cache in `cache`, a quick retry.
fn args<'a>(host: &'a str, cache: &'a Path) -> Vec<&'a str> {
    vec![
        "--insecure-registry",
        host,
        "--wasm-cache",
        cache.to_str().expect("utf-8 path"),
        "--wasm-pull-retry-period",
        "1s",
    ]
}

#[test]
fn tag_and_digest_pulls_of_the_wasm_artifact_serve_requests() {
    let (Some(wasm), Some(reg)) = (plugins::path("add-headers"), Registry::start()) else {
        return;
    };
    let digest = reg.push(&wasm, "plugins/add:v1");
    assert!(digest.starts_with("sha256:"), "{digest}");
    let up = Upstream::echo("up");
    let cache = tempfile::tempdir().expect("cache dir");
    let host = reg.host();
    let url = format!("oci://{host}/plugins/add:v1");
    let gw = Gateway::start_with(
        &config(&up, &wasm_plugin("add", &url, "v1", "")),
        &args(&host, cache.path()),
    );
    let p = loaded(&gw, "add");
    assert_eq!(p["pull"]["layout"], "wasm-oci-artifact", "{p}");
    assert_eq!(p["pull"]["manifestDigest"], digest.as_str(), "{p}");
    assert_eq!(p["pull"]["fromCache"], false, "{p}");
    let module_sha = sha2_of(&wasm);
    assert_eq!(p["moduleSha256"], module_sha.as_str());
    assert_eq!(x_from(&gw, "/"), (200, Some("add-v1".to_owned())));
    let s = stats(&gw);
    assert_eq!(
        metric(
            &s,
            "meshgate_wasm_plugin_pulls_total{plugin=\"istio-system/add\",result=\"success\"}"
        ),
        Some(1.0),
        "{s}"
    );
    assert_eq!(
        metric(&s, "meshgate_wasm_module_cache_misses_total"),
        Some(1.0),
        "{s}"
    );
    assert!(metric(&s, "meshgate_wasm_module_cache_bytes").unwrap_or(0.0) > 100_000.0);

    // By digest (a new WasmPlugin version; the module is the same and comes from the cache).
    let by_digest = format!("oci://{host}/plugins/add@{digest}");
    gw.rewrite_config(&config(&up, &wasm_plugin("add", &by_digest, "digest", "")));
    let deadline = Instant::now() + Duration::from_secs(20);
    while x_from(&gw, "/").1.as_deref() != Some("add-digest") {
        assert!(
            Instant::now() < deadline,
            "digest reference never served\n{}",
            gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let p = loaded(&gw, "add");
    assert_eq!(p["pull"]["manifestDigest"], digest.as_str(), "{p}");

    // The CLI pulls the same by tag and by digest.
    let out_file = cache.path().join("pulled.wasm");
    for reference in [&url, &by_digest] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
            .args([
                "plugin",
                "pull",
                reference,
                "--insecure-registry",
                &host,
                "-o",
            ])
            .arg(&out_file)
            .output()
            .expect("plugin pull runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(&format!("sha256:{module_sha}")), "{stdout}");
        assert!(stdout.contains("layout wasm-oci-artifact"), "{stdout}");
        assert_eq!(
            std::fs::read(&out_file).expect("pulled"),
            std::fs::read(&wasm).expect("wasm")
        );
    }
}

/// A file's sha256 in lower-case hex.
fn sha2_of(path: &Path) -> String {
    meshgate_wasm::hex(&meshgate_pull::sha256(
        &std::fs::read(path).expect("read module"),
    ))
}

#[test]
fn compat_images_and_application_wasm_layers_load() {
    let (Some(wasm), Some(reg)) = (plugins::path("add-headers"), Registry::start()) else {
        return;
    };
    let Some(compat_digest) = reg.push_compat(&wasm, "plugins/compat", "v1") else {
        return;
    };
    let Some(()) = reg.push_application_wasm(&wasm, "plugins/pkg", "v1") else {
        return;
    };
    let up = Upstream::echo("up");
    let cache = tempfile::tempdir().expect("cache dir");
    let host = reg.host();
    let cfg = config(
        &up,
        &format!(
            "{}{}",
            scoped_plugin(
                "compat",
                &format!("oci://{host}/plugins/compat:v1"),
                "v1",
                "scoped",
                ""
            ),
            scoped_plugin("pkg", &format!("{host}/plugins/pkg:v1"), "v1", "main", "")
        ),
    );
    let gw = Gateway::start_with(&cfg, &args(&host, cache.path()));
    let compat = loaded(&gw, "compat");
    assert_eq!(
        compat["pull"]["layout"], "image-tar-plugin.wasm",
        "{compat}"
    );
    assert_eq!(compat["pull"]["manifestDigest"], compat_digest.as_str());
    let pkg = loaded(&gw, "pkg");
    assert_eq!(pkg["pull"]["layout"], "application/wasm", "{pkg}");
    assert_eq!(
        x_from(&gw, "/scoped/x"),
        (200, Some("compat-v1".to_owned()))
    );
    assert_eq!(x_from(&gw, "/other"), (200, Some("pkg-v1".to_owned())));
}

#[test]
fn a_manifest_without_a_wasm_layer_is_rejected_naming_its_media_types() {
    let Some(reg) = Registry::start() else { return };
    let Some(()) = ({
        // A text file pushed as an artifact: no module anywhere.
        let f = reg.scratch().join("notes.txt");
        std::fs::write(&f, "not a module").expect("write");
        reg.push_application_wasm_like(&f, "text/plain")
    }) else {
        return;
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args([
            "plugin",
            "pull",
            &format!("oci://{}/plugins/text:v1", reg.host()),
        ])
        .args(["--insecure-registry", &reg.host(), "-o"])
        .arg(reg.scratch().join("out.wasm"))
        .output()
        .expect("plugin pull runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no Wasm module") && err.contains("text/plain"),
        "{err}"
    );
}

#[test]
fn authenticated_pulls_with_pull_secrets_and_clear_errors_without() {
    let (Some(wasm), Some(reg)) = (
        plugins::path("add-headers"),
        Registry::start_with_auth("meshgate", "s3cret"),
    ) else {
        return;
    };
    // One repository per plugin: a module cached for one WasmPlugin is used by any other
    // naming the same reference (as in Istio), which would hide the credential checks.
    for repo in ["plugins/add:v1", "plugins/anon:v1", "plugins/wrong:v1"] {
        reg.push(&wasm, repo);
    }
    let secrets = tempfile::tempdir().expect("secrets");
    let host = reg.host();
    let write_secret = |dir: PathBuf, user: &str, password: &str| {
        std::fs::create_dir_all(&dir).expect("mkdir");
        let auth = base64(&format!("{user}:{password}"));
        std::fs::write(
            dir.join(".dockerconfigjson"),
            format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#),
        )
        .expect("write secret");
    };
    // The Kubernetes mounted-Secret layout, and the flat one.
    write_secret(
        secrets.path().join("istio-system/regcred"),
        "meshgate",
        "s3cret",
    );
    write_secret(secrets.path().join("badcred"), "meshgate", "wrong");
    let url = format!("oci://{host}/plugins/add:v1");
    let up = Upstream::echo("up");
    let cache = tempfile::tempdir().expect("cache dir");
    let cfg = config(
        &up,
        &format!(
            "{}{}{}",
            wasm_plugin("good", &url, "v1", "  imagePullSecret: regcred\n"),
            scoped_plugin(
                "anon",
                &url.replace("/add:", "/anon:"),
                "v1",
                "main",
                "  failStrategy: FAIL_OPEN\n"
            ),
            scoped_plugin(
                "wrong",
                &url.replace("/add:", "/wrong:"),
                "v1",
                "scoped",
                "  imagePullSecret: badcred\n"
            ),
        ),
    );
    let mut a = args(&host, cache.path());
    let secrets_dir = secrets.path().to_str().expect("utf-8").to_owned();
    a.extend(["--image-pull-secrets", &secrets_dir]);
    let gw = Gateway::start_with(&cfg, &a);
    loaded(&gw, "good");
    let anon = failed(&gw, "anon");
    let anon_err = anon["state"].as_str().unwrap_or_default();
    assert!(
        anon_err.contains("no credentials configured") && anon_err.contains("401"),
        "{anon}"
    );
    let wrong = failed(&gw, "wrong");
    let wrong_err = wrong["state"].as_str().unwrap_or_default();
    assert!(
        wrong_err.contains("credentials rejected") && wrong_err.contains("401"),
        "{wrong}"
    );
    assert_eq!(
        wrong["pull"]["lastError"].as_str(),
        Some(&wrong_err["failed: ".len()..])
    );
    // FAIL_OPEN: the anonymous plugin is skipped on `main`; `good` still runs there.
    assert_eq!(x_from(&gw, "/"), (200, Some("good-v1".to_owned())));
    // FAIL_CLOSE (the default): the wrongly authenticated plugin stops `scoped` requests.
    assert_eq!(x_from(&gw, "/scoped").0, 503);
    let log = gw.stderr();
    assert!(
        log.contains("WasmPlugin module fetch failed") && log.contains("credentials rejected"),
        "{log}"
    );
}

fn base64(text: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = text.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (u32::from(c) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn a_dead_registry_is_retried_requests_follow_fail_strategy_and_it_recovers() {
    let (Some(wasm), Some(mut reg)) = (plugins::path("add-headers"), Registry::start()) else {
        return;
    };
    reg.push(&wasm, "plugins/add:v1");
    reg.stop();
    let host = reg.host();
    let url = format!("oci://{host}/plugins/add:v1");
    let up = Upstream::echo("up");
    let cache = tempfile::tempdir().expect("cache dir");
    let cfg = config(
        &up,
        &format!(
            "{}{}",
            scoped_plugin("closed", &url, "v1", "scoped", ""),
            scoped_plugin("open", &url, "v1", "main", "  failStrategy: FAIL_OPEN\n"),
        ),
    );
    let started = Instant::now();
    let gw = Gateway::start_with(&cfg, &args(&host, cache.path()));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a dead registry must not hold up readiness"
    );
    let closed = failed(&gw, "closed");
    assert!(
        closed["state"]
            .as_str()
            .unwrap_or_default()
            .contains("after 3 attempts"),
        "{closed}"
    );
    assert_eq!(
        x_from(&gw, "/scoped").0,
        503,
        "FAIL_CLOSE while the module is missing"
    );
    assert_eq!(
        x_from(&gw, "/"),
        (200, None),
        "FAIL_OPEN skips the missing plugin"
    );
    assert!(gw.stderr().contains("retrying"), "{}", gw.stderr());
    // The registry comes back: the next attempt (1 s later) loads both.
    reg.resume();
    loaded(&gw, "closed");
    loaded(&gw, "open");
    assert_eq!(x_from(&gw, "/scoped"), (200, Some("closed-v1".to_owned())));
    assert_eq!(x_from(&gw, "/"), (200, Some("open-v1".to_owned())));
}

#[test]
fn while_a_module_is_pending_fail_close_answers_503_and_fail_open_skips() {
    let Some(_wasm) = plugins::path("add-headers") else {
        return;
    };
    // A "registry" that accepts connections and never answers: the fetch stays pending.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let host = format!("127.0.0.1:{}", hole.local_addr().expect("addr").port());
    let url = format!("oci://{host}/plugins/add:v1");
    let up = Upstream::echo("up");
    let cache = tempfile::tempdir().expect("cache dir");
    let cfg = config(
        &up,
        &format!(
            "{}{}",
            scoped_plugin(
                "closed",
                &url,
                "v1",
                "scoped",
                "  failStrategy: FAIL_CLOSE\n"
            ),
            scoped_plugin("open", &url, "v1", "main", "  failStrategy: FAIL_OPEN\n"),
        ),
    );
    let started = Instant::now();
    let gw = Gateway::start_with(&cfg, &args(&host, cache.path()));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "readiness waits for no pull"
    );
    let p = plugin_dump(&gw, "closed");
    assert_eq!(p["state"], "pending", "{p}");
    assert_eq!(p["pull"]["state"], "pending", "{p}");
    assert_eq!(x_from(&gw, "/scoped").0, 503);
    assert_eq!(x_from(&gw, "/"), (200, None));
    let s = stats(&gw);
    assert_eq!(
        metric(
            &s,
            "meshgate_wasm_plugin_pending{plugin=\"istio-system/closed\"}"
        ),
        Some(1.0),
        "{s}"
    );
    drop(hole);
}

#[test]
fn a_corrupt_blob_is_rejected() {
    let (Some(wasm), Some(reg)) = (plugins::path("add-headers"), Registry::start()) else {
        return;
    };
    reg.push(&wasm, "plugins/add:v1");
    let layer = registry::layer_digest(&reg, "plugins/add:v1");
    let blob = reg.blob_path(&layer);
    let mut bytes = std::fs::read(&blob).expect("blob in the registry's storage");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, &bytes).expect("corrupt the blob");
    let host = reg.host();
    let up = Upstream::echo("up");
    let cache = tempfile::tempdir().expect("cache dir");
    let gw = Gateway::start_with(
        &config(
            &up,
            &wasm_plugin(
                "add",
                &format!("oci://{host}/plugins/add:v1"),
                "v1",
                "  failStrategy: FAIL_OPEN\n",
            ),
        ),
        &args(&host, cache.path()),
    );
    let p = failed(&gw, "add");
    let state = p["state"].as_str().unwrap_or_default();
    assert!(
        state.contains("digest mismatch") && state.contains(&layer),
        "{p}"
    );
    assert_eq!(x_from(&gw, "/"), (200, None), "a corrupt module never runs");
    // Nothing corrupt reached the cache.
    let s = stats(&gw);
    assert_eq!(
        metric(&s, "meshgate_wasm_module_cache_entries"),
        Some(0.0),
        "{s}"
    );
}

#[test]
fn a_sha256_pin_is_checked_against_the_module_or_the_manifest() {
    let (Some(wasm), Some(reg)) = (plugins::path("add-headers"), Registry::start()) else {
        return;
    };
    let manifest = reg.push(&wasm, "plugins/add:v1");
    let host = reg.host();
    let url = format!("oci://{host}/plugins/add:v1");
    let module_sha = sha2_of(&wasm);
    let up = Upstream::echo("up");
    let cache = tempfile::tempdir().expect("cache dir");
    let cfg = config(
        &up,
        &format!(
            "{}{}{}",
            scoped_plugin(
                "bad",
                &url,
                "v1",
                "scoped",
                &format!("  failStrategy: FAIL_OPEN\n  sha256: {}\n", "ab".repeat(32))
            ),
            scoped_plugin(
                "module",
                &url,
                "v1",
                "main",
                &format!("  sha256: {module_sha}\n")
            ),
            scoped_plugin(
                "manifest",
                &url,
                "v1",
                "none",
                &format!("  sha256: {}\n", &manifest["sha256:".len()..])
            ),
        ),
    );
    let gw = Gateway::start_with(&cfg, &args(&host, cache.path()));
    let bad = failed(&gw, "bad");
    assert!(
        bad["state"]
            .as_str()
            .unwrap_or_default()
            .contains("sha256 mismatch"),
        "{bad}"
    );
    loaded(&gw, "module");
    loaded(&gw, "manifest");
    assert_eq!(x_from(&gw, "/scoped"), (200, None));
    assert_eq!(x_from(&gw, "/"), (200, Some("module-v1".to_owned())));
}

#[test]
fn a_warm_cache_restarts_without_the_registry() {
    let (Some(wasm), Some(mut reg)) = (plugins::path("add-headers"), Registry::start()) else {
        return;
    };
    reg.push(&wasm, "plugins/add:v1");
    let host = reg.host();
    let up = Upstream::echo("up");
    let cache = tempfile::tempdir().expect("cache dir");
    let cfg = config(
        &up,
        &wasm_plugin("add", &format!("oci://{host}/plugins/add:v1"), "v1", ""),
    );
    let mut gw = Gateway::start_with(&cfg, &args(&host, cache.path()));
    let started = Instant::now();
    loaded(&gw, "add");
    eprintln!("pulled and loaded in {:?}", started.elapsed());

    assert!(gw.terminate().is_some_and(|s| s.success()));
    drop(gw);
    reg.stop();
    let started = Instant::now();
    let gw = Gateway::start_with(&cfg, &args(&host, cache.path()));
    let p = plugin_dump(&gw, "add");
    eprintln!(
        "restarted with a warm cache, ready in {:?}",
        started.elapsed()
    );
    assert_eq!(
        p["state"],
        "loaded",
        "loaded at the swap, from the cache: {p}\n{}",
        gw.stderr()
    );
    assert_eq!(p["pull"]["fromCache"], true, "{p}");
    assert_eq!(x_from(&gw, "/"), (200, Some("add-v1".to_owned())));
    let s = stats(&gw);
    assert_eq!(
        metric(
            &s,
            "meshgate_wasm_plugin_pulls_total{plugin=\"istio-system/add\",result=\"cache_hit\"}"
        ),
        Some(1.0),
        "{s}"
    );
    assert_eq!(
        metric(&s, "meshgate_wasm_module_cache_hits_total"),
        Some(1.0),
        "{s}"
    );
}

#[test]
fn an_update_to_a_missing_tag_keeps_the_last_known_good_version_serving() {
    let (Some(wasm), Some(reg)) = (plugins::path("add-headers"), Registry::start()) else {
        return;
    };
    reg.push(&wasm, "plugins/add:v1");
    let host = reg.host();
    let up = Upstream::echo("up");
    let cache = tempfile::tempdir().expect("cache dir");
    let gw = Gateway::start_with(
        &config(
            &up,
            &wasm_plugin("add", &format!("oci://{host}/plugins/add:v1"), "v1", ""),
        ),
        &args(&host, cache.path()),
    );
    loaded(&gw, "add");
    assert_eq!(x_from(&gw, "/"), (200, Some("add-v1".to_owned())));
    gw.rewrite_config(&config(
        &up,
        &wasm_plugin(
            "add",
            &format!("oci://{host}/plugins/add:missing"),
            "v2",
            "",
        ),
    ));
    let p = failed(&gw, "add");
    assert!(
        p["state"]
            .as_str()
            .unwrap_or_default()
            .contains("manifest unknown"),
        "{p}"
    );
    assert_eq!(p["pull"]["servingLastKnownGood"], true, "{p}");
    assert!(p["pull"]["servingSha256"].is_string(), "{p}");
    // The previous version (its config included) keeps serving, under FAIL_CLOSE.
    for _ in 0..5 {
        assert_eq!(x_from(&gw, "/"), (200, Some("add-v1".to_owned())));
    }
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args([
            "proxy-config",
            "plugins",
            "--admin",
            &format!("127.0.0.1:{}", gw.admin),
        ])
        .output()
        .expect("proxy-config runs");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("serving last-known-good"), "{text}");
}

/// A TLS server on loopback with a self-signed certificate for 127.0.0.1, answering every
/// request with `body`; returns its port and the certificate (PEM).
fn tls_server(body: Vec<u8>) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    use std::sync::Arc;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    let pem = cert.cert.pem();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).expect("key");
    let config = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .expect("server config"),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let config = config.clone();
            let body = body.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/wasm\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes());
                let _ = tls.write_all(&body);
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (port, pem)
}

#[test]
fn https_modules_are_fetched_with_a_trusted_ca_and_refused_without() {
    let Some(wasm) = plugins::path("add-headers") else {
        return;
    };
    let (port, pem) = tls_server(std::fs::read(&wasm).expect("module"));
    let dir = tempfile::tempdir().expect("dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).expect("write CA");
    let url = format!("https://127.0.0.1:{port}/add.wasm");
    let up = Upstream::echo("up");
    let pinned = format!("  sha256: {}\n  failStrategy: FAIL_OPEN\n", sha2_of(&wasm));
    let cfg = config(&up, &wasm_plugin("add", &url, "tls", &pinned));
    let cache = dir.path().join("cache");
    let cache_s = cache.to_str().expect("utf-8");
    let ca_s = ca.to_str().expect("utf-8");
    let gw = Gateway::start_with(
        &cfg,
        &[
            "--wasm-cache",
            cache_s,
            "--wasm-ca-file",
            ca_s,
            "--wasm-pull-retry-period",
            "1s",
        ],
    );
    let p = loaded(&gw, "add");
    assert_eq!(p["pull"]["source"], url.as_str(), "{p}");
    assert_eq!(x_from(&gw, "/"), (200, Some("add-tls".to_owned())));
    drop(gw);
    // Without the CA the certificate is not trusted.
    let other_cache = dir.path().join("cache2");
    let gw = Gateway::start_with(
        &cfg,
        &[
            "--wasm-cache",
            other_cache.to_str().expect("utf-8"),
            "--wasm-pull-retry-period",
            "1s",
        ],
    );
    let p = failed(&gw, "add");
    let state = p["state"].as_str().unwrap_or_default().to_lowercase();
    assert!(state.contains("certificate"), "{p}");
    assert_eq!(x_from(&gw, "/"), (200, None));
    drop(gw);
    // A URL without a `sha256` pin is refused before anything is fetched.
    let unpinned = config(
        &up,
        &wasm_plugin("add", &url, "tls", "  failStrategy: FAIL_OPEN\n"),
    );
    let gw = Gateway::start_with(
        &unpinned,
        &["--wasm-ca-file", ca_s, "--wasm-cache", cache_s],
    );
    let p = failed(&gw, "add");
    let state = p["state"].as_str().unwrap_or_default();
    assert!(state.contains("needs `sha256`"), "{p}");
    assert_eq!(x_from(&gw, "/"), (200, None));
}
