//! WasmPlugin metrics on `/stats/prometheus`: the metrics plugins define, under the names they
//! gave (as Envoy shows its `wasmcustom.*` stats), and meshgate's own per-plugin telemetry —
//! load state, VM starts, traps, deadline hits, memory-cap hits, recycles, VM memory and the
//! latency of each callback.

use std::fmt::Write as _;

use meshgate_wasm::{MetricKind, PluginStats, HISTOGRAM_BOUNDS, LATENCY_BOUNDS_NS};

use super::Runtime;
use crate::live::Live;

/// A per-plugin counter: its name and how to read it.
type Counter = (&'static str, fn(&PluginStats) -> u64);

/// A Prometheus-safe metric name (Envoy's sanitizing: other characters become `_`).
fn sanitize(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| match c {
            'a'..='z' | 'A'..='Z' | '_' | ':' => c,
            '0'..='9' if i > 0 => c,
            _ => '_',
        })
        .collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends the wasm families to `out`.
pub fn render(out: &mut String, runtime: &Runtime, live: &Live) {
    if live.plugins.is_empty() && runtime.engine_if_started().is_none() {
        return;
    }
    if let Some(engine) = runtime.engine_if_started() {
        for m in engine.metrics.all() {
            let name = sanitize(&m.name);
            match m.kind {
                MetricKind::Counter => {
                    let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", m.value());
                }
                MetricKind::Gauge => {
                    let _ = writeln!(out, "# TYPE {name} gauge\n{name} {}", m.value());
                }
                MetricKind::Histogram => {
                    let (counts, sum) = m.histogram();
                    let _ = writeln!(out, "# TYPE {name} histogram");
                    histogram(out, &name, "", HISTOGRAM_BOUNDS.iter(), &counts, sum);
                }
            }
        }
        let (hits, misses) = engine.cache_stats();
        let _ = writeln!(
            out,
            "# TYPE meshgate_wasm_cache_hits_total counter\nmeshgate_wasm_cache_hits_total {hits}\n\
             # TYPE meshgate_wasm_cache_misses_total counter\nmeshgate_wasm_cache_misses_total {misses}"
        );
    }
    let _ = writeln!(out, "# TYPE meshgate_wasm_plugin_loaded gauge");
    for p in &live.plugins {
        let _ = writeln!(
            out,
            "meshgate_wasm_plugin_loaded{{plugin=\"{}\"}} {}",
            escape(&p.spec.name),
            u8::from(p.serving().is_some())
        );
    }
    let _ = writeln!(out, "# TYPE meshgate_wasm_plugin_pending gauge");
    for p in &live.plugins {
        let _ = writeln!(
            out,
            "meshgate_wasm_plugin_pending{{plugin=\"{}\"}} {}",
            escape(&p.spec.name),
            u8::from(matches!(&**p.load_state(), super::LoadState::Pending))
        );
    }
    let _ = writeln!(out, "# TYPE meshgate_wasm_plugin_pulls_total counter");
    for (plugin, result, n) in runtime.metrics.snapshot() {
        let _ = writeln!(
            out,
            "meshgate_wasm_plugin_pulls_total{{plugin=\"{}\",result=\"{result}\"}} {n}",
            escape(&plugin)
        );
    }
    if let Some(c) = runtime.module_cache_stats() {
        let _ = writeln!(
            out,
            "# TYPE meshgate_wasm_module_cache_hits_total counter\nmeshgate_wasm_module_cache_hits_total {}\n\
             # TYPE meshgate_wasm_module_cache_misses_total counter\nmeshgate_wasm_module_cache_misses_total {}\n\
             # TYPE meshgate_wasm_module_cache_corrupt_total counter\nmeshgate_wasm_module_cache_corrupt_total {}\n\
             # TYPE meshgate_wasm_module_cache_evictions_total counter\nmeshgate_wasm_module_cache_evictions_total {}\n\
             # TYPE meshgate_wasm_module_cache_bytes gauge\nmeshgate_wasm_module_cache_bytes {}\n\
             # TYPE meshgate_wasm_module_cache_entries gauge\nmeshgate_wasm_module_cache_entries {}",
            c.hits, c.misses, c.corrupt, c.evictions, c.bytes, c.entries
        );
    }
    let serving: Vec<(String, meshgate_wasm::Plugin)> = live
        .plugins
        .iter()
        .filter_map(|p| {
            p.serving()
                .and_then(|s| s.plugin())
                .map(|pl| (escape(&p.spec.name), pl))
        })
        .collect();
    let loaded: Vec<(&String, &PluginStats)> =
        serving.iter().map(|(n, pl)| (n, pl.stats())).collect();
    let counters: [Counter; 6] = [
        ("vm_starts", |s| PluginStats::get(&s.vm_starts)),
        ("vm_start_failures", |s| PluginStats::get(&s.start_failures)),
        ("traps", |s| PluginStats::get(&s.traps)),
        ("deadline_exceeded", |s| PluginStats::get(&s.deadlines)),
        ("memory_limit_exceeded", |s| {
            PluginStats::get(&s.memory_failures)
        }),
        ("vm_recycles", |s| PluginStats::get(&s.recycles)),
    ];
    for (stat, get) in counters {
        let _ = writeln!(out, "# TYPE meshgate_wasm_plugin_{stat}_total counter");
        for (name, s) in &loaded {
            let _ = writeln!(
                out,
                "meshgate_wasm_plugin_{stat}_total{{plugin=\"{name}\"}} {}",
                get(s)
            );
        }
    }
    let _ = writeln!(out, "# TYPE meshgate_wasm_plugin_vm_memory_bytes gauge");
    for (name, s) in &loaded {
        let _ = writeln!(
            out,
            "meshgate_wasm_plugin_vm_memory_bytes{{plugin=\"{name}\"}} {}",
            PluginStats::get(&s.memory_bytes)
        );
    }
    let family = "meshgate_wasm_plugin_callback_duration_microseconds";
    let _ = writeln!(out, "# TYPE {family} histogram");
    for (name, s) in &loaded {
        for (callback, counts, sum) in s.latency.snapshot() {
            let labels = format!("plugin=\"{name}\",callback=\"{callback}\"");
            let bounds = LATENCY_BOUNDS_NS.iter().map(|ns| micros(*ns));
            histogram(out, family, &labels, bounds, &counts, micros(sum));
        }
    }
}

/// One histogram's series in Prometheus text: cumulative `_bucket`s (one per bound, then
/// `+Inf`, for the non-cumulative `counts`), `_sum` and `_count`; `labels` is `k="v",...` or
/// empty.
fn histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    mut bounds: impl Iterator<Item = impl std::fmt::Display>,
    counts: &[u64],
    sum: impl std::fmt::Display,
) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut acc = 0;
    for c in counts {
        acc += c;
        let _ = match bounds.next() {
            Some(le) => writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {acc}"),
            None => writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {acc}"),
        };
    }
    let labels = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{labels} {sum}\n{name}_count{labels} {acc}");
}

/// `ns` nanoseconds in microseconds, as Prometheus text: no trailing zeros (`0.25`, `1`, `2.5`).
fn micros(ns: u64) -> String {
    // Shortest round-trip form: exact for any sum below about 10^15 ns.
    (ns as f64 / 1e3).to_string()
}

#[cfg(test)]
mod tests {
    use super::micros;

    #[test]
    fn nanoseconds_print_as_microseconds_without_trailing_zeros() {
        assert_eq!(micros(250), "0.25");
        assert_eq!(micros(1_000), "1");
        assert_eq!(micros(2_500), "2.5");
        assert_eq!(micros(1_234_567), "1234.567");
        assert_eq!(micros(0), "0");
    }
}
