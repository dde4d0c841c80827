//! A VM's events from outside a stream's callbacks: ticks, ready queues, and the answers to
//! the plugin's HTTP and gRPC callouts, delivered on the root context as Envoy delivers them.

use bytes::Bytes;

use super::PluginVm;
use crate::context::{CallResponse, GrpcCall, GrpcEvent, HttpCall};
use crate::error::VmFailure;

impl PluginVm {
    /// Runs the root context's `proxy_on_tick`.
    pub fn on_tick(&mut self) -> Result<(), VmFailure> {
        let root = self.store.data().root_id;
        match self.ex.tick.clone() {
            Some(f) => self.call(root, "proxy_on_tick", f, root as i32),
            None => Ok(()),
        }
    }

    /// Delivers a callout's response (`None`: it failed) to the context that sent it. A stream
    /// that has ended meanwhile gets nothing, as in Envoy.
    pub fn on_http_call_response(
        &mut self,
        call: &HttpCall,
        response: Option<CallResponse>,
    ) -> Result<(), VmFailure> {
        let ctx = call.context_id;
        let st = self.store.data_mut();
        if ctx != st.root_id && !st.streams.contains_key(&ctx) {
            return Ok(());
        }
        let Some(f) = self.ex.http_call_response.clone() else {
            return Ok(());
        };
        let (h, b, t) = response.as_ref().map_or((0, 0, 0), |r| {
            (
                r.headers.len() as i32,
                r.body.len() as i32,
                r.trailers.len() as i32,
            )
        });
        st.call_response = Some(response.unwrap_or_default());
        // As Envoy: the callback runs on the root context (which owns the callout); SDKs find
        // the stream by token and switch to it with `proxy_set_effective_context`.
        let root = st.root_id;
        let r = self.call(
            root,
            "proxy_on_http_call_response",
            f,
            (root as i32, call.token as i32, h, b, t),
        );
        self.store.data_mut().call_response = None;
        r
    }

    /// Delivers a unary gRPC callout's answer: the response message, or the status (code and
    /// message) it closed with. Nothing is delivered for a call the plugin cancelled.
    pub fn on_grpc_response(
        &mut self,
        call: &GrpcCall,
        response: Result<Bytes, (u32, Bytes)>,
    ) -> Result<(), VmFailure> {
        let st = self.store.data_mut();
        if let Some(i) = st.cancelled.iter().position(|t| *t == call.token) {
            st.cancelled.swap_remove(i);
            return Ok(());
        }
        let root = st.root_id;
        match response {
            Ok(message) => {
                let Some(f) = self.ex.grpc_receive.clone() else {
                    return Ok(());
                };
                let size = message.len() as i32;
                self.store.data_mut().grpc_message = Some(message);
                let r = self.call(
                    root,
                    "proxy_on_grpc_receive",
                    f,
                    (root as i32, call.token as i32, size),
                );
                self.store.data_mut().grpc_message = None;
                r
            }
            Err((code, message)) => {
                let Some(f) = self.ex.grpc_close.clone() else {
                    return Ok(());
                };
                self.store.data_mut().status = (code, message);
                self.call(
                    root,
                    "proxy_on_grpc_close",
                    f,
                    (root as i32, call.token as i32, code as i32),
                )
            }
        }
    }

    /// Delivers what an open gRPC stream brought back. After `Close` the stream is gone.
    pub fn on_grpc_stream(&mut self, token: u32, event: GrpcEvent) -> Result<(), VmFailure> {
        let st = self.store.data_mut();
        let Some(i) = st.grpc_streams.iter().position(|t| *t == token) else {
            return Ok(());
        };
        let root = st.root_id;
        let args = |n: usize| (root as i32, token as i32, n as i32);
        let initial = matches!(event, GrpcEvent::InitialMetadata(_));
        match event {
            GrpcEvent::InitialMetadata(md) | GrpcEvent::TrailingMetadata(md) => {
                let (f, callback) = if initial {
                    let f = self.ex.grpc_initial_metadata.clone();
                    (f, "proxy_on_grpc_receive_initial_metadata")
                } else {
                    let f = self.ex.grpc_trailing_metadata.clone();
                    (f, "proxy_on_grpc_receive_trailing_metadata")
                };
                let Some(f) = f else {
                    return Ok(());
                };
                let n = md.len();
                self.store.data_mut().grpc_metadata = Some(md);
                let r = self.call(root, callback, f, args(n));
                self.store.data_mut().grpc_metadata = None;
                r
            }
            GrpcEvent::Message(m) => {
                let Some(f) = self.ex.grpc_receive.clone() else {
                    return Ok(());
                };
                let n = m.len();
                self.store.data_mut().grpc_message = Some(m);
                let r = self.call(root, "proxy_on_grpc_receive", f, args(n));
                self.store.data_mut().grpc_message = None;
                r
            }
            GrpcEvent::Close(code, message) => {
                st.grpc_streams.swap_remove(i);
                let Some(f) = self.ex.grpc_close.clone() else {
                    return Ok(());
                };
                self.store.data_mut().status = (code, message);
                self.call(root, "proxy_on_grpc_close", f, args(code as usize))
            }
        }
    }

    /// Tells the root context that queue `queue` has data.
    pub fn on_queue_ready(&mut self, queue: u32) -> Result<(), VmFailure> {
        let root = self.store.data().root_id;
        match self.ex.queue_ready.clone() {
            Some(f) => self.call(root, "proxy_on_queue_ready", f, (root as i32, queue as i32)),
            None => Ok(()),
        }
    }
}
