//! `--max-message-size` on guarded request bodies: a gRPC message whose length
//! prefix is above the limit ends the request body with RESOURCE_EXHAUSTED naming
//! the flag, before the message is buffered.
//!
//! The check reads the gRPC framing (a 1-byte compressed flag and a 4-byte
//! big-endian length before each message), not tonic's error text. tonic hands a
//! body error that is a `Status` to the handler's decoder as is, so unary calls
//! answer it and Session sees it on its inbound stream. The services keep tonic's
//! own limit at the same size as a backstop; it never fires first.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::Request;
use http_body::{Frame, SizeHint};
use tonic::{Status, body::Body};

use super::{Answer, Around, Next, rpc_path};
use crate::{error::Error, methods};

/// The largest request message, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct MessageSize(pub usize);

impl Around for MessageSize {
    fn around<S: Next>(&self, request: Request<Body>, mut next: S) -> Answer<S::Error> {
        if !methods::is_guarded(rpc_path(&request)) {
            return Box::pin(next.call(request));
        }
        let max = self.0;
        Box::pin(next.call(request.map(|body| limit_body(body, max))))
    }
}

/// `body`, failing with RESOURCE_EXHAUSTED at the first message above `max` bytes.
pub fn limit_body(body: Body, max: usize) -> Body {
    Body::new(Framed::new(body, max))
}

/// The length of the gRPC message header.
const HEADER: usize = 5;

/// A request body that follows the gRPC framing and fails on an oversize message.
struct Framed {
    inner: Body,
    max: usize,
    header: [u8; HEADER],
    /// Header bytes seen of the next message.
    have: usize,
    /// Bytes of the current message still to come.
    left: usize,
}

impl Framed {
    fn new(inner: Body, max: usize) -> Self {
        Self {
            inner,
            max,
            header: [0; HEADER],
            have: 0,
            left: 0,
        }
    }

    /// Follows the framing through `data`; an error at the first oversize header.
    fn scan(&mut self, mut data: &[u8]) -> Result<(), Error> {
        while !data.is_empty() {
            if self.left > 0 {
                let n = self.left.min(data.len());
                self.left -= n;
                data = &data[n..];
                continue;
            }
            let n = (HEADER - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == HEADER {
                self.have = 0;
                let [_, a, b, c, d] = self.header;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if len > self.max {
                    return Err(Error::MessageTooLarge {
                        reason: format!(
                            "request message of {len} bytes is above the limit of {} bytes",
                            self.max
                        ),
                    });
                }
                self.left = len;
            }
        }
        Ok(())
    }
}

impl http_body::Body for Framed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref())
            && let Err(e) = this.scan(data)
        {
            return Poll::Ready(Some(Err(Status::from(e))));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&u32::try_from(len).expect("small").to_be_bytes());
        m.extend(std::iter::repeat_n(7, len));
        m
    }

    #[test]
    fn messages_up_to_the_limit_pass_in_any_chunking() {
        let mut wire = message(10);
        wire.extend(message(0));
        wire.extend(message(10));
        for chunk in [1, 2, 5, 7, wire.len()] {
            let mut framed = Framed::new(Body::empty(), 10);
            for piece in wire.chunks(chunk) {
                framed.scan(piece).expect("within the limit");
            }
            assert_eq!((framed.have, framed.left), (0, 0), "chunk {chunk}");
        }
    }

    #[test]
    fn an_oversize_header_is_resource_exhausted_naming_the_flag() {
        let mut wire = message(3);
        wire.extend(message(11));
        let mut framed = Framed::new(Body::empty(), 10);
        let e = wire
            .chunks(3)
            .find_map(|piece| framed.scan(piece).err())
            .expect("too large");
        let status = Status::from(e);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "--max-message-size reached: request message of 11 bytes is above the limit of 10 bytes"
        );
    }
}
