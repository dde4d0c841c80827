//! A request body that can be sent again: the first attempt streams it to the upstream while
//! a copy of what went by is kept (up to a limit), so a retry replays the copy and then goes on
//! with whatever the client has not sent yet. Past the limit the copy is dropped and the request
//! can no longer be retried, as in Envoy.
//!
//! Lives on one worker (`Rc`); only the newest attempt's body may read: an older one, still
//! held by a connection being torn down, ends with an error instead of stealing frames.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};

/// Istio's per-connection buffer limit on gateway listeners, which bounds what Envoy keeps of a
/// request body for retries.
pub const RETRY_BUFFER_LIMIT: usize = 32 * 1024;

struct Shared {
    /// The client's body; `None` once it has ended.
    source: Option<Body>,
    /// Data frames read so far (empty once `overflowed`).
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    buffered: usize,
    limit: usize,
    /// The copy outgrew the limit (or the client's body failed): no more attempts.
    overflowed: bool,
    /// The attempt whose body may read.
    current: u32,
}

/// Creates attempt bodies over one client body.
#[derive(Clone)]
pub struct Replay(Rc<RefCell<Shared>>);

impl Replay {
    /// Wraps `body`, keeping up to `limit` bytes for retries.
    pub fn new(body: Body, limit: usize) -> Replay {
        Replay(Rc::new(RefCell::new(Shared {
            source: Some(body),
            chunks: Vec::new(),
            trailers: None,
            buffered: 0,
            limit,
            overflowed: false,
            current: 0,
        })))
    }

    /// The body for the next attempt, or `None` when the body can no longer be replayed.
    pub fn attempt(&self) -> Option<Body> {
        let mut s = self.0.borrow_mut();
        if s.overflowed {
            return None;
        }
        s.current += 1;
        let id = s.current;
        drop(s);
        Some(Box::pin(AttemptBody {
            shared: self.0.clone(),
            id,
            pos: 0,
            trailers_sent: false,
        }))
    }

    /// Can another attempt still be made?
    pub fn replayable(&self) -> bool {
        !self.0.borrow().overflowed
    }
}

struct AttemptBody {
    shared: Rc<RefCell<Shared>>,
    id: u32,
    /// Next buffered chunk to send.
    pos: usize,
    trailers_sent: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("request body superseded by a newer attempt")]
struct Superseded;

impl HttpBody for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut s = this.shared.borrow_mut();
        if s.current != this.id {
            return Poll::Ready(Some(Err(Box::new(Superseded))));
        }
        if this.pos < s.chunks.len() {
            let chunk = s.chunks[this.pos].clone();
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let Some(source) = s.source.as_mut() else {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        };
        match source.as_mut().poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.source = None;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                s.source = None;
                s.overflowed = true;
                s.chunks.clear();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if !s.overflowed {
                        s.buffered += data.len();
                        if s.buffered > s.limit {
                            s.overflowed = true;
                            s.chunks = Vec::new();
                        } else {
                            s.chunks.push(data.clone());
                        }
                    }
                    this.pos = s.chunks.len();
                } else if let Some(t) = frame.trailers_ref() {
                    s.trailers = Some(t.clone());
                    s.source = None;
                    this.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = self.shared.borrow();
        s.current == self.id
            && self.pos >= s.chunks.len()
            && match &s.source {
                Some(src) => src.is_end_stream(),
                None => self.trailers_sent || s.trailers.is_none(),
            }
    }

    fn size_hint(&self) -> SizeHint {
        let s = self.shared.borrow();
        let pending: u64 = s
            .chunks
            .get(self.pos..)
            .unwrap_or_default()
            .iter()
            .map(|c| c.len() as u64)
            .sum();
        match &s.source {
            None => SizeHint::with_exact(pending),
            Some(src) => {
                let h = src.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + pending);
                if let Some(u) = h.upper() {
                    out.set_upper(u + pending);
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A client body made of these frames, delivered one per poll.
    struct Frames(std::vec::IntoIter<Frame<Bytes>>);

    impl HttpBody for Frames {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.next().map(Ok))
        }
    }

    fn source(chunks: &[&'static str], trailers: bool) -> Body {
        let mut frames: Vec<Frame<Bytes>> = chunks
            .iter()
            .map(|c| Frame::data(Bytes::from_static(c.as_bytes())))
            .collect();
        if trailers {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", http::HeaderValue::from_static("0"));
            frames.push(Frame::trailers(t));
        }
        Box::pin(Frames(frames.into_iter()))
    }

    async fn collect(b: Body) -> Result<(Vec<u8>, bool), BoxError> {
        let c = b.collect().await?;
        let trailers = c.trailers().is_some();
        Ok((c.to_bytes().to_vec(), trailers))
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_retry_replays_what_was_sent_and_the_rest() {
        rt().block_on(async {
            let r = Replay::new(source(&["ab", "cd", "ef"], true), 100);
            let mut first = r.attempt().expect("first");
            // The first attempt reads only one frame before failing.
            let f = first.frame().await.expect("frame").expect("ok");
            assert_eq!(f.data_ref().map(|d| &d[..]), Some(&b"ab"[..]));
            let second = r.attempt().expect("second");
            assert!(first.frame().await.expect("frame").is_err(), "superseded");
            let (bytes, trailers) = collect(second).await.expect("second body");
            assert_eq!(bytes, b"abcdef");
            assert!(trailers);
            let (bytes, trailers) = collect(r.attempt().expect("third")).await.expect("third");
            assert_eq!(bytes, b"abcdef");
            assert!(trailers);
        });
    }

    #[test]
    fn past_the_limit_there_is_no_retry() {
        rt().block_on(async {
            let r = Replay::new(source(&["0123456789", "0123456789"], false), 15);
            let (bytes, _) = collect(r.attempt().expect("first")).await.expect("body");
            assert_eq!(bytes.len(), 20, "the first attempt still gets everything");
            assert!(!r.replayable());
            assert!(r.attempt().is_none());
        });
    }
}
