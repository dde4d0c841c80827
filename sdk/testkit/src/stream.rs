//! A stream through the plugin: the test plays the downstream client and the upstream
//! server, the harness the gateway in between.

use std::task::Poll;

use bytes::{Bytes, BytesMut};
use meshgate_wasm::{Action, LocalResponse, PluginVm, Resume, StreamId, VmFailure};

use crate::{heads, Error, Harness, Headers, Result};

/// A reply the plugin sent instead of letting the stream go on (`proxy_send_local_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// HTTP status.
    pub status: u16,
    /// Headers the plugin gave.
    pub headers: Headers,
    /// Body.
    pub body: Bytes,
    /// Response code details (Envoy logs them).
    pub details: String,
    /// The gRPC status, when the plugin replied with one.
    pub grpc_status: Option<u32>,
}

impl LocalReply {
    pub(crate) fn new(r: LocalResponse) -> LocalReply {
        LocalReply {
            status: r.status,
            headers: Headers::from_owned(&r.headers),
            body: r.body,
            details: r.details,
            grpc_status: r.grpc_status,
        }
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What one stream callback came to, as the gateway would act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The stream goes on (what the plugin left is forwarded).
    Continue,
    /// The plugin paused the stream (or, for a body, buffers it): the gateway waits until it
    /// resumes, replies or closes (typically after a callout answer or a tick).
    Pause,
    /// The plugin replied locally.
    LocalReply(LocalReply),
    /// The plugin closed (reset) the stream.
    Closed,
}

impl Outcome {
    /// The stream goes on.
    pub fn is_continue(&self) -> bool {
        matches!(self, Outcome::Continue)
    }

    /// The stream waits on the plugin.
    pub fn is_paused(&self) -> bool {
        matches!(self, Outcome::Pause)
    }

    /// The plugin closed the stream.
    pub fn is_closed(&self) -> bool {
        matches!(self, Outcome::Closed)
    }

    /// The local reply, if the plugin sent one.
    pub fn local_reply(&self) -> Option<&LocalReply> {
        match self {
            Outcome::LocalReply(r) => Some(r),
            _ => None,
        }
    }
}

/// What the harness knows of one stream.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub(crate) id: StreamId,
    pub(crate) request: Option<Headers>,
    pub(crate) request_body: BytesMut,
    pub(crate) request_trailers: Option<Headers>,
    pub(crate) response: Option<Headers>,
    pub(crate) response_body: BytesMut,
    pub(crate) response_trailers: Option<Headers>,
    /// The direction waiting on the plugin (`true`: the response).
    pub(crate) paused: Option<bool>,
    pub(crate) reply: Option<LocalReply>,
    pub(crate) closed: bool,
    pub(crate) ended: bool,
}

impl StreamState {
    pub(crate) fn new(id: StreamId) -> StreamState {
        StreamState {
            id,
            request: None,
            request_body: BytesMut::new(),
            request_trailers: None,
            response: None,
            response_body: BytesMut::new(),
            response_trailers: None,
            paused: None,
            reply: None,
            closed: false,
            ended: false,
        }
    }

    /// Takes what the plugin lets go on in one direction: the head, body and trailers.
    pub(crate) fn forward(&mut self, vm: &mut PluginVm, response: bool) {
        let id = self.id;
        if response {
            if let Some(head) = vm.take_response(id) {
                self.response = Some(heads::response_headers(&head));
            }
            self.response_body
                .extend_from_slice(&vm.take_body(id, true));
            if let Some(t) = vm.take_response_trailers(id) {
                self.response_trailers = Some(Headers::from_map(&t));
            }
        } else {
            if let Some(head) = vm.take_request(id) {
                self.request = Some(heads::request_headers(&head));
            }
            self.request_body
                .extend_from_slice(&vm.take_body(id, false));
            if let Some(t) = vm.take_request_trailers(id) {
                self.request_trailers = Some(Headers::from_map(&t));
            }
        }
    }
}

