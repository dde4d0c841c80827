//! Compiles a validated [`ResourceSet`] into the immutable [`Snapshot`] of one gateway.
//!
//! Selects the Gateways whose selector matches this gateway's labels, merges their servers
//! into listeners by port, binds VirtualServices (through `gateways:`, host intersection,
//! namespace rules and `exportTo`) into virtual hosts, builds the clusters their routes name and
//! the WasmPlugins that apply. Pure: no I/O, no clocks; the same input gives the same snapshot.

pub mod clusters;
pub mod hosts;
pub mod plugin_json;
#[cfg(test)]
mod plugin_tests;
pub mod plugins;
pub mod routes;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::diag::{Diagnostic, Issue, Severity};
use crate::model::gateway::{Server, ServerTlsMode};
use crate::model::virtual_service::HttpRoute;
use crate::model::VirtualService;
use crate::resource::{Resource, ResourceSet};
use crate::snapshot::route_table::{RouteTable, VirtualHost};
use crate::snapshot::{Listener, ListenerProtocol, ResourceOutcome, ServerBinding, Snapshot};
use clusters::ClusterBuilder;
use hosts::{exported_to, intersect, resolve_fqdn, resolve_gateway_ref, server_host_for};
use plugins::{compile_plugins, PluginScope};
use routes::{compile_route, RouteScope};

/// Who this gateway is: what selects its Gateways and how names resolve.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// The gateway's own labels (Gateway and WasmPlugin `selector`s are matched against them; a
    /// `gateway.networking.k8s.io/gateway-name` label makes it a Gateway API gateway that
    /// WasmPlugin `targetRefs` can name).
    pub labels: BTreeMap<String, String>,
    /// The gateway's namespace (for `exportTo`, `./host`, DestinationRule precedence and the
    /// WasmPlugins that apply).
    pub namespace: String,
    /// Istio's config root namespace (`meshConfig.rootNamespace`): its WasmPlugins apply to
    /// every gateway they select.
    pub root_namespace: String,
    /// Cluster domain suffix for short names.
    pub domain_suffix: String,
    /// Only Gateways in `namespace` apply (Istio's `PILOT_SCOPE_GATEWAY_TO_NAMESPACE`).
    pub scope_gateway_to_namespace: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            labels: BTreeMap::from([("istio".to_owned(), "ingressgateway".to_owned())]),
            namespace: "istio-system".into(),
            root_namespace: "istio-system".into(),
            domain_suffix: "cluster.local".into(),
            scope_gateway_to_namespace: false,
        }
    }
}

/// A compiled snapshot and the warnings compilation produced.
#[derive(Debug)]
pub struct Compiled {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Things that were ignored (conflicting servers, routes without a place to go).
    pub warnings: Vec<Diagnostic>,
}

/// Listener under construction.
struct ListenerBuild {
    address: String,
    port: u16,
    service_port: u16,
    protocol: ListenerProtocol,
    servers: Vec<ServerBinding>,
    /// Servers with their gateway: (gateway id, gateway namespace, server index in `servers`).
    hosts: Vec<(Arc<str>, String, Vec<String>, bool)>,
    vhosts: Vec<VirtualHost>,
    vhost_index: HashMap<String, usize>,
}

