//! A body streamed through a request's plugins: each data frame goes to the plugins in order;
//! a plugin that pauses keeps it buffered (bounded) until it continues or the body ends; the
//! end of the body is announced once (`end_of_stream`), trailers go through the trailer hooks.

use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use meshgate_wasm::{Action, Resume};

use super::filter::{Chain, BUFFER_LIMIT};
use crate::body::{Body, BoxError};

/// A body going through the plugins of `chain`.
pub(super) struct FilteredBody {
    inner: Body,
    chain: Rc<Chain>,
    response: bool,
    /// How many entries the body goes through (in its direction).
    len: usize,
    out: Outbox,
    /// A paused plugin holds the end of the body: its position on the body's way.
    waiting: Option<usize>,
    inner_done: bool,
    ended: bool,
    /// The body of a local reply: handed over whole, with end_of_stream.
    whole: bool,
    /// An error of the inner body met by [`FilteredBody::poll_whole`], for the next poll.
    error: Option<BoxError>,
    /// The inner body's size hint before any of it was read: what this body announces.
    announced: SizeHint,
    /// What the inner body gave when it was polled ahead ([`FilteredBody::seed`]), to be taken
    /// before it is polled again.
    first_in: Option<Option<Result<Frame<Bytes>, BoxError>>>,
}

/// Frames ready to go on, in order. Most bodies pass one frame at a time: that one is kept
/// inline, so the queue allocates only when frames pile up.
#[derive(Default)]
struct Outbox {
    first: Option<Frame<Bytes>>,
    rest: VecDeque<Frame<Bytes>>,
}

impl Outbox {
    fn push(&mut self, frame: Frame<Bytes>) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(frame);
        } else {
            self.rest.push_back(frame);
        }
    }

    /// Puts `frame` back in front, to go out first.
    fn push_front(&mut self, frame: Frame<Bytes>) {
        if let Some(first) = self.first.take() {
            self.rest.push_front(first);
        }
        self.first = Some(frame);
    }

    fn pop(&mut self) -> Option<Frame<Bytes>> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }
}

/// Why a body stopped.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("a wasm plugin failed while filtering the body (FAIL_CLOSE)")]
    PluginFailed,
    #[error("a wasm plugin buffered more than {BUFFER_LIMIT} bytes of the body")]
    TooLarge,
}

impl FilteredBody {
    pub(super) fn new(inner: Body, chain: Rc<Chain>, response: bool) -> FilteredBody {
        let len = chain.body_len(response);
        let announced = inner.size_hint();
        FilteredBody {
            inner,
            chain,
            response,
            len,
            out: Outbox::default(),
            waiting: None,
            inner_done: false,
            ended: false,
            whole: false,
            error: None,
            announced,
            first_in: None,
        }
    }

    /// For an inner body polled ahead, before its head went through the plugins: `first` is
    /// what that poll gave, `announced` the size hint it had before.
    pub(super) fn seed(
        mut self,
        first: Option<Option<Result<Frame<Bytes>, BoxError>>>,
        announced: SizeHint,
    ) -> FilteredBody {
        self.first_in = first;
        self.announced = announced;
        self
    }

    /// Goes on from a whole response's run through the lone plugin (`Whole::Body`), stopped
    /// by a body callback (`end`: the end call) with `result`, as [`FilteredBody::run`] goes on
    /// from that result. The inner body has given all it had; `passed` is what the plugin let
    /// through before.
    pub(super) fn after_whole(
        mut self,
        end: bool,
        result: Result<Action, meshgate_wasm::VmFailure>,
        passed: Bytes,
        announced: SizeHint,
    ) -> FilteredBody {
        self.announced = announced;
        self.inner_done = true;
        let e = self.chain.entry_at(true, 0);
        let take = |e: &super::filter::Entry| e.vm().borrow_mut().take_body(e.id(), true);
        let pass = |out: &mut Outbox, chunk: Bytes| {
            if !chunk.is_empty() {
                out.push(Frame::data(chunk));
            }
        };
        match result {
            // Held at the end: until the plugin continues.
            Ok(Action::Pause) if end => {
                pass(&mut self.out, passed);
                self.waiting = Some(0);
            }
            // Held past the limit (the run goes on below it).
            Ok(Action::Pause) => self.error = Some(BodyError::TooLarge.into()),
            Err(f) if self.chain.failed(e, &f).is_some() => {
                self.error = Some(BodyError::PluginFailed.into());
            }
            // Let through, or the plugin failed and is skipped (FAIL_OPEN).
            Ok(Action::Continue) | Err(_) => {
                pass(&mut self.out, passed);
                pass(&mut self.out, take(e));
            }
        }
        self
    }

