//! add-headers: the benchmark plugin. Adds (never replaces) the configured request headers in
//! on_http_request_headers and response headers in on_http_response_headers.
//! Config: `{"request": {"name": "value"}, "response": {...}}`; empty config adds
//! `x-wasm-request: added` and `x-wasm-response: added`. It must stay cheap per request: the
//! config is parsed once in on_configure and nothing is allocated on the header path.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

type Pairs = Vec<(String, String)>;

#[derive(Default)]
struct Headers {
    request: Pairs,
    response: Pairs,
}

impl Headers {
    fn defaults() -> Headers {
        Headers {
            request: vec![("x-wasm-request".into(), "added".into())],
            response: vec![("x-wasm-response".into(), "added".into())],
        }
    }

    fn parse(config: &[u8]) -> Result<Headers, String> {
        if config.iter().all(u8::is_ascii_whitespace) {
            return Ok(Headers::defaults());
        }
        let value: serde_json::Value =
            serde_json::from_slice(config).map_err(|e| format!("config is not JSON: {e}"))?;
        let top = value
            .as_object()
            .ok_or_else(|| "config must be a JSON object".to_string())?;
        let mut headers = Headers::default();
        for (key, map) in top {
            let slot = match key.as_str() {
                "request" => &mut headers.request,
                "response" => &mut headers.response,
                other => return Err(format!("unknown config key {other:?}")),
            };
            let map = map
                .as_object()
                .ok_or_else(|| format!("{key} must be an object of header names to values"))?;
            for (name, value) in map {
                let value = value
                    .as_str()
                    .ok_or_else(|| format!("{key}.{name} must be a string"))?;
                slot.push((name.to_ascii_lowercase(), value.to_string()));
            }
        }
        Ok(headers)
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(Root { headers: Rc::new(Headers::defaults()) }));
}}

struct Root {
    headers: Rc<Headers>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        match Headers::parse(&config) {
            Ok(headers) => {
                self.headers = Rc::new(headers);
                true
            }
            Err(e) => {
                let _ = proxy_wasm::hostcalls::log(LogLevel::Error, &format!("add-headers: {e}"));
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            headers: Rc::clone(&self.headers),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    headers: Rc<Headers>,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in &self.headers.request {
            self.add_http_request_header(name, value);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in &self.headers.response {
            self.add_http_response_header(name, value);
        }
        Action::Continue
    }
}
