//! The wasm host's errors: loading a module (compile, link, version) and a VM failing at run
//! time (trap, deadline, memory), which the filter maps to the plugin's failStrategy.

/// A module could not be loaded or a VM could not be created.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The engine could not be configured.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The bytes are not a valid module, or Cranelift rejected it.
    #[error("compiling the module: {0}")]
    Compile(String),
    /// The module exports no `proxy_abi_version_*` marker.
    #[error("not a proxy-wasm module: it exports no proxy_abi_version_0_2_1, _0_2_0 or _0_1_0")]
    NotProxyWasm,
    /// The module imports a function the host does not provide.
    #[error("the module imports {module}.{name}, which the host does not provide")]
    MissingImport {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
    },
    /// An ABI export has the wrong signature.
    #[error("export {0} has the wrong signature for its ABI version")]
    BadExport(&'static str),
    /// Creating the VM failed (instantiation, `_initialize`, vm start or configure).
    #[error("starting the VM: {0}")]
    Start(VmFailure),
}

/// Why a VM stopped serving: the filter applies the plugin's failStrategy and replaces the VM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmFailure {
    /// The guest trapped (unreachable, out-of-bounds access, a panic, ...).
    #[error("trap in {callback}: {message}")]
    Trap {
        /// The callback that trapped.
        callback: &'static str,
        /// wasmtime's description.
        message: String,
    },
    /// The callback ran past its CPU deadline (epoch interruption).
    #[error("{callback} ran past its {deadline_ms} ms deadline")]
    Deadline {
        /// The callback that was stopped.
        callback: &'static str,
        /// The deadline it had.
        deadline_ms: u64,
    },
    /// The guest asked for more memory than its cap.
    #[error("{callback} exceeded the VM memory cap of {limit} bytes")]
    Memory {
        /// The callback that hit the cap.
        callback: &'static str,
        /// The cap.
        limit: usize,
    },
    /// The guest returned a value the ABI does not define (an unknown filter status, say).
    #[error("{callback} returned {value}, which the ABI does not define")]
    BadReturn {
        /// The callback.
        callback: &'static str,
        /// What it returned.
        value: i32,
    },
    /// `proxy_on_vm_start` or `proxy_on_configure` returned false.
    #[error("{0} returned false")]
    Refused(&'static str),
    /// The VM failed earlier and has not been replaced yet.
    #[error("the VM failed earlier")]
    Failed,
}