    /// Polls the body through the plugins here and now, before its head goes on: a body that
    /// has all arrived (most small responses come with their head) passes through every
    /// plugin at once and is handed back whole, so it needs no wrapper and the plugins'
    /// streams can end before the response is written (as Envoy ends them when it encodes the
    /// last frame). `None`: the body is still coming, a plugin holds it, or it has trailers;
    /// then `self` streams the rest, starting with anything polled here.
    pub(super) fn poll_whole(&mut self, cx: &mut Context<'_>) -> Option<Bytes> {
        // The whole body goes on with the size this body would have announced (the inner
        // one's): a body whose end disagrees with it streams on as it is.
        let announced = self.announced.exact();
        let mut data: Option<Bytes> = None;
        let next = loop {
            match Pin::new(&mut *self).poll_frame(cx) {
                Poll::Ready(None) => {
                    let data = data.unwrap_or_default();
                    if announced == Some(data.len() as u64) {
                        return Some(data);
                    }
                    if !data.is_empty() {
                        self.out.push_front(Frame::data(data));
                    }
                    return None;
                }
                Poll::Ready(Some(Ok(frame))) if data.is_none() && frame.is_data() => {
                    data = frame.into_data().ok();
                }
                other => break other,
            }
        };
        match next {
            Poll::Ready(Some(Ok(frame))) => self.out.push_front(frame),
            Poll::Ready(Some(Err(e))) => self.error = Some(e),
            _ => {}
        }
        if let Some(d) = data {
            self.out.push_front(Frame::data(d));
        }
        None
    }

    /// Marks the body as a local reply's (see `whole`).
    pub(super) fn whole(mut self, whole: bool) -> FilteredBody {
        self.whole = whole;
        self
    }

    /// Passes `chunk` through the plugins from position `from`; what comes out the far end is
    /// queued. Stops at a plugin that pauses (at the end of the body: waits for it).
    fn run(&mut self, from: usize, mut chunk: Bytes, end: bool) -> Result<(), BodyError> {
        for pos in from..self.len {
            let e = self.chain.entry_at(self.response, pos);
            if !e.active.get() {
                continue;
            }
            let r = e
                .vm()
                .borrow_mut()
                .on_body(e.id(), self.response, chunk, end);
            self.chain.dispatch(e);
            let take = |response| e.vm().borrow_mut().take_body(e.id(), response);
            match r {
                Ok(Action::Continue) => chunk = take(self.response),
                Ok(Action::Pause) if end => {
                    self.waiting = Some(pos);
                    return Ok(());
                }
                Ok(Action::Pause) => {
                    if e.vm().borrow().buffered(e.id(), self.response) > BUFFER_LIMIT {
                        // The request side's reply is Envoy's 413 (the proxy sees the flag once
                        // the upstream exchange fails); a response whose headers are gone can
                        // only be cut off, as Envoy does.
                        if !self.response {
                            self.chain.set_request_too_large();
                        }
                        return Err(BodyError::TooLarge);
                    }
                    return Ok(());
                }
                Err(f) => {
                    if self.chain.failed(e, &f).is_some() {
                        return Err(BodyError::PluginFailed);
                    }
                    chunk = take(self.response);
                }
            }
        }
        if !chunk.is_empty() {
            self.out.push(Frame::data(chunk));
        }
        Ok(())
    }

