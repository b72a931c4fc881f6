//! The response body: whole, generated padding with a known length, or paced frames (chunked).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// Size of one frame of generated padding.
const FILL_CHUNK: usize = 64 * 1024;
static FILL_X: [u8; FILL_CHUNK] = [b'x'; FILL_CHUNK];

/// A response body. Whole and padded bodies have an exact size (sent with `Content-Length`);
/// paced bodies do not (sent with chunked encoding, one chunk per frame).
#[derive(Debug)]
pub(crate) struct MockBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    /// `head`, then `fill` bytes of `x`, then `tail`.
    Pad {
        head: Option<Bytes>,
        fill: usize,
        tail: Option<Bytes>,
    },
    /// One frame at a time; between two frames either a sleep of `interval` or, without one, a
    /// single `Pending` (so that the connection flushes each frame on its own).
    Paced {
        frames: VecDeque<Bytes>,
        interval: Option<Duration>,
        wait: Wait,
    },
}

#[derive(Debug)]
enum Wait {
    Nothing,
    Yield,
    Sleep(Pin<Box<Sleep>>),
}

impl MockBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Full(Some(bytes.into())),
        }
    }

    /// `head`, `fill` bytes of `x`, `tail`, generated as it is sent.
    pub(crate) fn padded(head: &'static [u8], fill: usize, tail: &'static [u8]) -> Self {
        Self {
            kind: Kind::Pad {
                head: Some(Bytes::from_static(head)),
                fill,
                tail: Some(Bytes::from_static(tail)),
            },
        }
    }

    /// The frames one after another, `interval` apart (or just flushed separately if `None`).
    pub(crate) fn paced(frames: Vec<Bytes>, interval: Option<Duration>) -> Self {
        Self {
            kind: Kind::Paced {
                frames: frames.into_iter().filter(|f| !f.is_empty()).collect(),
                interval: interval.filter(|d| !d.is_zero()),
                wait: Wait::Nothing,
            },
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let data = |b: Bytes| Poll::Ready(Some(Ok(Frame::data(b))));
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => match bytes.take() {
                Some(b) if !b.is_empty() => data(b),
                _ => Poll::Ready(None),
            },
            Kind::Pad { head, fill, tail } => {
                if let Some(b) = head.take() {
                    return data(b);
                }
                if *fill > 0 {
                    let n = (*fill).min(FILL_CHUNK);
                    *fill -= n;
                    return data(Bytes::from_static(&FILL_X[..n]));
                }
                match tail.take() {
                    Some(b) => data(b),
                    None => Poll::Ready(None),
                }
            }
            Kind::Paced {
                frames,
                interval,
                wait,
            } => {
                match std::mem::replace(wait, Wait::Nothing) {
                    Wait::Nothing => {}
                    Wait::Yield => {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Wait::Sleep(mut sleep) => {
                        if sleep.as_mut().poll(cx).is_pending() {
                            *wait = Wait::Sleep(sleep);
                            return Poll::Pending;
                        }
                    }
                }
                let Some(frame) = frames.pop_front() else {
                    return Poll::Ready(None);
                };
                if !frames.is_empty() {
                    *wait = match interval {
                        Some(d) => Wait::Sleep(Box::pin(tokio::time::sleep(*d))),
                        None => Wait::Yield,
                    };
                }
                data(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Kind::Pad { head, fill, tail } => head.is_none() && *fill == 0 && tail.is_none(),
            Kind::Paced { frames, .. } => frames.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Pad { head, fill, tail } => {
                let part = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
                let len = part(head) + *fill + part(tail);
                SizeHint::with_exact(u64::try_from(len).unwrap_or(u64::MAX))
            }
            Kind::Paced { .. } => SizeHint::default(),
        }
    }
}
