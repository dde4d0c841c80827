//! The README's run command: `meshgate demo` starts with no setup, and every curl line it
//! prints answers (run with the real curl).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

#[test]
fn demo_curl_lines_answer() {
    if Command::new("curl").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "curl is missing in CI");
        eprintln!("SKIPPED: curl not installed");
        return;
    }
    let port = support::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .arg("demo")
        .args(["--port", &port.to_string(), "--concurrency", "1"])
        .args([
            "--admin-addr",
            &format!("127.0.0.1:{}", support::free_port()),
        ])
        .args([
            "--readiness-addr",
            &format!("127.0.0.1:{}", support::free_port()),
        ])
        .args([
            "--stats-addr",
            &format!("127.0.0.1:{}", support::free_port()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("demo starts");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut curls = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line)
                if line.trim_start().starts_with("curl ")
                    && line.contains("coffee.example.com") =>
            {
                curls.push(line.trim().to_owned())
            }
            Ok(line) if line.starts_with("Admin:") => break,
            _ => {}
        }
    }
    assert!(curls.len() >= 6, "demo printed {curls:?}");
    let mut seen_services = std::collections::BTreeSet::new();
    for c in &curls {
        let out = Command::new("sh")
            .args(["-c", &format!("{c} --max-time 10 -w '\\n%{{http_code}}'")])
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let code = text.lines().last().unwrap_or("");
        assert!(["200", "302"].contains(&code), "{c} -> {text}");
        if let Some(start) = text.find("\"service\":\"") {
            let rest = &text[start + 11..];
            seen_services.insert(rest[..rest.find('"').unwrap_or(0)].to_owned());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    for s in ["order", "payment", "inventory", "customer"] {
        assert!(
            seen_services.contains(s),
            "no answer from {s}: {seen_services:?}"
        );
    }
}
