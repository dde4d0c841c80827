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
