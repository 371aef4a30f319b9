//! Frames on the wire: a 4-byte big-endian length, then one JSON [`Message`].
//!
//! tokio-util's `LengthDelimitedCodec` does the framing and refuses lengths above
//! [`MAX_FRAME_BYTES`] before buffering them, so a hostile length prefix (2 GiB) costs nothing.
//! The seed sent replies unframed and read them with one 1,024-byte receive; every message
//! here, requests and replies alike, is framed.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use super::wire::{MAX_FRAME_BYTES, Message};

/// Bytes of the length prefix, counted in the byte counters.
const HEADER_BYTES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed frame: {0}")]
    Json(#[from] serde_json::Error),
    /// A frame over [`MAX_FRAME_BYTES`], received (its length prefix) or about to be sent.
    #[error("frame of {size} bytes is over the cap of {cap} bytes")]
    TooBig {
        /// The frame's size.
        size: usize,
        /// The cap.
        cap: usize,
    },
}

/// Decodes `(message, bytes on the wire)`; encodes messages.
#[derive(Debug)]
pub struct MessageCodec {
    frames: LengthDelimitedCodec,
    /// The inner codec has read a frame's length and waits for its body: the bytes at
    /// the front of the buffer are body, not a length to check.
    in_body: bool,
}

impl Default for MessageCodec {
    fn default() -> Self {
        MessageCodec {
            frames: LengthDelimitedCodec::builder()
                .max_frame_length(MAX_FRAME_BYTES)
                .new_codec(),
            in_body: false,
        }
    }
}

impl Decoder for MessageCodec {
    type Item = (Message, usize);
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        // Read the length first, to say how big a refused frame was (the inner codec's
        // error does not); nothing of it is buffered.
        let head = if self.in_body {
            None
        } else {
            src.get(..HEADER_BYTES)
        };
        if let Some(head) = head {
            let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if size > MAX_FRAME_BYTES {
                return Err(CodecError::TooBig {
                    size,
                    cap: MAX_FRAME_BYTES,
                });
            }
        }
        // With a whole header in the buffer, the inner codec consumes it and, without the
        // whole body, waits for the rest.
        let had_head = head.is_some();
        match self.frames.decode(src)? {
            None => {
                self.in_body |= had_head;
                Ok(None)
            }
            Some(frame) => {
                self.in_body = false;
                let msg = serde_json::from_slice(&frame)?;
                Ok(Some((msg, frame.len() + HEADER_BYTES)))
            }
        }
    }
}

impl Encoder<Message> for MessageCodec {
    type Error = CodecError;

    fn encode(&mut self, msg: Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        let json = serde_json::to_vec(&msg)?;
        if json.len() > MAX_FRAME_BYTES {
            return Err(CodecError::TooBig {
                size: json.len(),
                cap: MAX_FRAME_BYTES,
            });
        }
        self.frames.encode(Bytes::from(json), dst)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut codec = MessageCodec::default();
        let mut buf = BytesMut::new();
        codec
            .encode(Message::Ping { nonce: 7 }, &mut buf)
            .expect("encode");
        let len = buf.len();
        let (msg, bytes) = codec.decode(&mut buf).expect("decode").expect("a frame");
        assert_eq!(msg, Message::Ping { nonce: 7 });
        assert_eq!(bytes, len);
    }

    #[test]
    fn refuses_a_huge_length_prefix_without_buffering() {
        let mut codec = MessageCodec::default();
        let mut buf = BytesMut::from(&[0x80u8, 0, 0, 0][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::TooBig {
                size: 0x8000_0000,
                cap: MAX_FRAME_BYTES
            })
        ));
    }

    #[test]
    fn refuses_to_send_a_frame_over_the_cap_and_says_how_big() {
        let mut codec = MessageCodec::default();
        let mut buf = BytesMut::new();
        let huge = Message::disconnect(&"x".repeat(MAX_FRAME_BYTES));
        match codec.encode(huge, &mut buf) {
            Err(CodecError::TooBig { size, cap }) => {
                assert!(size > cap);
                assert_eq!(cap, MAX_FRAME_BYTES);
            }
            other => panic!("expected TooBig, got {other:?}"),
        }
        assert!(buf.is_empty(), "nothing of it was written");
    }

    #[test]
    fn a_frame_split_across_reads_is_not_mistaken_for_a_huge_one() {
        let mut codec = MessageCodec::default();
        let mut whole = BytesMut::new();
        codec
            .encode(Message::disconnect("a reason long enough"), &mut whole)
            .expect("encode");
        // The header and a little of the body first; the body's bytes read as a length
        // would be far over the cap.
        let mut buf = whole.split_to(HEADER_BYTES + 4);
        assert!(codec.decode(&mut buf).expect("no error").is_none());
        buf.extend_from_slice(&whole[..3]);
        assert!(codec.decode(&mut buf).expect("no error").is_none());
        buf.extend_from_slice(&whole[3..]);
        let (msg, _) = codec.decode(&mut buf).expect("decode").expect("a frame");
        assert_eq!(msg, Message::disconnect("a reason long enough"));
        // And the next frame's header is checked again.
        let mut next = BytesMut::from(&[0x80u8, 0, 0, 0][..]);
        assert!(matches!(
            codec.decode(&mut next),
            Err(CodecError::TooBig { .. })
        ));
    }

    #[test]
    fn refuses_invalid_json() {
        let mut codec = MessageCodec::default();
        let mut buf = BytesMut::new();
        LengthDelimitedCodec::new()
            .encode(Bytes::from_static(b"{not json"), &mut buf)
            .expect("encode");
        assert!(matches!(codec.decode(&mut buf), Err(CodecError::Json(_))));
    }
}
