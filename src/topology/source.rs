//! Reading a topology file with a bound, so that validating a file never hangs and never
//! holds more than [`MAX_FILE_BYTES`] in memory, whatever the path names.
//!
//! Only regular files are read: a FIFO would block the open (and then the read) until
//! some writer shows up, and a device such as `/dev/zero` never ends. The file is opened
//! non-blocking (which changes nothing for a regular file but keeps `open` of a FIFO from
//! waiting for a writer), its type is checked on the open descriptor (no window between
//! check and read), and at most `MAX_FILE_BYTES + 1` bytes are read even if the file grows
//! while it is read.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Largest topology file accepted: 1 MiB. The largest shipped topology is a few
/// kilobytes; a file holding [`super::MAX_NODES`] nodes is still a handful of group entries
/// (nodes are counted, not listed), and a long scenario of thousands of steps fits too.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The file's text, or why it cannot be used (a sentence saying what to do).
pub(crate) fn read_bounded(path: &Path) -> Result<String, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            format!(
                "cannot read the topology file: {e}; check the path (examples are in topologies/)"
            )
        })?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the topology file: {e}"))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(format!(
            "is {what}, not a regular file; expected a topology file (pipes and devices are refused so that reading cannot hang or run without end; save the topology to a file first)"
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(meta.len()));
    }
    read_at_most(file)
}

fn read_at_most(file: File) -> Result<String, String> {
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the topology file: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        // The file grew after it was measured.
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "is not UTF-8 text (invalid byte at offset {}); expected a YAML topology file",
            e.utf8_error().valid_up_to()
        )
    })
}

pub(crate) fn too_large(len: u64) -> String {
    format!(
        "the file has {len} bytes or more, over the limit of {MAX_FILE_BYTES} bytes (1 MiB) for a topology file; a topology names groups and counts their nodes, so even the largest fits in a few kilobytes: check that this is the right file"
    )
}