/// One HTTP stream (an HTTP context of the plugin). Drive it in the order the gateway would:
/// request headers, body chunks, trailers, then the response likewise, then [`Stream::end`]
/// (dropping the stream ends it too).
///
/// ```no_run
/// # use meshgate_testkit::{Harness, HttpResponse};
/// # fn main() -> Result<(), meshgate_testkit::Error> {
/// # let plugin = Harness::builder("p.wasm").build()?;
/// let mut stream = plugin.stream();
/// let out = stream.request_headers(&[(":method", "POST"), (":path", "/orders")], false)?;
/// assert!(out.is_continue());
/// assert!(stream.request_body("{\"id\":1}", true)?.is_continue());
/// assert_eq!(stream.forwarded_request().get("x-hello"), Some("world"));
///
/// let out = stream.response_headers(&[(":status", "200")], true)?;
/// assert!(out.is_continue());
/// stream.end()?;
/// # Ok(())
/// # }
/// ```
pub struct Stream<'h> {
    h: &'h Harness,
    id: std::result::Result<StreamId, VmFailure>,
}

impl std::fmt::Debug for Stream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("id", &self.id).finish()
    }
}

impl Drop for Stream<'_> {
    fn drop(&mut self) {
        // Not while a failing test unwinds: the VM may be mid-call, and the end callbacks
        // would only add noise to the failure.
        if !std::thread::panicking() {
            let _ = self.end();
        }
    }
}

impl<'h> Stream<'h> {
    pub(crate) fn new(h: &'h Harness, id: std::result::Result<StreamId, VmFailure>) -> Self {
        Stream { h, id }
    }

    /// The stream's context id (an [`HttpCallout::context_id`](crate::HttpCallout) names it).
    pub fn id(&self) -> Option<u32> {
        self.id.as_ref().ok().map(|id| id.0)
    }

    fn live(&self) -> Result<StreamId> {
        let id = self.id.clone()?;
        match self.h.streams.borrow().get(&id.0) {
            Some(s) if !s.ended => Ok(id),
            _ => Err(Error::StreamEnded),
        }
    }

    fn read<R>(&self, f: impl FnOnce(&StreamState) -> R) -> Option<R> {
        let id = self.id.as_ref().ok()?;
        self.h.streams.borrow().get(&id.0).map(f)
    }

    /// What a callback's result means for the stream.
    fn settle(
        &mut self,
        id: StreamId,
        response: bool,
        r: std::result::Result<Action, VmFailure>,
    ) -> Result<Outcome> {
        let outcome = self.outcome(id, response, r);
        self.h.collect();
        outcome
    }