/// Compiles `set` for the gateway described by `opts`. Fails only on internal inconsistencies
/// (e.g. a regex that validation let through); everything else becomes a warning.
pub fn compile(set: &ResourceSet, opts: &CompileOptions) -> Result<Compiled, Vec<Diagnostic>> {
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    let mut outcomes: HashMap<*const Resource, Vec<String>> = HashMap::new();
    let mut listeners: Vec<ListenerBuild> = Vec::new();
    let mut selected_gateways: Vec<(String, String)> = Vec::new();

    for (res, gw) in set.gateways() {
        let selected = gw
            .selector
            .iter()
            .all(|(k, v)| opts.labels.get(k) == Some(v))
            && (!opts.scope_gateway_to_namespace || res.namespace == opts.namespace);
        let out = outcomes.entry(res as *const _).or_default();
        if !selected {
            out.push("not selected: its selector does not match this gateway's labels".into());
            continue;
        }
        selected_gateways.push((res.namespace.clone(), res.meta.name.clone()));
        let gw_id: Arc<str> = Arc::from(format!("{}/{}", res.namespace, res.meta.name));
        for (i, server) in gw.servers.iter().enumerate() {
            match add_server(&mut listeners, &gw_id, &res.namespace, i, server) {
                Ok(name) => out.push(format!("server {i} -> listener {name}")),
                Err(why) => {
                    out.push(format!("server {i} ignored: {why}"));
                    warnings.push(res.diagnostic(Issue {
                        severity: Severity::Warning,
                        field: format!("spec.servers[{i}]"),
                        message: why,
                    }));
                }
            }
        }
    }

    let mut clusters = ClusterBuilder::new(set, opts);
    let vs_by_id: HashMap<String, (&Resource, &VirtualService)> = set
        .virtual_services()
        .map(|(r, vs)| (format!("{}/{}", r.namespace, r.meta.name), (r, vs)))
        .collect();

    for (res, vs) in set.virtual_services() {
        let vs_id = format!("{}/{}", res.namespace, res.meta.name);
        let out_key = res as *const _;
        if vs.hosts.is_empty() {
            outcomes
                .entry(out_key)
                .or_default()
                .push("delegate: used through the routes that delegate to it".into());
            continue;
        }
        if !exported_to(&vs.export_to, &res.namespace, &opts.namespace) {
            outcomes
                .entry(out_key)
                .or_default()
                .push(format!("not exported to namespace {}", opts.namespace));
            continue;
        }
        let bound: Vec<String> = if vs.gateways.is_empty() {
            vec!["mesh".into()]
        } else {
            vs.gateways
                .iter()
                .map(|g| resolve_gateway_ref(g, &res.namespace))
                .collect()
        };
        let vs_hosts: Vec<String> = vs
            .hosts
            .iter()
            .map(|h| resolve_fqdn(h, &res.namespace, &opts.domain_suffix))
            .collect();
        let mut placed = Vec::new();
        for l in &mut listeners {
            if !matches!(l.protocol, ListenerProtocol::Http | ListenerProtocol::Https) {
                continue;
            }
            // Domains of this VS on this listener, with the gateway they came through.
            let mut domains: Vec<(String, Arc<str>, bool)> = Vec::new();
            for (gw_id, gw_ns, server_hosts, redirect) in &l.hosts {
                if !bound.iter().any(|b| **b == **gw_id) {
                    continue;
                }
                for sh in server_hosts {
                    let Some(dns) = server_host_for(sh, gw_ns, &res.namespace) else {
                        continue;
                    };
                    let dns = dns.to_ascii_lowercase();
                    for vh in &vs_hosts {
                        if let Some(d) = intersect(&dns, vh) {
                            if !domains.iter().any(|(x, g, _)| x == d && g == gw_id) {
                                domains.push((d.to_owned(), gw_id.clone(), *redirect));
                            }
                        }
                    }
                }
            }
            for (domain, gw_id, redirect) in domains {
                let scope = RouteScope {
                    gateway: &gw_id,
                    port: l.service_port,
                    vs_namespace: &res.namespace,
                    vs_id: &vs_id,
                    domain_suffix: &opts.domain_suffix,
                };
                let mut routes = Vec::new();
                for (i, r) in vs.http.iter().enumerate() {
                    let compiled = compile_http(r, i, &scope, &vs_by_id, &mut clusters);
                    match compiled {
                        Ok(mut rs) => routes.append(&mut rs),
                        Err(e) => errors.push(res.diagnostic(Issue {
                            severity: Severity::Error,
                            field: e.field,
                            message: e.message,
                        })),
                    }
                }
                let idx = match l.vhost_index.get(&domain) {
                    Some(i) => *i,
                    None => {
                        l.vhosts.push(VirtualHost {
                            name: format!("{domain}:{}", l.service_port),
                            domains: vec![domain.clone()],
                            require_tls: redirect,
                            routes: Vec::new(),
                        });
                        l.vhost_index.insert(domain.clone(), l.vhosts.len() - 1);
                        l.vhosts.len() - 1
                    }
                };
                placed.push(format!(
                    "{} routes on listener {}_{} host {domain}",
                    routes.len(),
                    l.address,
                    l.port
                ));
                l.vhosts[idx].routes.extend(routes);
            }
        }
        let out = outcomes.entry(out_key).or_default();
        if placed.is_empty() {
            out.push(format!(
                "not bound to this gateway (gateways: {})",
                bound.join(", ")
            ));
        }
        out.extend(placed);
        if !vs.tls.is_empty() || !vs.tcp.is_empty() {
            out.push("tls/tcp routes: parsed, not served yet".into());
        }
    }

    let route_names: HashSet<Arc<str>> = listeners
        .iter()
        .flat_map(|l| &l.vhosts)
        .flat_map(|v| &v.routes)
        .map(|r| r.name.clone())
        .collect();
    let compiled_plugins = compile_plugins(
        set,
        &PluginScope {
            opts,
            gateways: &selected_gateways,
            route_names: &route_names,
        },
    );
    for (key, notes) in compiled_plugins.outcomes {
        outcomes.entry(key).or_default().extend(notes);
    }
    warnings.extend(compiled_plugins.warnings);
    errors.extend(compiled_plugins.errors);

    clusters.add_service_entry_clusters();
    let clusters = clusters.build();
    if !errors.is_empty() {
        return Err(errors);
    }
    let listeners = listeners
        .into_iter()
        .map(|l| Listener {
            name: format!("{}_{}", l.address, l.port),
            address: l.address,
            port: l.port,
            service_port: l.service_port,
            protocol: l.protocol,
            servers: l.servers,
            routes: RouteTable::new(l.vhosts),
        })
        .collect();
    let resources = set
        .resources
        .iter()
        .map(|r| ResourceOutcome {
            resource: format!("{} {}/{}", r.kind, r.namespace, r.meta.name),
            source: format!("{}:{}", r.source.file, r.source.line),
            became: outcomes.remove(&(r as *const _)).unwrap_or_else(|| {
                vec!["parsed and validated (no effect on listeners yet)".into()]
            }),
        })
        .collect();
    Ok(Compiled {
        snapshot: Snapshot::new(listeners, clusters, compiled_plugins.plugins, resources),
        warnings,
    })
}

