//! The part of a request or response body a plugin holds: while it holds one chunk unchanged,
//! that chunk as it came (handing it on costs nothing); once chunks are gathered or the plugin
//! rewrites the body, bytes of its own.

use bytes::{Bytes, BytesMut};

/// A body buffer of one stream and direction.
#[derive(Debug)]
pub(crate) enum BodyBuffer {
    /// Nothing, or one chunk as it arrived.
    Chunk(Bytes),
    /// Chunks gathered, or bytes the plugin set.
    Gathered(BytesMut),
}

impl Default for BodyBuffer {
    fn default() -> BodyBuffer {
        BodyBuffer::Chunk(Bytes::new())
    }
}

impl BodyBuffer {
    /// The bytes held.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            BodyBuffer::Chunk(b) => b,
            BodyBuffer::Gathered(m) => m,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Bytes `start..end` of the buffer (shared, not copied, while it is one chunk). The range
    /// must be within the buffer.
    pub(crate) fn range(&self, start: usize, end: usize) -> Bytes {
        match self {
            BodyBuffer::Chunk(b) => b.slice(start..end),
            BodyBuffer::Gathered(m) => Bytes::copy_from_slice(&m[start..end]),
        }
    }

    /// Adds `chunk` at the end.
    pub(crate) fn append(&mut self, chunk: Bytes) {
        match self {
            BodyBuffer::Chunk(b) if b.is_empty() => *b = chunk,
            BodyBuffer::Chunk(b) => {
                let mut m = BytesMut::with_capacity(b.len() + chunk.len());
                m.extend_from_slice(b);
                m.extend_from_slice(&chunk);
                *self = BodyBuffer::Gathered(m);
            }
            BodyBuffer::Gathered(m) => m.extend_from_slice(&chunk),
        }
    }

    /// Replaces the bytes held.
    pub(crate) fn set(&mut self, bytes: BytesMut) {
        *self = BodyBuffer::Gathered(bytes);
    }

    /// Everything held, leaving the buffer empty.
    pub(crate) fn take(&mut self) -> Bytes {
        match std::mem::take(self) {
            BodyBuffer::Chunk(b) => b,
            BodyBuffer::Gathered(m) => m.freeze(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_chunk_passes_through_uncopied_and_more_are_gathered_in_order() {
        let mut b = BodyBuffer::default();
        assert_eq!(b.len(), 0);
        let chunk = Bytes::from_static(b"hello ");
        b.append(chunk.clone());
        assert_eq!(
            b.bytes().as_ptr(),
            chunk.as_ptr(),
            "the chunk is held as it came"
        );
        assert_eq!(&b.range(1, 3)[..], b"el");
        b.append(Bytes::from_static(b"world"));
        assert_eq!(b.bytes(), b"hello world");
        assert_eq!(&b.range(6, 11)[..], b"world");
        assert_eq!(&b.take()[..], b"hello world");
        assert_eq!(b.len(), 0);
        b.append(Bytes::from_static(b"again"));
        b.set(BytesMut::from(&b"set"[..]));
        assert_eq!(&b.take()[..], b"set");
    }
}
