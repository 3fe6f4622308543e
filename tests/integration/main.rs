//! Integration tests: the real `distls` binary against real Erlang nodes in MongooseIM layout.
mod products;
mod sshd;
// Network namespaces as hosts (a bridge, a veth pair and a namespace per host).
mod netns_hosts;
// Hosts that run OTP 27 (Debian trixie) and OTP 29 (Debian sid) from a chroot each.
mod otp_hosts;
mod support;
// The `--json` schema of docs/json.md, shared with the engine tests.
#[path = "../json_schema.rs"]
mod json_schema;
// Proves "no split" (or finds one) from the nodes' sampled links; unit tests on synthetic logs.
mod split_checker;

// Located errors for malformed plans; no cluster needed.
mod plan_errors;
// The bad input corpus under tests/corpus/: refused or handled, no file changed.
mod corpus;
// Every example under plans/ loads.
mod examples;
// The full roll on a real 3-node cluster: migrate, status, rollback, dry-run, lock.
mod migrate;
// No cookie in any output or argv; the run lock on the nodes' hosts; a journal of an earlier cluster.
mod secrets;
// Failure handling: a start that fails once TLS is on rolls the cluster back.
mod failure;
// Preflight: `distls check` on a healthy cluster and one broken copy per defect.
mod preflight;
// `distls rotate`: new certificates on a running TLS cluster, no restart.
mod rotate;
// kill -9 at several steps, then rerun: the roll completes.
#[cfg(feature = "failpoints")]
mod resume;
// The SSH transport against a real sshd on loopback.
mod ssh;
// A service user that owns the node directories attacks every file distls writes (as root).
mod hostile;
// Three network namespaces as three hosts, each with its own sshd and epmd (skipped where
// namespaces are not permitted).
mod netns;
// The same sequence on OTP 27 and 29 hosts (Debian chroots) and on mixed-OTP clusters.
mod otp_matrix;
// `distls rotate` (a CA rollover and its rollback) on the OTP hosts, inside the matrix tests.
mod otp_rotate;
// The ejabberd and RabbitMQ flavors against the real products (Debian packages).
mod flavors;
// The elixir flavor against a real mix release built in the test.
mod elixir;
// The one-restart hybrid module on OTP 25, 27 and 29: per-peer dialing, stock TLS checks, the seal.
mod hybrid_roll;
// The ejabberd and RabbitMQ flavors on the products of Debian trixie (OTP 27) and sid (OTP 29).
mod otp_flavors;
// Zero-split: three rolls through the hybrid module, never split.
mod zero_split;
// The transitional hybrid dist module (plain TCP and TLS on one port) under connect/disconnect stress.
mod hybrid;
// The split checker against the classic roll, which splits the cluster (and with Mnesia, leaves
// restarted nodes starting until the last node switches).
mod split;