    fn outcome(
        &mut self,
        id: StreamId,
        response: bool,
        r: std::result::Result<Action, VmFailure>,
    ) -> Result<Outcome> {
        let action = r?;
        let mut vm = self.h.vm();
        let mut streams = self.h.streams.borrow_mut();
        let s = streams.get_mut(&id.0).ok_or(Error::StreamEnded)?;
        s.paused = None;
        if let Some(r) = vm.take_local_response(id) {
            let reply = LocalReply::new(r);
            s.reply = Some(reply.clone());
            return Ok(Outcome::LocalReply(reply));
        }
        if action == Action::Continue {
            s.forward(&mut vm, response);
            return Ok(Outcome::Continue);
        }
        // Paused: the plugin may have resumed, replied or closed within the callback.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match vm.poll_resume(id, response, &mut cx) {
            Poll::Pending => {
                s.paused = Some(response);
                Ok(Outcome::Pause)
            }
            Poll::Ready(Resume::Continue) => {
                s.forward(&mut vm, response);
                Ok(Outcome::Continue)
            }
            Poll::Ready(Resume::LocalResponse(r)) => {
                let reply = LocalReply::new(r);
                s.reply = Some(reply.clone());
                Ok(Outcome::LocalReply(reply))
            }
            Poll::Ready(Resume::Closed) => {
                s.closed = true;
                Ok(Outcome::Closed)
            }
            Poll::Ready(Resume::Failed(f)) => Err(Error::Vm(f)),
        }
    }

    /// Runs `proxy_on_request_headers` with these headers (`:method`, `:path`, `:authority`,
    /// `:scheme` pseudo-headers first, then regular headers; defaults GET, `/`, no authority,
    /// http). `end_of_stream`: the request has no body.
    pub fn request_headers(
        &mut self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Outcome> {
        let id = self.live()?;
        let head = heads::request(headers)?;
        let r = self.h.vm().on_request_headers(id, head, end_of_stream);
        self.settle(id, false, r)
    }

    /// Runs `proxy_on_request_body` with `chunk` added to what the plugin buffered.
    pub fn request_body(
        &mut self,
        chunk: impl Into<Bytes>,
        end_of_stream: bool,
    ) -> Result<Outcome> {
        let id = self.live()?;
        let r = self.h.vm().on_body(id, false, chunk.into(), end_of_stream);
        self.settle(id, false, r)
    }

    /// Runs `proxy_on_request_trailers` (the end of the request).
    pub fn request_trailers(&mut self, trailers: &[(&str, &str)]) -> Result<Outcome> {
        let id = self.live()?;
        let map = heads::map(trailers)?;
        let r = self.h.vm().on_request_trailers(id, map);
        self.settle(id, false, r)
    }

    /// Runs `proxy_on_response_headers` (`:status` first, default 200).
    pub fn response_headers(
        &mut self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Outcome> {
        let id = self.live()?;
        let head = heads::response(headers)?;
        let r = self.h.vm().on_response_headers(id, head, end_of_stream);
        self.settle(id, true, r)
    }

    /// Runs `proxy_on_response_body` with `chunk` added to what the plugin buffered.
    pub fn response_body(
        &mut self,
        chunk: impl Into<Bytes>,
        end_of_stream: bool,
    ) -> Result<Outcome> {
        let id = self.live()?;
        let r = self.h.vm().on_body(id, true, chunk.into(), end_of_stream);
        self.settle(id, true, r)
    }

    /// Runs `proxy_on_response_trailers`.
    pub fn response_trailers(&mut self, trailers: &[(&str, &str)]) -> Result<Outcome> {
        let id = self.live()?;
        let map = heads::map(trailers)?;
        let r = self.h.vm().on_response_trailers(id, map);
        self.settle(id, true, r)
    }

    /// Ends the stream: `proxy_on_log`, `proxy_on_done`, `proxy_on_delete`, as the gateway
    /// does once the exchange is over. Later calls on the stream return
    /// [`Error::StreamEnded`]; ending twice is a no-op.
    pub fn end(&mut self) -> Result<()> {
        let Ok(id) = self.id.clone() else {
            return Ok(());
        };
        {
            let mut streams = self.h.streams.borrow_mut();
            match streams.get_mut(&id.0) {
                Some(s) if !s.ended => s.ended = true,
                _ => return Ok(()),
            }
        }
        self.h.vm().end_stream(id);
        self.h.collect();
        match self.h.failure() {
            Some(f) => Err(Error::Vm(f)),
            None => Ok(()),
        }
    }

    /// The request head as the plugin let it go upstream (pseudo-headers first), once it
    /// continued; empty before.
    pub fn forwarded_request(&self) -> Headers {
        self.read(|s| s.request.clone())
            .flatten()
            .unwrap_or_default()
    }

    /// The request body the plugin let go upstream so far.
    pub fn forwarded_request_body(&self) -> Bytes {
        self.read(|s| Bytes::copy_from_slice(&s.request_body))
            .unwrap_or_default()
    }

    /// The request trailers the plugin let go upstream.
    pub fn forwarded_request_trailers(&self) -> Option<Headers> {
        self.read(|s| s.request_trailers.clone()).flatten()
    }

    /// The response head as the plugin let it go downstream (`:status` first).
    pub fn forwarded_response(&self) -> Headers {
        self.read(|s| s.response.clone())
            .flatten()
            .unwrap_or_default()
    }

    /// The response body the plugin let go downstream so far.
    pub fn forwarded_response_body(&self) -> Bytes {
        self.read(|s| Bytes::copy_from_slice(&s.response_body))
            .unwrap_or_default()
    }

    /// The response trailers the plugin let go downstream.
    pub fn forwarded_response_trailers(&self) -> Option<Headers> {
        self.read(|s| s.response_trailers.clone()).flatten()
    }

    /// The local reply the plugin sent on this stream, if any (during a callback or later,
    /// from a callout answer).
    pub fn local_reply(&self) -> Option<LocalReply> {
        self.read(|s| s.reply.clone()).flatten()
    }

    /// Whether the stream waits on the plugin.
    pub fn is_paused(&self) -> bool {
        self.read(|s| s.paused.is_some()).unwrap_or(false)
    }

    /// Whether the plugin closed the stream.
    pub fn is_closed(&self) -> bool {
        self.read(|s| s.closed).unwrap_or(false)
    }

    /// Whether the stream has ended.
    pub fn is_ended(&self) -> bool {
        self.read(|s| s.ended).unwrap_or(true)
    }
}
