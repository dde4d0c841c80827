//! The gateway's side as the harness plays it: which upstreams exist, the clock, and the log.

use std::cell::{Cell, RefCell};
use std::time::SystemTime;

use meshgate_wasm::{Host, LogLevel};

/// One line the plugin logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its level (WASI stdout is `Info`, stderr `Error`, as in the gateway).
    pub level: LogLevel,
    /// The text, without the gateway's `wasm log <plugin> ...:` prefix.
    pub message: String,
}

#[derive(Debug)]
pub(crate) struct TestHost {
    /// Upstreams callouts may go to (`None`: any).
    pub(crate) upstreams: Option<Vec<String>>,
    pub(crate) node: Vec<(String, Vec<u8>)>,
    pub(crate) clock: Cell<SystemTime>,
    pub(crate) logs: RefCell<Vec<LogLine>>,
}

impl Host for TestHost {
    fn has_upstream(&self, upstream: &str) -> bool {
        self.upstreams
            .as_ref()
            .is_none_or(|u| u.iter().any(|x| x == upstream))
    }

    fn node_property(&self, path: &[&[u8]]) -> Option<Vec<u8>> {
        let key = path
            .iter()
            .map(|p| String::from_utf8_lossy(p))
            .collect::<Vec<_>>()
            .join(".");
        self.node
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.logs.borrow_mut().push(LogLine {
            level,
            message: message.to_owned(),
        });
    }

    fn now(&self) -> SystemTime {
        self.clock.get()
    }
}
