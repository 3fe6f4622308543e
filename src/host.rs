//! What the engine does on a node's host, as one interface: run a command, read, write and
//! remove a file. The transport (local shell or SSH, with `become`) is the real one; engine tests
//! give the engine an in-memory host instead, so a roll can be driven without a machine.

use crate::transport::{CommandOutcome, Transport, TransportError};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

/// A host's answer, some time later. Boxed so that hosts can be chosen at run time (`dyn Host`).
pub type HostFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, TransportError>> + Send + 'a>>;

/// The side effects the engine has on a node's host. Every write is atomic and verified, keeps
/// the file's mode and owner (a new file gets `mode_if_new`), and never follows a link it did
/// not expect (docs/security.md); a host that cannot promise that is not a `Host`.
pub trait Host: Send + Sync {
    /// Where commands run, for messages (`local`, `ssh mim@db1`).
    fn describe(&self) -> String;

    /// Two hosts with the same context run a command the same way (the same `erl` on PATH): a
    /// key for work done once per host. Kept in memory only: it may hold the plan's `env`.
    fn command_context(&self) -> String;

    /// Run a shell command with the node's environment; the outcome, whatever its exit status.
    fn run<'a>(&'a self, command: &'a str, timeout: Duration) -> HostFuture<'a, CommandOutcome>;

    /// Run a script with `input` on stdin; its stdout as raw bytes (a failure is an error).
    fn run_for_bytes<'a>(
        &'a self,
        script: &'a str,
        input: &'a [u8],
        timeout: Duration,
    ) -> HostFuture<'a, Vec<u8>>;

    /// A regular file's bytes, exactly as stored.
    fn read_file<'a>(&'a self, path: &'a Path) -> HostFuture<'a, Vec<u8>>;

    /// Whether the path names something.
    fn try_exists<'a>(&'a self, path: &'a Path) -> HostFuture<'a, bool>;

    fn write_file<'a>(
        &'a self,
        path: &'a Path,
        bytes: &'a [u8],
        mode_if_new: u32,
    ) -> HostFuture<'a, ()>;

    /// Write a file owned like `like` (the flags file), with `mode`.
    fn write_file_owned_like<'a>(
        &'a self,
        path: &'a Path,
        bytes: &'a [u8],
        mode: u32,
        like: &'a Path,
    ) -> HostFuture<'a, ()>;

    fn remove_file<'a>(&'a self, path: &'a Path) -> HostFuture<'a, ()>;

    /// Create a directory with `mode` (an existing one is kept); whether it was created.
    fn make_dir<'a>(&'a self, path: &'a Path, mode: u32) -> HostFuture<'a, bool>;

    fn remove_dir_if_empty<'a>(&'a self, path: &'a Path) -> HostFuture<'a, ()>;
}

impl Host for Transport {
    fn describe(&self) -> String {
        Transport::describe(self)
    }

    fn command_context(&self) -> String {
        Transport::command_context(self)
    }

    fn run_for_bytes<'a>(
        &'a self,
        script: &'a str,
        input: &'a [u8],
        timeout: Duration,
    ) -> HostFuture<'a, Vec<u8>> {
        Box::pin(Transport::run_for_bytes(self, script, input, timeout))
    }

    fn run<'a>(&'a self, command: &'a str, timeout: Duration) -> HostFuture<'a, CommandOutcome> {
        Box::pin(Transport::run(self, command, timeout))
    }

    fn read_file<'a>(&'a self, path: &'a Path) -> HostFuture<'a, Vec<u8>> {
        Box::pin(Transport::read_file(self, path))
    }

    fn try_exists<'a>(&'a self, path: &'a Path) -> HostFuture<'a, bool> {
        Box::pin(Transport::try_exists(self, path))
    }

    fn write_file<'a>(
        &'a self,
        path: &'a Path,
        bytes: &'a [u8],
        mode_if_new: u32,
    ) -> HostFuture<'a, ()> {
        Box::pin(Transport::write_file(self, path, bytes, mode_if_new))
    }

    fn write_file_owned_like<'a>(
        &'a self,
        path: &'a Path,
        bytes: &'a [u8],
        mode: u32,
        like: &'a Path,
    ) -> HostFuture<'a, ()> {
        Box::pin(Transport::write_file_owned_like(
            self, path, bytes, mode, like,
        ))
    }

    fn remove_file<'a>(&'a self, path: &'a Path) -> HostFuture<'a, ()> {
        Box::pin(Transport::remove_file(self, path))
    }

    fn make_dir<'a>(&'a self, path: &'a Path, mode: u32) -> HostFuture<'a, bool> {
        Box::pin(Transport::make_dir(self, path, mode))
    }

    fn remove_dir_if_empty<'a>(&'a self, path: &'a Path) -> HostFuture<'a, ()> {
        Box::pin(Transport::remove_dir_if_empty(self, path))
    }
}
