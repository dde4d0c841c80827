//! Validation of `WasmPlugin`: source URL and digest, attachment, config, VM environment,
//! match.

use std::collections::HashSet;

use super::common::{check_policy_targets, check_port_range};
use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::wasm_plugin::EnvValueSource;
use crate::model::WasmPlugin;

/// URL schemes a WasmPlugin may use (none means a plain path or `host/repo` reference).
pub const SCHEMES: [&str; 4] = ["http", "https", "oci", "file"];

/// Percent escapes are well formed and nothing is whitespace or a control character (what
/// Go's `url.ParseRequestURI`, behind Istio's CEL `isURL`, insists on).
fn url_chars_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |x: u8| x.is_ascii_hexdigit();
                if !(i + 2 < b.len() && hex(b[i + 1]) && hex(b[i + 2])) {
                    return false;
                }
                i += 3;
                continue;
            }
            c if c.is_ascii_control() || c == b' ' => return false,
            _ => {}
        }
        i += 1;
    }
    true
}

/// Validates a `WasmPlugin` spec.
pub fn validate(spec: &WasmPlugin, ctx: &Ctx<'_>, at: &FieldPath, r: &mut Report) {
    check_policy_targets(
        spec.selector.as_ref(),
        spec.target_ref.as_ref(),
        &spec.target_refs,
        ctx.namespace,
        at,
        r,
    );
    let url = at.field("url");
    if spec.url.is_empty() {
        r.error(
            &url,
            "Required value: url must not be empty (at least 1 chars long)",
        );
    } else {
        let scheme = spec
            .url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase());
        let scheme_ok = scheme.as_deref().is_none_or(|s| SCHEMES.contains(&s));
        if !scheme_ok || !url_chars_ok(&spec.url) || spec.url.starts_with('#') {
            r.error(&url, "url must have schema one of [http, https, file, oci]");
        }
    }
    let sha_ok = spec.sha256.is_empty()
        || (spec.sha256.len() == 64
            && spec
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    if !sha_ok {
        r.error(
            &at.field("sha256"),
            "sha256 should match '^(|[a-f0-9]{64})$'",
        );
    }
    if spec.image_pull_secret.as_deref() == Some("") {
        r.error(
            &at.field("imagePullSecret"),
            "imagePullSecret must not be empty when set (at least 1 chars long)",
        );
    }
    if spec.plugin_name.as_deref() == Some("") {
        r.error(
            &at.field("pluginName"),
            "pluginName must not be empty when set (at least 1 chars long)",
        );
    }
    if let Some(cfg) = &spec.plugin_config {
        let kind = match cfg {
            serde_json::Value::Object(_) | serde_json::Value::Null => None,
            serde_json::Value::Bool(_) => Some("boolean"),
            serde_json::Value::Number(_) => Some("number"),
            serde_json::Value::String(_) => Some("string"),
            serde_json::Value::Array(_) => Some("array"),
        };
        if let Some(kind) = kind {
            r.error(
                &at.field("pluginConfig"),
                format!("pluginConfig in body must be of type object: {kind:?}"),
            );
        }
    }
    if let Some(vm) = &spec.vm_config {
        let mut seen = HashSet::new();
        for (i, e) in vm.env.iter().enumerate() {
            let here = at.field("vmConfig.env").index(i);
            if e.name.is_empty() {
                r.error(
                    &here.field("name"),
                    "Required value: env name must not be empty",
                );
            } else if !seen.insert(e.name.as_str()) {
                r.error(
                    &here.field("name"),
                    format!("Duplicate value: env name {:?}", e.name),
                );
            }
            if e.value_from == EnvValueSource::Host && !e.value.is_empty() {
                r.error(
                    &here.field("value"),
                    "value may only be set when valueFrom is INLINE",
                );
            }
        }
    }
    for (i, m) in spec.match_.iter().enumerate() {
        for (j, p) in m.ports.iter().enumerate() {
            let here = at
                .field("match")
                .index(i)
                .field("ports")
                .index(j)
                .field("number");
            if p.number == 0 {
                r.error(&here, "Required value: port number is required");
            } else {
                check_port_range(p.number, &here, r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::{errors_of, has};

    #[test]
    fn url_digest_and_names() {
        assert!(has(
            &errors_of("WasmPlugin", "url: ''"),
            "spec.url",
            "Required value"
        ));
        assert!(has(
            &errors_of("WasmPlugin", "url: 'fake://example.com'"),
            "spec.url",
            "schema one of"
        ));
        assert!(has(
            &errors_of("WasmPlugin", "url: '#%blah$#@'"),
            "spec.url",
            "schema one of"
        ));
        for ok in [
            "oci://ghcr.io/a/b:1",
            "file:///opt/p.wasm",
            "https://x/p.wasm",
            "ghcr.io/a/b:1",
            "/opt/p.wasm",
        ] {
            assert!(
                errors_of("WasmPlugin", &format!("url: '{ok}'")).is_empty(),
                "{ok}"
            );
        }
        let e = errors_of(
            "WasmPlugin",
            "url: oci://a/b\nsha256: foo\nimagePullSecret: ''\npluginName: ''",
        );
        assert!(has(&e, "spec.sha256", "should match"));
        assert!(has(&e, "spec.imagePullSecret", "at least 1 chars"));
        assert!(has(&e, "spec.pluginName", "at least 1 chars"));
        assert!(has(
            &errors_of("WasmPlugin", "url: oci://a/b\npluginConfig: [1]"),
            "spec.pluginConfig",
            "must be of type object"
        ));
        assert!(errors_of("WasmPlugin", "url: oci://a/b\npluginConfig: {a: [1]}").is_empty());
    }

    #[test]
    fn env_match_and_selector() {
        let e = errors_of("WasmPlugin", "url: oci://a/b\nvmConfig:\n  env:\n  - {name: A, value: x}\n  - {name: A}\n  - {value: y}\n  - {name: B, valueFrom: HOST, value: z}\nmatch: [{ports: [{}, {number: 70000}]}]\nselector: {matchLabels: {'*': v}}");
        assert!(has(&e, "spec.vmConfig.env[1].name", "Duplicate value"));
        assert!(has(&e, "spec.vmConfig.env[2].name", "Required value"));
        assert!(has(
            &e,
            "spec.vmConfig.env[3].value",
            "only be set when valueFrom is INLINE"
        ));
        assert!(has(&e, "spec.match[0].ports[0].number", "Required value"));
        assert!(has(&e, "spec.match[0].ports[1].number", "1-65535"));
        assert!(has(
            &e,
            "spec.selector.matchLabels[*]",
            "wildcard not allowed in label key match"
        ));
        let e = errors_of(
            "WasmPlugin",
            "url: oci://a/b\nselector: {matchLabels: {a: b}}\ntargetRef: {kind: Gateway, name: g}",
        );
        assert!(has(&e, "spec", "only one of targetRefs or selector"));
    }
}