    /// Trailers through the plugins (data they still hold goes out first).
    fn trailers(&mut self, mut trailers: http::HeaderMap) -> Result<(), BodyError> {
        for pos in 0..self.len {
            let e = self.chain.entry_at(self.response, pos);
            if !e.active.get() {
                continue;
            }
            let r = {
                let vm_rc = e.vm();
                let mut vm = vm_rc.borrow_mut();
                let held = vm.take_body(e.id(), self.response);
                if !held.is_empty() {
                    self.out.push(Frame::data(held));
                }
                if self.response {
                    vm.on_response_trailers(e.id(), trailers)
                        .map(|_| vm.take_response_trailers(e.id()))
                } else {
                    vm.on_request_trailers(e.id(), trailers)
                        .map(|_| vm.take_request_trailers(e.id()))
                }
            };
            self.chain.dispatch(e);
            match r {
                Ok(Some(t)) => trailers = t,
                Ok(None) => return Err(BodyError::PluginFailed),
                Err(f) => {
                    if self.chain.failed(e, &f).is_some() {
                        return Err(BodyError::PluginFailed);
                    }
                    let vm_rc = e.vm();
                    let mut vm = vm_rc.borrow_mut();
                    let back = if self.response {
                        vm.take_response_trailers(e.id())
                    } else {
                        vm.take_request_trailers(e.id())
                    };
                    trailers = back.ok_or(BodyError::PluginFailed)?;
                }
            }
        }
        self.out.push(Frame::trailers(trailers));
        Ok(())
    }
}

impl HttpBody for FilteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(f) = this.out.pop() {
                return Poll::Ready(Some(Ok(f)));
            }
            if let Some(e) = this.error.take() {
                return Poll::Ready(Some(Err(e)));
            }
            if let Some(pos) = this.waiting {
                let e = this.chain.entry_at(this.response, pos);
                let r = e.vm().borrow_mut().poll_resume(e.id(), this.response, cx);
                let Poll::Ready(r) = r else {
                    return Poll::Pending;
                };
                this.waiting = None;
                let chunk = e.vm().borrow_mut().take_body(e.id(), this.response);
                match r {
                    Resume::Continue => {}
                    Resume::Failed(f) if this.chain.failed(e, &f).is_none() => {}
                    _ => return Poll::Ready(Some(Err(BodyError::PluginFailed.into()))),
                }
                if let Err(err) = this.run(pos + 1, chunk, true) {
                    return Poll::Ready(Some(Err(err.into())));
                }
                continue;
            }
            if this.ended {
                return Poll::Ready(None);
            }
            if this.inner_done {
                this.ended = true;
                if !this.response {
                    this.chain.request_ended();
                }
                continue;
            }
            let polled = match this.first_in.take() {
                Some(first) => Poll::Ready(first),
                None => this.inner.as_mut().poll_frame(cx),
            };
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    let frame = match frame.into_data() {
                        Ok(data) => {
                            // As Envoy's HTTP/1 codec: data goes with end_of_stream false, and
                            // the end of the body comes as an empty call of its own. A body
                            // that ends with this frame ends now: whoever reads a body of known
                            // length may never poll again once it has the last byte. A local
                            // reply's body goes in one call with end_of_stream true, as Envoy
                            // encodes it.
                            let end = this.inner.is_end_stream();
                            this.inner_done = end;
                            let r = if end && this.whole {
                                this.run(0, data, true)
                            } else {
                                this.run(0, data, false).and_then(|()| {
                                    if end {
                                        this.run(0, Bytes::new(), true)
                                    } else {
                                        Ok(())
                                    }
                                })
                            };
                            if let Err(err) = r {
                                return Poll::Ready(Some(Err(err.into())));
                            }
                            continue;
                        }
                        Err(frame) => frame,
                    };
                    if let Ok(t) = frame.into_trailers() {
                        this.inner_done = true;
                        if let Err(err) = this.trailers(t) {
                            return Poll::Ready(Some(Err(err.into())));
                        }
                    }
                }
                Poll::Ready(None) => {
                    this.inner_done = true;
                    if let Err(err) = this.run(0, Bytes::new(), true) {
                        return Poll::Ready(Some(Err(err.into())));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Once the inner body is done and nothing is held or queued, the frame just handed out
        // was the last: HTTP/2 then ends the stream with it instead of sending an empty frame.
        self.out.is_empty()
            && self.error.is_none()
            && self.waiting.is_none()
            && (self.ended || self.inner_done)
    }

    fn size_hint(&self) -> SizeHint {
        self.announced
    }
}