/// One HTTP route, or the routes of the VirtualService it delegates to.
fn compile_http(
    r: &HttpRoute,
    idx: usize,
    scope: &RouteScope<'_>,
    vs_by_id: &HashMap<String, (&Resource, &VirtualService)>,
    clusters: &mut ClusterBuilder<'_>,
) -> Result<Vec<crate::snapshot::Route>, routes::RouteError> {
    let Some(d) = &r.delegate else {
        return Ok(compile_route(r, idx, None, scope, clusters)?
            .into_iter()
            .collect());
    };
    let ns = if d.namespace.is_empty() {
        scope.vs_namespace
    } else {
        d.namespace.as_str()
    };
    let Some((dres, dvs)) = vs_by_id.get(&format!("{ns}/{}", d.name)) else {
        return Ok(Vec::new());
    };
    let dscope = RouteScope {
        gateway: scope.gateway,
        port: scope.port,
        vs_namespace: &dres.namespace,
        vs_id: &format!("{}/{}", dres.namespace, dres.meta.name),
        domain_suffix: scope.domain_suffix,
    };
    let mut out = Vec::new();
    for (i, child) in dvs.http.iter().enumerate() {
        if child.delegate.is_some() {
            continue; // Istio supports one level of delegation.
        }
        if let Some(route) = compile_route(child, i, Some(&r.match_), &dscope, clusters)? {
            out.push(route);
        }
    }
    Ok(out)
}

/// Adds a Gateway server to the listener on its port; returns the listener name.
fn add_server(
    listeners: &mut Vec<ListenerBuild>,
    gw_id: &Arc<str>,
    gw_ns: &str,
    index: usize,
    s: &Server,
) -> Result<String, String> {
    let Some(port) = &s.port else {
        return Err("server has no port".into());
    };
    // The gateway listens on the server's port number (Istio rejects `targetPort` on Gateways;
    // in Kubernetes the Service maps its port to the pod's).
    let service_port = u16::try_from(port.number).map_err(|_| "port out of range".to_owned())?;
    let listen_port = service_port;
    let proto = port.protocol.to_ascii_uppercase();
    let passthrough = s.tls.as_ref().is_some_and(|t| {
        matches!(
            t.mode,
            ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
        )
    });
    let protocol = match proto.as_str() {
        // An HTTP server's `tls` block only carries `httpsRedirect`: it stays plaintext.
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => ListenerProtocol::Http,
        "HTTPS" if passthrough => ListenerProtocol::Tls,
        "HTTPS" => ListenerProtocol::Https,
        "TLS" => ListenerProtocol::Tls,
        _ => ListenerProtocol::Tcp,
    };
    let address = if s.bind.is_empty() {
        "0.0.0.0".to_owned()
    } else {
        s.bind.clone()
    };
    let pos = listeners
        .iter()
        .position(|l| l.port == listen_port && l.address == address);
    let l = match pos {
        Some(i) => {
            let l = &mut listeners[i];
            if l.protocol != protocol {
                return Err(format!(
                    "port {listen_port} is already a {:?} listener; a {protocol:?} server cannot share it",
                    l.protocol
                ));
            }
            l
        }
        None => {
            listeners.push(ListenerBuild {
                address: address.clone(),
                port: listen_port,
                service_port,
                protocol,
                servers: Vec::new(),
                hosts: Vec::new(),
                vhosts: Vec::new(),
                vhost_index: HashMap::new(),
            });
            let last = listeners.len() - 1;
            &mut listeners[last]
        }
    };
    l.servers.push(ServerBinding {
        gateway: gw_id.clone(),
        name: if s.name.is_empty() {
            index.to_string()
        } else {
            s.name.clone()
        },
        hosts: s.hosts.clone(),
        tls: s.tls.clone(),
    });
    let redirect = s.tls.as_ref().is_some_and(|t| t.https_redirect);
    l.hosts
        .push((gw_id.clone(), gw_ns.to_owned(), s.hosts.clone(), redirect));
    Ok(format!("{address}_{listen_port}"))
}
