//! The body type every proxied request and response carries, and small builders.
//!
//! One boxed body type keeps signatures simple. It is deliberately not `Send`: bodies live on
//! the worker that accepted the connection (pooled-connection bookkeeping is `Rc`-based), and
//! they are streamed frame by frame, never collected here.

use std::pin::Pin;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

/// Any error a body can produce.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The proxy's body type.
pub type Body = Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError>>>;

/// An empty body.
pub fn empty() -> Body {
    Box::pin(Empty::<Bytes>::new().map_err(|e| match e {}))
}

/// A body with fixed content.
pub fn full(b: impl Into<Bytes>) -> Body {
    Box::pin(Full::new(b.into()).map_err(|e| match e {}))
}

/// Boxes any body whose error converts to [`BoxError`].
pub fn boxed<B>(b: B) -> Body
where
    B: http_body::Body<Data = Bytes> + 'static,
    B::Error: Into<BoxError>,
{
    Box::pin(b.map_err(Into::into))
}

/// What a [`Watched`] body reports to: every frame as it passes, and the end, once.
pub trait Watch {
    /// A frame went by.
    fn frame(&mut self, _frame: &http_body::Frame<Bytes>) {}
    /// The body is over: `complete` when it reached its end, false when it failed or was
    /// dropped before.
    fn end(&mut self, _complete: bool) {}
}

/// A body passed through unchanged while a [`Watch`] sees its frames and its end (counting
/// bytes, copying to mirrors, returning a connection to its pool, writing a log line).
pub struct Watched<B, W: Watch> {
    inner: B,
    watch: W,
    ended: bool,
}

impl<B, W: Watch> Watched<B, W> {
    /// Wraps `inner`.
    pub fn new(inner: B, watch: W) -> Self {
        Watched {
            inner,
            watch,
            ended: false,
        }
    }

    fn finish(&mut self, complete: bool) {
        if !self.ended {
            self.ended = true;
            self.watch.end(complete);
        }
    }
}

impl<B, W> http_body::Body for Watched<B, W>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    W: Watch + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(false);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(f))) => {
                this.watch.frame(&f);
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
                Poll::Ready(Some(Ok(f)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B, W: Watch> Drop for Watched<B, W> {
    fn drop(&mut self) {
        self.finish(false);
    }
}
